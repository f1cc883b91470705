"""Build the bundled tiny PRM: AMCS data from the tiny policy, a base that knows arithmetic better
than the policy, then a PRM trained on the data over that base.

    uv run python recipes/tiny-arith/train_prm.py --out amcs/assets/tiny-arith-prm

1. Data: `amcs generate`'s AMCS search (recipes/tiny-arith/generate.yaml's settings, sampling at
   temperature DATA_TEMPERATURE) on DATA_PROBLEMS arithmetic problems, none of them in the
   held-out set. The data file is resumable: rerunning continues it.
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

from amcs.assets import TINY_POLICY, TINY_POLICY_NAME
from amcs.backends.hf import HFBackend
from amcs.domains.arith import HELD_OUT_CONFIG, generate_problems, held_out_problems
from amcs.engine import RunCounters, generate_to_file
from amcs.grading import Grader
from amcs.prm import POLICY_CONFIDENCE, load_policy_confidence, load_scorer
from amcs.prm_data import load_prm_rows
from amcs.problems import arith_problems
from amcs.recipes import load_recipe
from amcs.search import make_config
from amcs.stepeval import exact_step_examples, f1_at, step_report
from amcs.training import PRM_CONFIG_FILE, make_training_config, train_prm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from train_base import train_base  # noqa: E402

BASE_NAME = "amcs/tiny-arith-prm-base"  # the policy trained further by train_base.py

DATA_PROBLEMS = 2000
DATA_SEED = 0
DATA_TEMPERATURE = 1.0
TRAIN = {
    "policy_features": True,
    "class_balance": True,
    "num_train_epochs": 6,
    "learning_rate": 3e-3,
    "per_device_train_batch_size": 32,
    "max_length": 256,
    "eval_fraction": 0.05,
    "seed": 0,
    "labels": "hard",
}
STEP_EVAL = {"problems": 500, "temperature": 1.0, "seed": 0}
# Solutions of other problems of the held-out kind (4-5 operations), to choose a threshold on.
DEV_EVAL = {"problems": 500, "problem_seed": 9191, "temperature": 1.0, "seed": 1}


def training_problems(n: int = DATA_PROBLEMS, seed: int = DATA_SEED):
    """n problems of the default arithmetic mix, minus any expression of the held-out set."""
    excluded = {p.expression for p in held_out_problems()}
    return [p for p in arith_problems(n, seed=seed) if p.meta["expression"] not in excluded]


def data_config(method: str = "amcs", **search):
    """The search config data is labelled with: AMCS with the recipe's settings, a baseline with
    its own preset, both sampling at DATA_TEMPERATURE; then ``search`` overrides."""
    recipe = dict(load_recipe(HERE / "generate.yaml")["search"])
    settings = recipe if method == "amcs" else {"max_new_tokens": recipe["max_new_tokens"]}
    return make_config(method, **(settings | {"temperature": DATA_TEMPERATURE} | search))


async def generate_data(
    out: Path, problems, method: str = "amcs", *, seed: int = DATA_SEED, backend=None, **search
) -> RunCounters:
    """Label `problems` with `method` (:func:`data_config`), search seed `seed`, on `backend`
    (default: the tiny policy, opened and closed here; a caller's backend stays open)."""
    config = data_config(method, **search)
    owned = backend is None
    if owned:
        backend = HFBackend(TINY_POLICY, max_batch_size=128)
    counters = RunCounters()
    try:
        async with Grader(max_workers=1) as grader:
            await generate_to_file(
                problems,
                backend,
                grader,
                config,
                out,
                model_name=TINY_POLICY_NAME,
                seed=seed,
                concurrency=64,
                counters=counters,
            )
    finally:
        if owned:
            await backend.aclose()
    return counters


def train(
    data_files: list[Path], out: Path, work: Path, *, base: Path = TINY_POLICY, **overrides
) -> dict:
    """Train a tiny PRM on amcs data files the recipe's way, on ``base`` (default: the policy);
    returns train_prm's metrics."""
    rows = [row for path in data_files for row in load_prm_rows(path, "amcs")]
    held_out = {p.question for p in held_out_problems()}
    rows = [r for r in rows if r["prompt"] not in held_out]
    metrics = train_prm(rows, str(base), out, make_training_config(TRAIN | overrides))
    # Name the base for readers of amcs_prm.json instead of this install's path.
    config_path = Path(out) / PRM_CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["base_model"] = TINY_POLICY_NAME if Path(base) == TINY_POLICY else BASE_NAME
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return metrics


async def step_eval_examples(dev: bool = False):
    """The 500 held-out solutions F1 is reported on, or (``dev``) 500 solutions of other
    problems of the same kind, to choose a threshold on."""
    if dev:
        excluded = {p.expression for p in held_out_problems()}
        drawn = generate_problems(
            2 * DEV_EVAL["problems"], seed=DEV_EVAL["problem_seed"], config=HELD_OUT_CONFIG
        )
        problems = [p for p in drawn if p.expression not in excluded][: DEV_EVAL["problems"]]
        settings = DEV_EVAL
    else:
        problems, settings = held_out_problems(STEP_EVAL["problems"]), STEP_EVAL
    backend = HFBackend(TINY_POLICY, max_batch_size=128)
    try:
        return await exact_step_examples(
            backend, problems, temperature=settings["temperature"], seed=settings["seed"]
        )
    finally:
        await backend.aclose()


def step_scores(scorer, examples) -> list[list[float]]:
    return scorer.score_batch([(e.problem, e.steps) for e in examples])


def reported(scorer, examples, dev_examples) -> dict:
    """F1 on ``examples`` at 0.5 and at the threshold best on ``dev_examples`` (never chosen on
    the data it is reported on)."""
    dev = step_report(step_scores(scorer, dev_examples), [e.label for e in dev_examples])
    chosen = dev["best_threshold"]["threshold"]
    test_scores = step_scores(scorer, examples)
    labels = [e.label for e in examples]
    report = step_report(test_scores, labels)
    return {
        "at_default": {k: v for k, v in report.items() if k not in ("sweep", "best_threshold")},
        "at_dev_threshold": f1_at(test_scores, labels, chosen),
        "dev_at_default": {k: v for k, v in dev.items() if k not in ("sweep", "best_threshold")},
        "best_on_test_optimistic": report["best_threshold"],
        "sweep": report["sweep"],
    }


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
