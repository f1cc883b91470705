"""Prefix-cache hit ratio of an AMCS run through the sglang-http backend.

    uv run python benchmarks/cache_hit_ratio.py [--problems arith:40]

Runs `amcs generate --backend sglang-http` against the loopback test server (tiny policy; it
reports cached_tokens the way a radix cache would, counting prompts and generated tokens) and
prints cached prompt tokens / prompt tokens over the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from amcs.records import meta_path_for, read_meta
from amcs.testing import LoopbackServer
from cli.main import app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", default="arith:40")
    ap.add_argument("--method", default="amcs")
    args = ap.parse_args()
    with LoopbackServer() as server, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "d.jsonl"
        result = CliRunner().invoke(
            app,
            [
                "generate",
                "--backend",
                "sglang-http",
                "--url",
                server.url,
                "--problems",
                args.problems,
                "--method",
                args.method,
                "--out",
                str(out),
                "-q",
            ],
        )
        if result.exit_code != 0:
            sys.exit(result.output)
        meta = read_meta(meta_path_for(out))
    cached = sum(m["stats"]["cached_tokens"] for m in meta)
    prompt = sum(m["stats"]["prompt_tokens"] for m in meta)
    print(
        f"{args.method} on {len(meta)} problems: cache hit ratio {cached / prompt:.3f} "
        f"({cached:,} of {prompt:,} prompt tokens)"
    )


if __name__ == "__main__":
    main()
