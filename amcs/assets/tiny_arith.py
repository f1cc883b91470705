"""How the bundled tiny models were built: the data sets and settings of recipes/tiny-arith.

The recipe's scripts (train_policy.py, train_prm.py) and the benchmarks that redo their steps
(label_quality.py, prm_comparison.py) read them here, so each is written once:

- the policy's SFT rows (``policy_training_rows``): reference solutions of arithmetic problems
  drawn with POLICY_TRAIN_SEED, none of the held-out set;
- the PRM's data: ``training_problems`` labelled by ``generate_data`` (the recipe's AMCS search,
  or a baseline's preset, sampling at DATA_TEMPERATURE), trained with TRAIN by ``train``;
- its evaluation: ``step_eval_examples`` (STEP_EVAL: tiny-policy solutions of held-out problems;
  DEV_EVAL: of other problems of that kind, to choose a threshold on), ``reported``.

``data_config`` reads the recipe's generate.yaml from a source checkout (RECIPE), where the
scripts that use this module live.
"""

from __future__ import annotations

import json
from pathlib import Path

from amcs.assets import TINY_POLICY, TINY_POLICY_NAME
from amcs.backends.hf import HFBackend
from amcs.domains.arith import HELD_OUT_CONFIG, ArithConfig, generate_problems, held_out_problems
from amcs.grading import Grader
from amcs.prm_data import load_prm_rows
from amcs.problems import arith_problems
from amcs.prompts import plain_prompt
from amcs.recipes import load_recipe
from amcs.scheduler import RunCounters, generate_to_file
from amcs.search import make_config
from amcs.stepeval import exact_step_examples, f1_at, step_report
from amcs.training import PRM_CONFIG_FILE, make_training_config, train_prm

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny-arith"
POLICY_TRAIN_SEED = 1234


def policy_training_rows(n: int) -> list[dict]:
    """The first n SFT rows of the bundled policy ({"prompt", "completion"}: the plain prompt and
    the reference solution) of problems drawn with POLICY_TRAIN_SEED, held-out ones left out."""
    excluded = {p.expression for p in held_out_problems()}
    problems = generate_problems(n + len(excluded), seed=POLICY_TRAIN_SEED, config=ArithConfig())
    rows = [
        {"prompt": plain_prompt(p.question), "completion": p.solution}
        for p in problems
        if p.expression not in excluded
    ]
    return rows[:n]


PRM_BASE_NAME = "amcs/tiny-arith-prm-base"  # the policy trained further by train_base.py

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
    recipe = dict(load_recipe(RECIPE / "generate.yaml")["search"])
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
    config["base_model"] = TINY_POLICY_NAME if Path(base) == TINY_POLICY else PRM_BASE_NAME
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
