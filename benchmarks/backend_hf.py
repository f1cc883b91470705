"""Throughput of the hf backend at 1 and at 32 concurrent callers, on the same seeded requests,
with batch-invariant decoding (the CPU default) and without it, side by side.

    uv run python benchmarks/backend_hf.py [--requests 64] [--concurrency 1,32] [--n 1] [--rounds 2]

Each request asks for n full solutions (temperature 1, seeded) to a held-out arithmetic problem,
so every concurrency level and both modes generate exactly the same tokens (checked). Also
measures the backend's peak: all requests submitted at once into one saturated batch. The modes
run in alternation, --rounds times, and each cell keeps its fastest round, so load from other
processes hits both alike. Prints rollouts/s, tokens/s, the ratio against concurrency 1 and the
ratio batch-invariant / plain; writes benchmarks/results/backend_hf.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from amcs.assets import TINY_POLICY, TINY_POLICY_NAME
from amcs.backends.base import SamplingParams
from amcs.backends.hf import HFBackend
from amcs.domains.arith import ArithConfig, generate_problems
from amcs.prompts import prompt_ids

MODES = {"plain": False, "batch-invariant": True}


async def measure(backend: HFBackend, prompts: list[list[int]], concurrency: int, args):
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, ids: list[int]):
        async with gate:
            params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=i)
            return await backend.sample(ids, args.n, params)

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompts)))
    seconds = time.perf_counter() - start
    rollouts = [r for rs in results for r in rs]
    tokens = sum(r.num_tokens for r in rollouts)
    return {
        "concurrency": concurrency,
        "rollouts": len(rollouts),
        "tokens": tokens,
        "seconds": seconds,
        "rollouts_per_s": len(rollouts) / seconds,
        "tokens_per_s": tokens / seconds,
        "token_ids": [r.token_ids for r in rollouts],
    }


async def run_mode(args, invariant: bool) -> list[dict]:
    size = max(args.concurrency_levels + [args.requests]) * args.n
    backend = HFBackend(args.model, max_batch_size=size, deterministic=invariant)
    problems = generate_problems(args.requests, seed=777, config=ArithConfig(min_ops=4, max_ops=5))
    prompts = [prompt_ids(backend.tokenizer, p.question) for p in problems]
    try:
        await measure(backend, prompts[:4], 4, args)  # warm-up
        return [
            await measure(backend, prompts, c, args)
            for c in args.concurrency_levels + [len(prompts)]
        ]
    finally:
        await backend.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=str(TINY_POLICY))
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--n", type=int, default=1, help="rollouts per request")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/backend_hf.json"))
    args = ap.parse_args()
    args.concurrency_levels = [int(c) for c in args.concurrency.split(",")]

    best: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for mode, invariant in MODES.items():
            rows = asyncio.run(run_mode(args, invariant))
            if mode not in best:
                best[mode] = rows
            else:
                best[mode] = [
                    min(a, b, key=lambda r: r["seconds"])
                    for a, b in zip(best[mode], rows, strict=True)
                ]
    plain, inv = best["plain"], best["batch-invariant"]
    same = all(a["token_ids"] == b["token_ids"] for a, b in zip(plain, inv, strict=True))
    print(f"n = {args.n} rollouts per request; same tokens in both modes: {same}")
    print(f"{'callers':>20} {'mode':>16} {'rollouts/s':>11} {'tokens/s':>10} {'x vs 1':>7}")
    for mode, rows in best.items():
        for r in rows:
            r.pop("token_ids")
            r["speedup_vs_first"] = r["rollouts_per_s"] / rows[0]["rollouts_per_s"]
        rows[-1]["label"] = "peak (all at once)"
        for r in rows:
            label = r.get("label", str(r["concurrency"]))
            print(
                f"{label:>20} {mode:>16} {r['rollouts_per_s']:>11.1f} {r['tokens_per_s']:>10.0f}"
                f" {r['speedup_vs_first']:>7.1f}"
            )
    print("batch-invariant / plain throughput:")
    for a, b in zip(plain, inv, strict=True):
        print(
            f"{a.get('label', str(a['concurrency'])):>20} {b['tokens_per_s'] / a['tokens_per_s']:>6.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = TINY_POLICY_NAME if args.model == str(TINY_POLICY) else args.model
    result = {"model": model, "n": args.n, "same_tokens": same, "runs": best}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
