"""Build the bundled tiny PRM: AMCS data from the tiny policy, a base that knows arithmetic better
than the policy, then a PRM trained on the data over that base.

    uv run python recipes/tiny-arith/train_prm.py --out amcs/assets/tiny-arith-prm

1. Data: `amcs generate`'s AMCS search (recipes/tiny-arith/generate.yaml's settings, sampling at
   temperature DATA_TEMPERATURE) on DATA_PROBLEMS arithmetic problems, none of them in the
   held-out set. The data file is resumable: rerunning continues it. The data sets and settings are
   in amcs.assets.tiny_arith, which the benchmarks read too.
2. Base (recipes/tiny-arith/train_base.py): the policy, trained further on reference solutions
   and packs of equations until it computes results the policy gets wrong. Why: a PRM reading
   the policy's own probabilities cannot see a mistake the policy makes confidently, and those
   are the mistakes majority voting cannot fix either (with the policy as base, best-of-16 stayed
   below majority@16). Kept in WORK/base and reused on a rerun.
3. Training (`amcs train --base WORK/base` with `policy_features` and `class_balance`, the
   settings in TRAIN): the base stays frozen and reads each step of the sequence the policy
   wrote; a small head learns from the AMCS labels which of its token-probability features and
   hidden state mark a wrong step. Why a frozen base and a head: every PRM that had to learn to
   read surprise itself (fine-tuned policy, frozen policy + new layers) stayed at F1 0.46-0.64
   on the held-out set, while an LM's own lowest token probability in a step finds first errors
   with F1 0.86 untrained.
4. Evaluation: ProcessBench's step-level F1 on tiny-policy solutions of held-out problems,
   labelled by the exact checker (`amcs eval steps` computes the same), at the default threshold
   0.5 and at the threshold that is best on DEV solutions (other problems of the same kind), and
   the training-free baselines beside it (`--prm policy-confidence`: the policy's lowest token
   probability per step; the same read from the base); written to
   benchmarks/results/tiny_prm.json.

Set OMP_WAIT_POLICY=PASSIVE when other processes share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from train_base import train_base  # a sibling script: its folder is on the path when run

from amcs.assets.tiny_arith import (
    DATA_PROBLEMS,
    DATA_TEMPERATURE,
    DEV_EVAL,
    STEP_EVAL,
    TRAIN,
    generate_data,
    reported,
    step_eval_examples,
    train,
    training_problems,
)
from amcs.prm import POLICY_CONFIDENCE, load_policy_confidence, load_scorer

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "amcs" / "assets" / "tiny-arith-prm")
    ap.add_argument("--work", type=Path, default=Path("tiny-prm-work"))
    ap.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results" / "tiny_prm.json"
    )
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    start = time.monotonic()
    data = args.work / "amcs-data.jsonl"
    counters = asyncio.run(generate_data(data, training_problems()))
    data_seconds = time.monotonic() - start
    print(
        f"data: {counters.done} problems labelled now ({counters.skipped} already), "
        f"{counters.tokens:,} tokens, {data_seconds:.0f} s",
        file=sys.stderr,
    )

    base, base_record = args.work / "base", "train_base.json"
    if (base / base_record).exists():
        base_metrics = json.loads((base / base_record).read_text()) | {"reused": True}
    else:
        staging_base = args.work / "base.partial"
        base_metrics = train_base(staging_base)
        (staging_base / base_record).write_text(json.dumps(base_metrics) + "\n")
        if base.exists():
            shutil.rmtree(base)
        staging_base.rename(base)  # only a finished base is ever reused
    print(f"base: {base_metrics}", file=sys.stderr)

    start = time.monotonic()
    staging = args.work / "prm"
    metrics = train([data], staging, args.work, base=base)
    train_seconds = time.monotonic() - start
    print(f"trained in {train_seconds:.0f} s: {metrics}", file=sys.stderr)

    examples = asyncio.run(step_eval_examples())
    dev_examples = asyncio.run(step_eval_examples(dev=True))
    results = {}
    scorers = (
        ("prm", load_scorer(str(staging))),
        ("policy_confidence", load_scorer(POLICY_CONFIDENCE)),
        ("base_confidence", load_policy_confidence(base)),
    )
    for name, scorer in scorers:
        results[name] = reported(scorer, examples, dev_examples)
        at, dev_t = results[name]["at_default"], results[name]["at_dev_threshold"]
        print(
            f"{name}: step-level F1 {at['f1']:.3f} at 0.5 (a1 {at['a1_erroneous']:.3f}, a2 "
            f"{at['a2_correct']:.3f}); {dev_t['f1']:.3f} at {dev_t['threshold']} (chosen on dev)",
            file=sys.stderr,
        )
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(staging, args.out)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "data": {
                    "problems": DATA_PROBLEMS,
                    "temperature": DATA_TEMPERATURE,
                    "paths": metrics["n_rows"],
                    # This run's share: a rerun labels only what the data file lacks.
                    "labelled_now": counters.done,
                    "already_labelled": counters.skipped,
                    "tokens_now": counters.tokens,
                    "seconds": round(data_seconds, 1),
                },
                "base": base_metrics,
                "train": TRAIN,
                "train_metrics": metrics | {"seconds": round(train_seconds, 1)},
                "step_eval": STEP_EVAL | {"solutions": len(examples)},
                "dev_eval": DEV_EVAL | {"solutions": len(dev_examples)},
                "f1": results["prm"],
                "policy_confidence_f1": results["policy_confidence"],
                "base_confidence_f1": results["base_confidence"],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"saved {args.out} and {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
