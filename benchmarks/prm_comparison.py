"""Downstream comparison: PRMs trained the same way on amcs, omegaprm and shepherd data generated
with the same token budget, each scored by step-level F1 on the same held-out set.

    uv run python benchmarks/prm_comparison.py [--budget 400000] [--work prm-comparison-work]

For each method the tiny policy labels problems (the tiny-arith recipe's settings, the method's
preset) in chunks until the generated tokens reach the budget; the data is then cut to the
longest prefix of problems whose tokens stay within it, so every method trains on data that cost
at most the budget. Each data set trains a PRM exactly as recipes/tiny-arith/train_prm.py does,
and each PRM is scored with ProcessBench's F1 (threshold 0.5, plus the best threshold of a sweep
chosen on the same data) on the same tiny-policy solutions of held-out problems. Writes
benchmarks/results/prm_comparison.{json,md}. Data files are resumable: rerunning continues them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes" / "tiny-arith"))
from train_prm import (  # noqa: E402
    generate_data,
    step_eval_examples,
    step_f1,
    train,
    training_problems,
)

from amcs.records import meta_path_for, read_data, read_meta  # noqa: E402

METHODS = {
    "amcs": {},
    "omegaprm": {"k": 16},
    "shepherd": {"k": 16},
}
CHUNK = 250
POOL = 6000


def within_budget(data_path: Path, budget: int) -> tuple[list[dict], int, int]:
    """Rows of the longest prefix of problems (file order) whose generated tokens fit the
    budget; also the tokens they cost and how many problems that is."""
    spent = 0
    kept: set[str] = set()
    for record in read_meta(meta_path_for(data_path)):
        tokens = int(record.get("stats", {}).get("tokens", 0))
        if spent + tokens > budget:
            break
        spent += tokens
        kept.add(record["problem_id"])
    rows = [row for row in read_data(data_path) if row["problem_id"] in kept]
    return rows, spent, len(kept)


async def generate_until(method: str, out: Path, budget: int) -> None:
    pool = training_problems(POOL)
    done = 0
    while done < len(pool):
        done = min(len(pool), done + CHUNK)
        await generate_data(out, pool[:done], method, **METHODS[method])
        spent = sum(int(r.get("stats", {}).get("tokens", 0)) for r in read_meta(meta_path_for(out)))
        print(f"{method}: {done} problems, {spent:,} tokens", file=sys.stderr)
        if spent >= budget:
            return
    raise SystemExit(f"{method}: the pool of {POOL} problems does not reach {budget:,} tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=400_000, help="generated tokens per method")
    ap.add_argument("--work", type=Path, default=Path("prm-comparison-work"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    examples = asyncio.run(step_eval_examples())
    rows = []
    for method in args.methods.split(","):
        data = args.work / f"{method}.jsonl"
        start = time.monotonic()
        asyncio.run(generate_until(method, data, args.budget))
        train_rows, spent, problems = within_budget(data, args.budget)
        kept = args.work / f"{method}-budget.jsonl"
        kept.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
        metrics = train([kept], args.work / f"prm-{method}", args.work / f"base-{method}")
        report = step_f1(args.work / f"prm-{method}", examples)
        steps = sum(len(r["labels"]) for r in train_rows)
        negatives = sum(not label for r in train_rows for label in r["labels"])
        row = {
            "method": method,
            "settings": METHODS[method],
            "tokens": spent,
            "problems": problems,
            "paths": len(train_rows),
            "labelled_steps": steps,
            "negative_steps": negatives,
            "f1": report["f1"],
            "a1_erroneous": report["a1_erroneous"],
            "a2_correct": report["a2_correct"],
            "best_threshold": report["best_threshold"],
            "held_out_step_accuracy": metrics["eval_step_accuracy"],
            "seconds": round(time.monotonic() - start, 1),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    result = {
        "budget_tokens": args.budget,
        "step_eval": {"solutions": len(examples), "erroneous": sum(e.label >= 0 for e in examples)},
        "results": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "prm_comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"PRMs trained the same way on {args.budget:,}-token data sets; F1 on "
        f"{len(examples)} held-out tiny-policy solutions.",
        "",
        "| data | tokens | problems | paths | steps (-) | F1 @0.5 | a1 | a2 | best F1 (threshold) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        best = r["best_threshold"]
        lines.append(
            f"| {r['method']} | {r['tokens']:,} | {r['problems']:,} | {r['paths']:,} "
            f"| {r['labelled_steps']:,} ({r['negative_steps']:,}) | {r['f1']:.3f} "
            f"| {r['a1_erroneous']:.3f} | {r['a2_correct']:.3f} "
            f"| {best['f1']:.3f} ({best['threshold']}) |"
        )
    (args.results / "prm_comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
