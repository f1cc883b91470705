"""`amcs train`: labelled steps -> a process reward model (token-classification head)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.common import check_number, err, fail, merge_options

DEFAULTS: dict[str, Any] = {
    "data": None,
    "format": "auto",
    "base": None,  # the bundled tiny policy
    "out": "amcs-prm",
    "labels": "hard",
    "lora": None,  # {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    "epochs": 1.0,
    "lr": 1e-4,
    "batch_size": 8,
    "max_length": 512,
    "eval_fraction": 0.1,
    "seed": 0,
    "threshold": 0.0,
    "separator": "\n\n",
    "freeze_layers": 0,
}


def train_command(
    recipe: Path | None = typer.Option(
        None, "--recipe", "-r", help="YAML recipe; the command line wins."
    ),
    data: list[str] = typer.Option(
        [],
        "--data",
        help="Training data, repeatable or a quoted glob (shards of one run: no problem may be "
        "in two): amcs/TRL/Math-Shepherd/PRM800K JSONL or a HF dataset.",
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="auto | trl | amcs | shepherd | prm800k. [default: auto]"
    ),
    base: str | None = typer.Option(
        None, help="Base causal LM. [default: the bundled tiny policy]"
    ),
    out: Path | None = typer.Option(None, help="Where the PRM is saved. [default: amcs-prm]"),
    labels: str | None = typer.Option(
        None, help="hard (MC > threshold) or soft (the MC value). [default: hard]"
    ),
    lora_r: int | None = typer.Option(
        None, help="Train LoRA adapters of this rank (plus the head); omit for full fine-tuning."
    ),
    epochs: float | None = typer.Option(None, help="[default: 1]"),
    lr: float | None = typer.Option(None, help="[default: 1e-4]"),
    batch_size: int | None = typer.Option(None, help="[default: 8]"),
    max_length: int | None = typer.Option(
        None, help="Longer examples are cut at a step boundary. [default: 512]"
    ),
    seed: int | None = typer.Option(None, help="[default: 0]"),
    freeze_layers: int | None = typer.Option(
        None,
        help="Full fine-tuning with the embeddings and this many bottom layers frozen. "
        "[default: 0]",
    ),
) -> None:
    """Train a PRM: AutoModelForTokenClassification with 2 labels on any causal-LM checkpoint;
    each step's label sits on the last token of step + separator (TRL's convention).

    Saves the model, its tokenizer and amcs_prm.json (separator, label meaning, base model).

    Examples:

      amcs train --data amcs-data.jsonl --out tiny-prm

      amcs train --recipe recipes/tiny-arith/train.yaml

      amcs train --data math-shepherd.jsonl --base Qwen/Qwen2.5-Math-7B-Instruct --lora-r 16
    """
    given = {
        "data": list(data) or None,
        "format": fmt,
        "base": base,
        "out": out,
        "labels": labels,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "freeze_layers": freeze_layers,
    }
    opts, _ = merge_options(recipe, DEFAULTS, given)
    check_number(opts, "epochs", float, above=0)
    check_number(opts, "lr", float, above=0)
    check_number(opts, "batch_size", int, min=1)
    check_number(opts, "max_length", int, min=2)
    check_number(opts, "eval_fraction", float, min=0, below=1)
    check_number(opts, "seed", int)
    check_number(opts, "threshold", float, min=0, below=1)
    check_number(opts, "freeze_layers", int, min=0)
    if lora_r is not None:
        opts["lora"] = {"r": lora_r, "alpha": 2 * lora_r}
    if not opts["data"]:
        fail("no training data: pass --data FILE (or set data: in the recipe)")
    if opts["labels"] not in ("hard", "soft"):
        fail(f"--labels must be hard or soft, not {opts['labels']!r}")

    from amcs.prm_data import load_prm_rows
    from amcs.shards import ShardError, check_disjoint, expand_sources

    sources = [opts["data"]] if isinstance(opts["data"], str) else list(opts["data"])
    try:
        sources = expand_sources(sources)
        check_disjoint(sources)
    except (ShardError, OSError, ValueError) as exc:
        fail(str(exc))
    rows = []
    try:
        for source in sources:
            rows += load_prm_rows(source, opts["format"])
    except (OSError, ValueError) as exc:
        fail(str(exc))
    if opts["labels"] == "soft" and not all("values" in r for r in rows):
        fail("--labels soft needs MC values in every row (amcs data has them)")

    from amcs.assets import TINY_POLICY
    from amcs.training import train_prm
    from cli.train_progress import TrainProgress

    lora = opts["lora"]
    if lora:
        lora = {
            "r": lora.get("r", 8),
            "lora_alpha": lora.get("alpha", 16),
            "lora_dropout": lora.get("dropout", 0.0),
            "target_modules": lora.get("target_modules"),
        }
    err.print(f"training on {len(rows):,} labelled paths from {', '.join(map(str, sources))}")
    try:
        metrics = train_prm(
            rows,
            str(opts["base"] or TINY_POLICY),
            opts["out"],
            labels=opts["labels"],
            lora=lora,
            epochs=float(opts["epochs"]),
            lr=float(opts["lr"]),
            batch_size=int(opts["batch_size"]),
            max_length=int(opts["max_length"]),
            eval_fraction=float(opts["eval_fraction"]),
            seed=int(opts["seed"]),
            threshold=float(opts["threshold"]),
            separator=opts["separator"],
            callbacks=[TrainProgress()],
            freeze_layers=int(opts["freeze_layers"]),
        )
    except ValueError as exc:
        fail(str(exc))
    table = Table(title=f"amcs train → {opts['out']}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    err.print(table)
