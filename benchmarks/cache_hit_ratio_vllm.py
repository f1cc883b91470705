"""Prefix-cache hit ratio of an AMCS run against vLLM's real prefix cache.

    tests/servers/prepare_vllm.sh            # once: vLLM's CPU build (~6 min)
    uv run python benchmarks/cache_hit_ratio_vllm.py [--problems arith:40] [--block-size 32 128]

For each KV block size, starts vLLM (CPU) on the bundled tiny policy with
``--enable-prefix-caching --enable-prompt-tokens-details --block-size B``, runs the generate
engine (AMCS, seed 0, as `amcs generate --backend openai`) against it, and prints cached prompt
tokens / prompt tokens over the run, as the run summary does, next to the ceiling at that block
size (what a cache that kept every earlier prefix could have served). vLLM reports per request
how many prompt tokens it served from its prefix cache
(``usage.prompt_tokens_details.cached_tokens``); it caches whole blocks only, and never the
prompt's last token, so a prompt shorter than one block plus one token gets no hit.
Writes benchmarks/results/cache_hit_ratio_vllm.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from amcs.assets import TINY_POLICY, TINY_POLICY_NAME  # noqa: E402
from amcs.backends.http import OpenAICompletionsBackend  # noqa: E402
from amcs.grading import Grader  # noqa: E402
from amcs.problems import load_problems  # noqa: E402
from amcs.scheduler import RunCounters, generate_to_file  # noqa: E402
from amcs.search import make_config  # noqa: E402
from tests.servers import server_env_python, start_vllm  # noqa: E402


class Recorder:
    """The openai backend, keeping each request's prompt length, n and reported cached tokens."""

    def __init__(self, inner: OpenAICompletionsBackend) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.requests: list[tuple[int, int, int]] = []
        self.sent: list[tuple[list[int], list[list[int]]]] = []

    async def sample(self, prompt_ids, n, params):
        rollouts = await self.inner.sample(prompt_ids, n, params)
        self.requests.append((len(prompt_ids), n, rollouts[0].cached_tokens if rollouts else 0))
        self.sent.append((list(prompt_ids), [r.token_ids for r in rollouts]))
        return rollouts

    async def aclose(self) -> None:
        await self.inner.aclose()


def ceiling(requests: list[tuple[int, int, int]], block: int) -> float:
    """The ratio a cache that still held every earlier prefix would reach at this block size:
    whole blocks of each prompt, never its last token."""
    total = sum(n * length for length, n, _ in requests)
    return sum(n * ((length - 1) // block) * block for length, n, _ in requests) / total


def first_copy_ratio(sent: list[tuple[list[int], list[list[int]]]], block: int) -> float:
    """The ratio of a block cache that never evicts, counting the first copy of a request
    separately: it finds only the blocks earlier requests computed (their prompts and generated
    tokens), and the other n - 1 copies find its whole blocks. vLLM reports one figure per request,
    that of the copies, so its ratio is this one's upper side."""
    seen: set[tuple[int, ...]] = set()
    cached = total = 0
    for prompt, outs in sent:
        usable = (len(prompt) - 1) // block
        first = 0
        while first < usable and tuple(prompt[: (first + 1) * block]) in seen:
            first += 1
        cached += first * block + (len(outs) - 1) * usable * block
        total += len(outs) * len(prompt)
        for out in outs:
            full = prompt + out
            seen.update(tuple(full[: j * block]) for j in range(1, len(full) // block + 1))
    return cached / total


async def _generate(url: str, problems: str, method: str) -> tuple[RunCounters, Recorder]:
    backend = Recorder(OpenAICompletionsBackend(url, str(TINY_POLICY)))
    counters = RunCounters()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with Grader(max_workers=2) as grader:
                await generate_to_file(
                    load_problems(problems),
                    backend,
                    grader,
                    make_config(method),
                    Path(tmp) / "d.jsonl",
                    model_name=TINY_POLICY_NAME,
                    seed=0,
                    counters=counters,
                )
    finally:
        await backend.aclose()
    return counters, backend


def run(problems: str, method: str, block_size: int) -> dict:
    t0 = time.monotonic()
    server = start_vllm(block_size=block_size)
    started = time.monotonic() - t0
    try:
        t1 = time.monotonic()
        counters, rec = asyncio.run(_generate(server.url, problems, method))
        seconds = time.monotonic() - t1
    finally:
        server.stop()
    reqs = rec.requests
    return {
        "block_size": block_size,
        "problems": counters.done + counters.failed,
        "failed": counters.failed,
        "requests": len(reqs),
        "rollouts": counters.rollouts,
        "prompt_tokens": counters.prompt_tokens,
        "cached_tokens": counters.cached_tokens,
        "cache_hit_ratio": round(counters.cached_tokens / counters.prompt_tokens, 4),
        "ceiling_at_this_block_size": round(ceiling(reqs, block_size), 4),
        "ceiling_per_token": round(ceiling(reqs, 1), 4),
        "first_copies_counted_apart": round(first_copy_ratio(rec.sent, block_size), 4),
        "mean_prompt_tokens": round(sum(n * x for x, n, _ in reqs) / counters.rollouts, 1),
        "requests_no_longer_than_one_block": round(
            sum(x <= block_size for x, _, _ in reqs) / len(reqs), 4
        ),
        "server_start_seconds": round(started, 1),
        "run_seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", default="arith:40")
    ap.add_argument("--method", default="amcs")
    ap.add_argument("--block-size", type=int, nargs="+", default=[32, 128])
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/cache_hit_ratio_vllm.json"
    )
    args = ap.parse_args()
    if server_env_python() is None:
        sys.exit("no vLLM CPU environment: run tests/servers/prepare_vllm.sh first")
    rows = []
    for bs in args.block_size:
        row = run(args.problems, args.method, bs)
        rows.append(row)
        print(
            f"{args.method} on {row['problems']} problems, block size {bs}: cache hit ratio "
            f"{row['cache_hit_ratio']:.3f} ({row['cached_tokens']:,} of {row['prompt_tokens']:,} "
            f"prompt tokens; {row['ceiling_at_this_block_size']:.3f} if every earlier prefix "
            f"were still cached, {row['first_copies_counted_apart']:.3f} counting each "
            f"request's first copy apart; mean prompt {row['mean_prompt_tokens']} tokens; "
            f"server start {row['server_start_seconds']} s, run {row['run_seconds']} s)",
            flush=True,
        )
    args.out.write_text(
        json.dumps({"problems": args.problems, "method": args.method, "runs": rows}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
