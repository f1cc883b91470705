"""`amcs train`: labelled steps -> a process reward model (token-classification head).

Training options are the fields of ``PRMTrainingConfig`` (ours and every
``transformers.TrainingArguments`` field): a recipe's keys and ``--set KEY=VALUE`` take any of
them by name; the common ones also have flags whose help is the field's own help text. This
module imports transformers (seconds), so ``cli.main`` loads it only when ``amcs train`` runs or
shows its help (:func:`command`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import click
import typer
from rich.table import Table

from amcs.fields import ConfigError, allowed, field_help, field_types
from amcs.recipes import RecipeError, load_recipe
from amcs.training.config import (
    ALIASES,
    PRMTrainingConfig,
    canonical_settings,
    help_text,
    is_inherited,
    make_training_config,
)
from cli.common import check_output, err, fail, interrupted, parse_sets, say

# The options that are not training settings: where the data comes from and where the PRM goes.
COMMAND_DEFAULTS: dict[str, Any] = {
    "data": None,
    "format": "auto",
    "base": None,  # the bundled tiny policy
    "out": "amcs-prm",
}

_FIELDS = PRMTrainingConfig.__dataclass_fields__
_EPILOG_WIDTH = 100


def flag_help(name: str) -> str:
    """A flag's help: its field's help text (the one description, shared with recipes, --set and
    the library), what it allows (bools: a flag pair says it) and its default."""
    field = _FIELDS[name]
    kind = field_types(PRMTrainingConfig)[name]
    what = "" if kind is bool else f" ({allowed(field, kind)})"
    return f"{help_text(field)}{what} [default: {field.default}]"


def training_options_help() -> str:
    """The epilog of `amcs train --help`: our fields, then the TrainingArguments fields whose
    default we change, each with help, allowed values and default (as `amcs generate --help`
    lists search parameters), then what else is accepted."""
    ours, inherited = [], []
    for name, text, default in field_help(PRMTrainingConfig):
        lines = textwrap.wrap(
            f"{text} [default: {default!r}]",
            width=_EPILOG_WIDTH,
            initial_indent=f"  {name:<28}",
            subsequent_indent=" " * 30,
        )
        (inherited if is_inherited(name) else ours).extend(lines)
    aliases = ", ".join(f"{old} = {new}" for old, new in ALIASES.items())
    return (
        "Training options (a recipe key, --set KEY=VALUE, or the flag above):\n\n\b\n"
        + "\n".join(ours)
        + "\n\nTrainingArguments fields with our defaults:\n\n\b\n"
        + "\n".join(inherited)
        + "\n\nAny other transformers.TrainingArguments field is accepted the same way (e.g. "
        "--set adam_beta2=0.95 --set optim=adafactor). Older recipes' keys are read as "
        f"aliases: {aliases}."
    )


def train_command(
    ctx: typer.Context,
    recipe: Path | None = typer.Option(
        None,
        "--recipe",
        "-r",
        help="YAML recipe: data, format, base, out and any training option; the command line wins.",
    ),
    data: list[str] = typer.Option(
        [],
        "--data",
        help="Training data, repeatable or a quoted glob (shards, or runs over the same "
        "problems; an id must name one question): amcs/TRL/Math-Shepherd/PRM800K JSONL or a "
        "HF dataset.",
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="auto | trl | amcs | shepherd | prm800k. [default: auto]"
    ),
    base: str | None = typer.Option(
        None, help="Base causal LM. [default: the bundled tiny policy]"
    ),
    out: Path | None = typer.Option(None, help="Where the PRM is saved. [default: amcs-prm]"),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Any training option KEY=VALUE (listed below, or a transformers.TrainingArguments "
        "field), repeatable; the flags win over it.",
    ),
    labels: str | None = typer.Option(None, help=flag_help("labels")),
    threshold: float | None = typer.Option(None, help=flag_help("threshold")),
    max_length: int | None = typer.Option(None, help=flag_help("max_length")),
    freeze_layers: int | None = typer.Option(None, help=flag_help("freeze_layers")),
    lora_r: int | None = typer.Option(None, help=flag_help("lora_r")),
    lora_alpha: int | None = typer.Option(None, help=flag_help("lora_alpha")),
    learning_rate: float | None = typer.Option(
        None, "--learning-rate", "--lr", help=flag_help("learning_rate")
    ),
    num_train_epochs: float | None = typer.Option(
        None, "--num-train-epochs", "--epochs", help=flag_help("num_train_epochs")
    ),
    max_steps: int | None = typer.Option(None, help=flag_help("max_steps")),
    per_device_train_batch_size: int | None = typer.Option(
        None,
        "--per-device-train-batch-size",
        "--batch-size",
        help=flag_help("per_device_train_batch_size"),
    ),
    gradient_accumulation_steps: int | None = typer.Option(
        None, help=flag_help("gradient_accumulation_steps")
    ),
    gradient_checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help=flag_help("gradient_checkpointing"),
    ),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help=flag_help("bf16")),
    fp16: bool | None = typer.Option(None, "--fp16/--no-fp16", help=flag_help("fp16")),
    warmup_steps: float | None = typer.Option(None, help=flag_help("warmup_steps")),
    lr_scheduler_type: str | None = typer.Option(None, help=flag_help("lr_scheduler_type")),
    seed: int | None = typer.Option(None, help=flag_help("seed")),
) -> None:
    """Train a PRM: AutoModelForTokenClassification with 2 labels on any causal-LM checkpoint;
    each step's label sits on the last token of step + separator (TRL's convention).

    Saves the model, its tokenizer and amcs_prm.json (separator, label meaning, base model).
    Under accelerate launch or torchrun every process trains and the first one saves.
    Ctrl-C (exit 130) or SIGTERM (143) stops it with no PRM saved: the files are written beside
    OUT and renamed into it once complete. Training does not resume; run it again.

    Examples:

      amcs train --data amcs-data.jsonl --out tiny-prm

      amcs train --recipe recipes/tiny-arith/train.yaml

      amcs train --data math-shepherd.jsonl --base Qwen/Qwen2.5-Math-7B-Instruct --lora-r 16

      amcs train --recipe recipes/qwen2.5-math-7b/train.yaml --set warmup_steps=0.05
    """
    try:
        from_recipe = load_recipe(recipe)
    except RecipeError as exc:
        fail(str(exc))
    command_options = {k: from_recipe.pop(k) for k in list(from_recipe) if k in COMMAND_DEFAULTS}
    given = {"data": list(data) or None, "format": fmt, "base": base, "out": out}
    opts = COMMAND_DEFAULTS | command_options | {k: v for k, v in given.items() if v is not None}
    flags = {
        name: value for name, value in ctx.params.items() if name in _FIELDS and value is not None
    }
    try:
        recipe_settings = canonical_settings(from_recipe)
    except ConfigError as exc:
        fail(f"{recipe}: {exc}")
    # Checked now, before any data or model is loaded; TrainingArguments' own checks included.
    try:
        settings = recipe_settings | canonical_settings(parse_sets(set_)) | flags
        config = make_training_config(settings)
    except ConfigError as exc:
        fail(str(exc))
    if not opts["data"]:
        fail("no training data: pass --data FILE (or set data: in the recipe)")

    from amcs.prm_data import load_prm_rows
    from amcs.shards import ShardError, check_combinable, expand_sources

    sources = [opts["data"]] if isinstance(opts["data"], str) else list(opts["data"])
    try:
        sources = expand_sources(sources)
        check_combinable(sources)
    except (ShardError, OSError, ValueError) as exc:
        fail(str(exc))
    from amcs.training.save import SAVED_FILES

    out_dir = Path(str(opts["out"])).expanduser()
    check_output(
        "--out",
        out_dir,
        inputs=[recipe, opts["base"]],
        runs=sources,
        beside=[(name, out_dir / name) for name in SAVED_FILES],
        folder=True,
    )
    config, separator_note = data_separator(sources, settings, config)
    rows = []
    try:
        for source in sources:
            rows += load_prm_rows(source, opts["format"])
    except (OSError, ValueError) as exc:
        fail(str(exc))

    from amcs.assets import TINY_POLICY
    from amcs.training import train_prm
    from cli.train_progress import TrainProgress

    main_process = config.process_index == 0
    if main_process:
        err.print(
            f"training on {len(rows):,} labelled paths from {', '.join(map(str, sources))}; "
            f"steps end with {separator_note}",
            markup=False,
            highlight=False,
        )
        warning = one_class_warning(rows, config.threshold)
        if warning:
            say(f"warning: {warning}", style="yellow")
    try:
        metrics = train_prm(
            rows,
            str(Path(str(opts["base"])).expanduser() if opts["base"] else TINY_POLICY),
            opts["out"],
            config,
            [TrainProgress()],
            data_files=[str(source) for source in sources],
        )
    except ValueError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.common.install_sigterm_as_ctrl_c)
        # Training keeps no checkpoints to resume from (save_strategy "no" by default), and the
        # PRM is saved beside --out and renamed into it (amcs.training.save): nothing in --out
        # looks like a trained PRM that is not one.
        message = (
            f"training stopped before the PRM was saved; {opts['out']} holds no new PRM (amcs "
            "train does not resume: run the same command again to train from the start)"
        )
        interrupted(message if main_process else None)
    if main_process:
        table = Table(title=f"amcs train → {opts['out']}", show_header=False)
        for key, value in metrics.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        err.print(table)


def data_separator(sources: list[str], settings: dict[str, Any], config: PRMTrainingConfig):
    """The config with the separator the data was split with, and how it was chosen (for the
    log line). A separator given in the recipe or with --set wins; otherwise the one that
    ``amcs generate`` recorded in each source's meta file (``amcs.records.recorded_search``);
    sources that recorded different ones are an error; no record leaves the default."""
    from amcs.records import RecordFormatError, meta_path_for, recorded_search

    recorded: dict[str, list[str]] = {}  # separator -> the meta files that record it
    for source in sources:
        try:
            search = recorded_search(source)
        except (RecordFormatError, OSError) as exc:
            fail(str(exc))
        separator = (search or {}).get("separator")
        if isinstance(separator, str):
            recorded.setdefault(separator, []).append(str(meta_path_for(source)))
    given = settings.get("separator") is not None
    if given:
        note = f"separator {config.separator!r} (given)"
        others = {sep: metas for sep, metas in recorded.items() if sep != config.separator}
        for sep, metas in others.items():
            say(f"warning: separator {config.separator!r} given, but {metas[0]} records {sep!r}")
        return config, note
    if len(recorded) > 1:
        what = ", ".join(f"{sep!r} ({metas[0]})" for sep, metas in recorded.items())
        fail(
            f"the training data was split with different separators: {what}; train on one kind, "
            "or choose one with --set separator=..."
        )
    if not recorded:
        return config, f"separator {config.separator!r} (the default; no meta file records one)"
    ((separator, metas),) = recorded.items()
    try:
        config = make_training_config(settings | {"separator": separator})
    except ConfigError as exc:
        fail(f"{metas[0]}: {exc}")
    return config, f"separator {separator!r} (as {', '.join(metas)} records)"


def one_class_warning(rows: list[dict], threshold: float) -> str | None:
    """What to say when the rows' step labels, as training derives them (hard label = MC value
    > threshold, ``amcs.training.tokenize.relabel``), are all of one class; else None."""
    from amcs.training.tokenize import relabel

    pos = neg = 0
    for row in rows:
        try:
            labels = [bool(x) for x in relabel(row, threshold)["labels"]]
        except ValueError:
            return None  # train_prm reports the row
        pos += sum(labels)
        neg += len(labels) - sum(labels)
    if (pos and neg) or not (pos or neg):
        return None
    only, missing, unseen = ('"+"', '"-"', "wrong") if pos else ('"-"', '"+"', "right")
    steps = f"{pos + neg:,} step{'s' * (pos + neg != 1)}"
    return (
        f"the training rows hold only {only} labels ({steps} at threshold {threshold:g}, no "
        f"{missing}): the PRM never sees a {unseen} step; train on data with "
        'both classes (amcs generate warns when it writes no "-" labels)'
    )


def command() -> click.Command:
    """The `amcs train` click command, with the training options listed in its epilog."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command("train", epilog=training_options_help())(train_command)
    return typer.main.get_command(app)
