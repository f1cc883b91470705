"""Build the bundled tiny PRM: AMCS data from the tiny policy, then a PRM trained on it.

    uv run python recipes/tiny-arith/train_prm.py --out amcs/assets/tiny-arith-prm

1. Data: `amcs generate`'s AMCS search (recipes/tiny-arith/generate.yaml's settings, sampling at
   temperature DATA_TEMPERATURE) on DATA_PROBLEMS arithmetic problems, none of them in the
   held-out set. The data file is resumable: rerunning continues it.
2. Base: the tiny policy with FRESH_LAYERS new decoder layers on top whose output projections
   start at zero, so the stack starts out computing exactly what the policy computes.
3. Training (`amcs.training.train_prm`): full fine-tuning with the embeddings and the policy's
   own layers frozen (`freeze_layers`), so the new layers and the head learn to read the
   policy's next-token predictions rather than overwrite them. Why: fine-tuning all of the
   policy reached a step-level F1 of at most 0.55 on the held-out set; keeping the policy's layers
   frozen under fresh ones did better at the same cost (the numbers are in the README).
4. Evaluation: ProcessBench's step-level F1 on tiny-policy solutions of held-out problems,
   labelled by the exact checker (`amcs eval steps` computes the same), written to
   benchmarks/results/tiny_prm.json.

On this 2-core machine the data took 292 s and training 255 s (under 10 minutes with the step
evaluation); set OMP_WAIT_POLICY=PASSIVE when other processes share the cores.
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
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from amcs.assets import TINY_POLICY
from amcs.backends.hf import HFBackend
from amcs.domains.arith import held_out_problems
from amcs.engine import RunCounters, generate_to_file
from amcs.grading import Grader
from amcs.prm import load_prm
from amcs.prm_data import load_prm_rows
from amcs.problems import arith_problems
from amcs.recipes import load_recipe
from amcs.search import make_config
from amcs.stepeval import arith_step_examples, step_report
from amcs.training import PRM_CONFIG_FILE, make_training_config, train_prm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

DATA_PROBLEMS = 2000
DATA_SEED = 0
DATA_TEMPERATURE = 1.0
FRESH_LAYERS = 3
TRAIN = {
    "epochs": 8,
    "lr": 3e-3,
    "batch_size": 16,
    "max_length": 256,
    "eval_fraction": 0.05,
    "seed": 0,
    "labels": "hard",
}
BASE_DESCRIPTION = (
    f"amcs/tiny-arith-policy + {FRESH_LAYERS} fresh layers (policy layers frozen in training)"
)
STEP_EVAL = {"problems": 500, "temperature": 1.0, "seed": 0}


def training_problems(n: int = DATA_PROBLEMS, seed: int = DATA_SEED):
    """n problems of the default arithmetic mix, minus any expression of the held-out set."""
    excluded = {p.expression for p in held_out_problems()}
    return [p for p in arith_problems(n, seed=seed) if p.meta["expression"] not in excluded]


async def generate_data(out: Path, problems, method: str = "amcs", **search) -> RunCounters:
    """Label `problems` with `method` (recipe search settings, then `search` overrides)."""
    recipe = dict(load_recipe(HERE / "generate.yaml")["search"])
    # AMCS runs with the recipe's settings; a baseline with its own preset, sampling the same way.
    settings = recipe if method == "amcs" else {"max_new_tokens": recipe["max_new_tokens"]}
    settings = settings | {"temperature": DATA_TEMPERATURE} | search
    config = make_config(method, **settings)
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
                model_name="amcs/tiny-arith-policy",
                seed=DATA_SEED,
                concurrency=64,
                counters=counters,
            )
    finally:
        await backend.aclose()
    return counters


def build_base(out: Path, fresh_layers: int = FRESH_LAYERS) -> Path:
    """The tiny policy plus `fresh_layers` decoder layers whose attention and MLP output
    projections are zero: each new layer adds nothing to the residual stream at the start."""
    policy = AutoModelForCausalLM.from_pretrained(TINY_POLICY)
    config = policy.config
    n_policy = config.num_hidden_layers
    config.num_hidden_layers = n_policy + fresh_layers
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    missing = model.load_state_dict(policy.state_dict(), strict=False).missing_keys
    assert all(k.startswith("model.layers.") and int(k.split(".")[2]) >= n_policy for k in missing)
    with torch.no_grad():
        for layer in model.model.layers[n_policy:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(TINY_POLICY).save_pretrained(out)
    return out


def train(data_files: list[Path], out: Path, work: Path, **overrides) -> dict:
    """Train the tiny PRM on amcs data files the recipe's way; returns train_prm's metrics."""
    rows = [row for path in data_files for row in load_prm_rows(path, "amcs")]
    held_out = {p.question for p in held_out_problems()}
    rows = [r for r in rows if r["prompt"] not in held_out]
    base = build_base(work / "base")
    n_policy = AutoModelForCausalLM.from_pretrained(TINY_POLICY).config.num_hidden_layers
    settings = TRAIN | overrides
    training = make_training_config(settings | {"freeze_layers": n_policy})
    metrics = train_prm(rows, str(base), out, training)
    # Name the base for readers of amcs_prm.json instead of the scratch path it was built in.
    config_path = Path(out) / PRM_CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["base_model"] = BASE_DESCRIPTION
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return metrics


async def step_eval_examples():
    backend = HFBackend(TINY_POLICY, max_batch_size=128)
    try:
        return await arith_step_examples(
            backend,
            held_out_problems(STEP_EVAL["problems"]),
            temperature=STEP_EVAL["temperature"],
            seed=STEP_EVAL["seed"],
        )
    finally:
        await backend.aclose()


def step_f1(prm_dir: Path, examples) -> dict:
    scorer = load_prm(prm_dir)
    scores = scorer.score_batch([(e.problem, e.steps) for e in examples])
    return step_report(scores, [e.label for e in examples])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "amcs" / "assets" / "tiny-arith-prm")
    ap.add_argument("--work", type=Path, default=Path("tiny-prm-work"))
    ap.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results" / "tiny_prm.json"
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    start = time.monotonic()
    data = args.work / "amcs-data.jsonl"
    counters = asyncio.run(generate_data(data, training_problems()))
    data_seconds = time.monotonic() - start
    print(
        f"data: {counters.done} problems labelled now ({counters.skipped} already), "
        f"{counters.tokens:,} tokens, {data_seconds:.0f} s",
        file=sys.stderr,
    )

    start = time.monotonic()
    staging = args.work / "prm"
    metrics = train([data], staging, args.work)
    train_seconds = time.monotonic() - start
    print(f"trained in {train_seconds:.0f} s: {metrics}", file=sys.stderr)

    examples = asyncio.run(step_eval_examples())
    report = step_f1(staging, examples)
    print(
        f"step-level F1 {report['f1']:.3f} at threshold {report['threshold']} "
        f"(a1 {report['a1_erroneous']:.3f}, a2 {report['a2_correct']:.3f}); best over the sweep "
        f"{report['best_threshold']['f1']:.3f} at {report['best_threshold']['threshold']}",
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
                    "seconds": round(data_seconds, 1),
                },
                "train": TRAIN | {"fresh_layers": FRESH_LAYERS},
                "train_metrics": metrics | {"seconds": round(train_seconds, 1)},
                "step_eval": STEP_EVAL | {"solutions": len(examples)},
                "f1": {k: v for k, v in report.items() if k != "sweep"},
                "sweep": report["sweep"],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"saved {args.out} and {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
