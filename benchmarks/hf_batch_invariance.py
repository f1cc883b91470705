"""What batch-invariant decoding costs `amcs generate`: the same run (default AMCS search, the
bundled tiny policy, arithmetic problems) with the hf backend's plain batching and with
deterministic (formerly batch_invariant), alternating, in one process.

    uv run python benchmarks/hf_batch_invariance.py [--problems 20] [--rounds 2]

Prints wall time, generated tokens (the same in both modes unless a sampled token flips) and
tokens/s per run, and the ratio batch-invariant / plain of each round.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from amcs.backends.hf import HFBackend
from amcs.grading import Grader
from amcs.problems import load_problems
from amcs.scheduler import generate_to_file
from amcs.search import make_config


async def one_run(problems, invariant: bool, out: Path) -> dict:
    backend = HFBackend(max_batch_size=128, deterministic=invariant)
    try:
        async with Grader(max_workers=2) as grader:
            start = time.perf_counter()
            counters = await generate_to_file(
                problems, backend, grader, make_config("amcs"), out, model_name="m", seed=11
            )
            seconds = time.perf_counter() - start
    finally:
        await backend.aclose()
    return {
        "seconds": seconds,
        "tokens": counters.tokens,
        "tokens_per_s": counters.tokens / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    problems = load_problems(f"arith:{args.problems}", seed=11)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            runs = {}
            for invariant in (False, True):
                out = Path(tmp) / f"{r}-{invariant}.jsonl"
                runs[invariant] = asyncio.run(one_run(problems, invariant, out))
                x = runs[invariant]
                print(
                    f"round {r} deterministic={invariant!s:5} {x['seconds']:6.1f} s "
                    f"{x['tokens']} tokens {x['tokens_per_s']:6.0f} tokens/s"
                )
            ratio = runs[True]["tokens_per_s"] / runs[False]["tokens_per_s"]
            print(f"round {r} batch-invariant / plain tokens/s: {ratio:.2f}")


if __name__ == "__main__":
    main()
