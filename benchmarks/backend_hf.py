"""Throughput of the hf backend at 1 and at 32 concurrent callers, on the same seeded requests.

    uv run python benchmarks/backend_hf.py [--requests 64] [--concurrency 1,32]

Each request asks for one full solution (temperature 1, seeded) to a held-out arithmetic problem,
so every concurrency level generates exactly the same tokens. Also measures the backend's peak:
all requests submitted at once into one saturated batch. Prints rollouts/s, tokens/s and the ratio
against concurrency 1; writes benchmarks/results/backend_hf.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from amcs.assets import TINY_POLICY
from amcs.backends.base import SamplingParams
from amcs.backends.hf import HFBackend
from amcs.domains.arith import ArithConfig, generate_problems
from amcs.prompts import prompt_ids


async def measure(backend: HFBackend, prompts: list[list[int]], concurrency: int, max_new: int):
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, ids: list[int]):
        async with gate:
            params = SamplingParams(temperature=1.0, max_new_tokens=max_new, seed=i)
            return await backend.sample(ids, 1, params)

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompts)))
    seconds = time.perf_counter() - start
    tokens = sum(r.num_tokens for rollouts in results for r in rollouts)
    return {
        "concurrency": concurrency,
        "rollouts": len(results),
        "tokens": tokens,
        "seconds": seconds,
        "rollouts_per_s": len(results) / seconds,
        "tokens_per_s": tokens / seconds,
    }


async def main_async(args) -> list[dict]:
    backend = HFBackend(args.model, max_batch_size=max(args.concurrency_levels + [args.requests]))
    problems = generate_problems(args.requests, seed=777, config=ArithConfig(min_ops=4, max_ops=5))
    prompts = [prompt_ids(backend.tokenizer, p.question) for p in problems]
    await measure(backend, prompts[:4], 4, args.max_new_tokens)  # warm-up
    rows = []
    try:
        for c in args.concurrency_levels + [len(prompts)]:
            rows.append(await measure(backend, prompts, c, args.max_new_tokens))
    finally:
        await backend.aclose()
    rows[-1]["label"] = "peak (all at once)"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=str(TINY_POLICY))
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/backend_hf.json"))
    args = ap.parse_args()
    args.concurrency_levels = [int(c) for c in args.concurrency.split(",")]

    rows = asyncio.run(main_async(args))
    base = rows[0]
    print(f"{'callers':>20} {'rollouts/s':>11} {'tokens/s':>10} {'x vs 1':>7}")
    for r in rows:
        ratio = r["rollouts_per_s"] / base["rollouts_per_s"]
        r["speedup_vs_first"] = ratio
        label = r.get("label", str(r["concurrency"]))
        print(f"{label:>20} {r['rollouts_per_s']:>11.1f} {r['tokens_per_s']:>10.0f} {ratio:>7.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = "amcs/tiny-arith-policy" if args.model == str(TINY_POLICY) else args.model
    args.out.write_text(json.dumps({"model": model, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
