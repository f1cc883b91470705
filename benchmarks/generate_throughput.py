"""Throughput of `amcs generate`'s engine with the hf backend and the tiny policy, in one run.

    uv run python benchmarks/generate_throughput.py [--problems 64]

1. The same problems labelled with AMCS at --concurrency 1 and at --concurrency 64: rollouts/s,
   generated tokens/s, and their ratio.
2. Saturation: the engine's tokens/s at concurrency 64 divided by the hf backend's own peak
   tokens/s on a saturated batch of the same prompts (every request submitted at once).
3. Engine overhead: with a backend that returns precomputed rollouts instantly, the rollouts per
   second the engine itself sustains (searches, grading fast path, step splitting, writing).

Writes benchmarks/results/generate_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from backend_hf import measure  # a sibling script: its folder is on the path when run

from amcs.backends.base import Rollout, SamplingParams  # noqa: E402
from amcs.backends.hf import HFBackend  # noqa: E402
from amcs.grading import Grader  # noqa: E402
from amcs.problems import arith_problems  # noqa: E402
from amcs.prompts import prompt_ids  # noqa: E402
from amcs.scheduler import RunCounters, generate_to_file  # noqa: E402
from amcs.search import make_config  # noqa: E402


async def run_engine(backend, problems, concurrency: int, config) -> dict:
    counters = RunCounters()
    with tempfile.TemporaryDirectory() as tmp:
        async with Grader() as grader:
            start = time.perf_counter()
            await generate_to_file(
                problems,
                backend,
                grader,
                config,
                Path(tmp) / "data.jsonl",
                model_name="tiny",
                seed=0,
                concurrency=concurrency,
                counters=counters,
            )
            seconds = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "problems": len(problems),
        "rollouts": counters.rollouts,
        "tokens": counters.tokens,
        "seconds": seconds,
        "rollouts_per_s": counters.rollouts / seconds,
        "tokens_per_s": counters.tokens / seconds,
    }


class InstantBackend:
    """Returns precomputed rollouts at once: what is left to measure is the engine."""

    def __init__(self, tokenizer, pools: dict[tuple[int, ...], list[Rollout]]) -> None:
        self.tokenizer = tokenizer
        self.pools = pools
        # A prompt ends at its first separator token; what follows is the node's prefix.
        self.separator = tokenizer.convert_tokens_to_ids("\n\n")

    async def sample(self, prompt_ids, n, params: SamplingParams):
        await asyncio.sleep(0)
        prompt = tuple(prompt_ids[: prompt_ids.index(self.separator) + 1])
        pool = self.pools[prompt]
        start = (params.seed or 0) % len(pool)
        return [pool[(start + i) % len(pool)] for i in range(n)]

    async def aclose(self):
        pass


async def main_async(args) -> dict:
    config = make_config("amcs", max_new_tokens=args.max_new_tokens)
    problems = arith_problems(args.problems, seed=4242)
    backend = HFBackend(max_batch_size=args.batch_size)
    results: dict = {"config": {"problems": args.problems, "batch_size": args.batch_size}}
    prompts = [prompt_ids(backend.tokenizer, p.question) for p in problems]

    async def peak() -> dict:
        # Every prompt k0 times, all submitted at once: the backend's best case.
        return await measure(
            backend, prompts * config.k0, len(prompts) * config.k0, args.max_new_tokens
        )

    try:
        # The peak is measured before and after the engine runs; the higher one is the baseline.
        before = await peak()
        results["engine"] = [await run_engine(backend, problems, c, config) for c in (1, 64)]
        after = await peak()
        results["backend_peak_runs"] = [before, after]
        results["backend_peak"] = max(before, after, key=lambda r: r["tokens_per_s"])

        # Precomputed rollouts for the overhead run: 24 real rollouts per problem's root.
        pools = {}
        for ids in prompts:
            pools[tuple(ids)] = await backend.sample(
                ids, 24, SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens, seed=1)
            )
    finally:
        await backend.aclose()
    instant = InstantBackend(backend.tokenizer, pools)
    many = arith_problems(args.overhead_problems, seed=4242)
    # Reuse the real problems' rollouts for the larger set.
    tok = backend.tokenizer
    for i, p in enumerate(many):
        source = tuple(prompt_ids(tok, problems[i % len(problems)].question))
        pools.setdefault(tuple(prompt_ids(tok, p.question)), pools[source])
    results["engine_overhead"] = await run_engine(instant, many, 64, config)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--overhead-problems", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/generate_throughput.json"))
    args = ap.parse_args()

    r = asyncio.run(main_async(args))
    c1, c64 = r["engine"]
    peak = r["backend_peak"]
    over = r["engine_overhead"]
    r["ratios"] = {
        "rollouts_per_s_c64_over_c1": c64["rollouts_per_s"] / c1["rollouts_per_s"],
        "tokens_per_s_c64_over_c1": c64["tokens_per_s"] / c1["tokens_per_s"],
        "saturation_c64_tokens_over_backend_peak": c64["tokens_per_s"] / peak["tokens_per_s"],
    }
    print(f"{'run':>28} {'rollouts/s':>11} {'tokens/s':>10} {'seconds':>8}")
    for label, row in (
        ("engine, concurrency 1", c1),
        ("engine, concurrency 64", c64),
        ("backend peak (saturated)", peak),
        ("engine overhead (instant)", over),
    ):
        print(
            f"{label:>28} {row['rollouts_per_s']:>11,.1f} {row['tokens_per_s']:>10,.0f} {row['seconds']:>8.1f}"
        )
    for k, v in r["ratios"].items():
        print(f"{k}: {v:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
