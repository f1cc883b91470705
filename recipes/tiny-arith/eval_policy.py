"""Measure the tiny policy on the held-out set, through the hf backend, with the exact checker.

    uv run python recipes/tiny-arith/eval_policy.py [--model PATH] [--n 500]

Prints greedy accuracy, accuracy at temperature 0.7 (one seeded sample per problem), and where the
first error falls (step index) among wrong solutions, and writes benchmarks/results/tiny_policy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

from amcs.assets import TINY_POLICY
from amcs.backends.base import SamplingParams
from amcs.backends.hf import HFBackend
from amcs.domains.arith import STEP_SEPARATOR, check_steps, held_out_problems
from amcs.prompts import prompt_ids


async def evaluate(model: Path, n: int, temperature: float, seed: int) -> dict:
    backend = HFBackend(model, max_batch_size=128)
    problems = held_out_problems(n)
    params = SamplingParams(temperature=temperature, max_new_tokens=200, seed=seed)

    async def one(problem):
        ids = prompt_ids(backend.tokenizer, problem.question)
        (rollout,) = await backend.sample(ids, 1, params)
        steps = [s for s in rollout.text.split(STEP_SEPARATOR) if s.strip()]
        return problem, check_steps(problem.expression, steps)

    try:
        checks = await asyncio.gather(*(one(p) for p in problems))
    finally:
        await backend.aclose()
    solved = sum(c.solved for _, c in checks)
    first_errors = Counter(c.first_error for _, c in checks if not c.solved)
    n_steps = Counter(len(p.solution_steps) for p, _ in checks)
    return {
        "temperature": temperature,
        "problems": len(checks),
        "accuracy": solved / len(checks),
        "first_error_step_histogram": {str(k): v for k, v in sorted(first_errors.items())},
        "reference_steps_histogram": {str(k): v for k, v in sorted(n_steps.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=TINY_POLICY)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny_policy.json"))
    args = ap.parse_args()

    start = time.perf_counter()
    results = [asyncio.run(evaluate(args.model, args.n, t, args.seed)) for t in (0.0, 0.7)]
    for r in results:
        label = "greedy" if r["temperature"] == 0 else f"T={r['temperature']}"
        print(
            f"{label:>7}: accuracy {r['accuracy']:.1%} on {r['problems']} problems; "
            f"first error at step (0-based): {r['first_error_step_histogram']}"
        )
    print(f"({time.perf_counter() - start:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = "amcs/tiny-arith-policy" if args.model == TINY_POLICY else str(args.model)
    args.out.write_text(json.dumps({"model": model, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
