"""``PRMTrainingConfig``: every setting of a PRM training run, as one ``TrainingArguments``.

The config IS the Trainer's ``args`` (the way TRL's ``SFTConfig`` is), so any field of
``transformers.TrainingArguments`` (bf16, gradient_accumulation_steps, gradient_checkpointing,
warmup_steps, lr_scheduler_type, weight_decay, optim, ...) reaches the Trainer untouched, and
recipes, ``amcs train --set KEY=VALUE`` and ``amcs train --help`` all read the same fields.
Our own fields are made with :func:`amcs.fields.option`: they carry their help text and their
allowed range, checked when the config is built, with messages that name the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import SaveStrategy

from amcs.fields import ConfigError, check, convert, field_types, is_option, option, validate
from amcs.steps import DEFAULT_SEPARATOR, check_separator, parse_separator
from amcs.training.tokenize import LABEL_KINDS

# Old recipe keys -> field names. Only recipes (and the library's settings mappings) read these;
# the command line, the docs and the bundled recipes use the field names. A nested `lora:`
# mapping of old recipes is read as `lora.<key>`.
ALIASES = {
    "epochs": "num_train_epochs",
    "lr": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "lora.r": "lora_r",
    "lora.alpha": "lora_alpha",
    "lora.dropout": "lora_dropout",
    "lora.target_modules": "lora_target_modules",
}


def help_text(field: dataclasses.Field) -> str:
    """A field's help as a reader sees it (transformers escapes ``%`` as ``%%`` for argparse)."""
    return field.metadata.get("help", "").replace("%%", "%")


def inherited_help(name: str) -> str:
    """The help text of a ``TrainingArguments`` field, for a field whose default or range we
    change: transformers' words stay the one description."""
    return help_text(TrainingArguments.__dataclass_fields__[name])


def is_inherited(name: str) -> bool:
    """Whether ``name`` is a ``TrainingArguments`` field (rather than one of ours)."""
    return name in TrainingArguments.__dataclass_fields__


@dataclass
class PRMTrainingConfig(TrainingArguments):
    """Settings of ``train_prm``: our fields (labels, threshold, truncation, split, freezing,
    LoRA) and every ``TrainingArguments`` field, with defaults changed where a PRM run differs
    from transformers' (learning rate, epochs, no checkpoints, no reporting, CPU without CUDA).

    ``amcs`` saves the trained PRM itself (:mod:`amcs.training.save`), so the Trainer saves no
    checkpoints and its ``output_dir`` is by default a scratch directory removed after training.
    With ``gradient_checkpointing`` and no ``gradient_checkpointing_kwargs``, non-reentrant
    checkpointing is used: the reentrant kind computes no gradients for a block whose inputs do
    not require grad, which is the case after frozen embeddings (``freeze_layers``, LoRA).
    """

    # What the PRM learns.
    labels: str = option(
        "hard",
        "hard: train on the class MC value > threshold; soft: on the MC value itself "
        "(cross-entropy against [1 - value, value])",
        choices=LABEL_KINDS,
    )
    threshold: float = option(
        0.0,
        "hard label = MC value > threshold, re-derived from the rows' values (a step whose value "
        "is null keeps its label; rows without values are allowed only at 0)",
        min=0,
        below=1,
    )
    max_length: int = option(
        512,
        "tokens per example; a longer one is cut at a step boundary (dropped when not even its "
        "first step fits)",
        min=2,
    )
    eval_fraction: float = option(
        0.1, "share of the rows held out to report step accuracy and loss", min=0, below=1
    )
    separator: str = option(
        DEFAULT_SEPARATOR,
        "text after each step; the step's label sits on its last token (saved in amcs_prm.json "
        "for the scorer). Escapes \\n, \\t, \\r, \\\\ are decoded. amcs train reads it from "
        "the data's meta file (the separator amcs generate split with) unless given",
    )
    class_balance: bool = option(
        False,
        "weight the hard-label loss so wrong and correct steps count equally in total (weight "
        "n / (2 n_class) per class, counted on the training split): wrong steps are the rarer "
        "class, and a PRM that rarely flags one finds few first errors",
    )
    policy_features: bool = option(
        False,
        "read the base model's own view of each step: the base, kept frozen, scores every "
        "token of the sequence the policy saw (its prompt, then the steps), and a small head "
        "trains on per-step features of those token probabilities (min, mean, separator, "
        "length, margin to the top token, entropy) plus a projection of the last hidden state "
        "(amcs.step_features). The base sees only what it knows: the policy itself finds the "
        "errors the policy doubts; a base that knows the domain better than the policy (a "
        "larger model, or the policy trained further) also finds the ones it makes confidently",
    )
    # Which weights train.
    freeze_layers: int = option(
        0,
        "full fine-tuning with the embeddings and this many bottom decoder layers frozen",
        min=0,
    )
    lora_r: int | None = option(
        0,
        "LoRA rank: train LoRA adapters of this rank (and the whole new head); 0 or null: full "
        "fine-tuning",
        min=0,
    )
    lora_alpha: int = option(
        16, "LoRA alpha: the adapters' update is scaled by lora_alpha / lora_r", min=1
    )
    lora_dropout: float = option(0.0, "dropout on the LoRA adapters' input", min=0, below=1)
    lora_target_modules: str | list[str] = option(
        "all-linear",
        "modules that get LoRA adapters: all-linear, or a list of module names (e.g. "
        "[q_proj, v_proj]); the head is never one (it trains in full)",
    )

    # TrainingArguments fields whose default (or range) differs for a PRM run.
    output_dir: str | None = option(
        None,
        "where the Trainer writes checkpoints (only with a save_strategy other than no); by "
        "default a temporary directory removed after training. The PRM itself is saved to "
        "amcs train's --out",
    )
    learning_rate: float = option(1e-4, inherited_help("learning_rate"), above=0)
    num_train_epochs: float = option(1.0, inherited_help("num_train_epochs"), above=0)
    max_steps: int = option(-1, inherited_help("max_steps"), min=-1)
    per_device_train_batch_size: int = option(
        8, inherited_help("per_device_train_batch_size"), min=1
    )
    per_device_eval_batch_size: int = option(8, inherited_help("per_device_eval_batch_size"), min=1)
    gradient_accumulation_steps: int = option(
        1, inherited_help("gradient_accumulation_steps"), min=1
    )
    warmup_steps: float = option(0.0, inherited_help("warmup_steps"), min=0)
    weight_decay: float = option(0.0, inherited_help("weight_decay"), min=0)
    seed: int = option(0, inherited_help("seed"))
    logging_steps: float = option(10, inherited_help("logging_steps"), above=0)
    save_strategy: SaveStrategy | str = option("no", inherited_help("save_strategy"))
    report_to: None | str | list[str] = option("none", inherited_help("report_to"))
    remove_unused_columns: bool = option(
        False,
        "keep the feature keys the model's forward does not name (soft_labels reaches the loss "
        "only this way)",
    )
    use_cpu: bool = option(
        not torch.cuda.is_available(),
        inherited_help("use_cpu") + " Default: true when CUDA is absent.",
    )
    disable_tqdm: bool | None = option(
        True, inherited_help("disable_tqdm") + " amcs train shows its own progress."
    )

    def __post_init__(self) -> None:
        validate(self)
        check_separator(self.separator)
        if self.lora_r and self.freeze_layers:
            raise ConfigError(
                f"freeze_layers={self.freeze_layers} is for full fine-tuning, but lora_r="
                f"{self.lora_r} asks for LoRA (which already freezes the base model)"
            )
        if self.policy_features:
            clash = [
                f"{name}={getattr(self, name)}"
                for name in ("lora_r", "freeze_layers", "gradient_checkpointing")
                if getattr(self, name)
            ]
            if clash:
                raise ConfigError(
                    f"policy_features keeps the whole base frozen (its token probabilities are "
                    f"the features) and trains only a small head; {', '.join(clash)} would "
                    "train or checkpoint the base: leave it out"
                )
        if self.class_balance and self.labels == "soft":
            raise ConfigError("class_balance weighs hard classes; labels=soft has none")
        if self.gradient_checkpointing and self.gradient_checkpointing_kwargs is None:
            self.gradient_checkpointing_kwargs = {"use_reentrant": False}
        # None: train_prm runs the Trainer in a temporary directory (TrainingArguments itself
        # would turn None into ./trainer_output).
        self.output_dir_is_scratch = self.output_dir is None
        super().__post_init__()

    @property
    def uses_lora(self) -> bool:
        """LoRA when lora_r is a positive rank; 0 and None both mean full fine-tuning."""
        return bool(self.lora_r)


_FIELDS = {f.name: f for f in dataclasses.fields(PRMTrainingConfig) if f.init}


def _flatten(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with an old recipe's nested ``lora:`` mapping spelled ``lora.<key>``."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "lora" and (value is None or isinstance(value, Mapping)):
            flat |= {f"lora.{k}": v for k, v in (value or {}).items()}
        else:
            flat[key] = value
    return flat


def _unknown_key_message(key: str) -> str:
    """'unknown training option ...' with the closest field names (or aliases)."""
    close = difflib.get_close_matches(key, [*_FIELDS, *ALIASES], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return (
        f"unknown training option {key!r}{hint} (amcs train --help lists ours; any "
        "transformers.TrainingArguments field works too)"
    )


def canonical_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` keyed by field names: old recipe keys (:data:`ALIASES`, a nested ``lora:``)
    renamed, values as given. An unknown key, or one option given under two names, is a
    ConfigError naming it. Layers of settings (recipe, --set, flags) are made canonical one by
    one before they are merged, so a later layer wins whichever name each used."""
    canonical: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, value in _flatten(settings).items():
        name = ALIASES.get(key, key)
        if name not in _FIELDS:
            raise ConfigError(_unknown_key_message(key))
        if name in canonical:
            raise ConfigError(f"{source[name]} and {key} are the same option ({name}); give one")
        source[name] = key
        canonical[name] = value
    return canonical


def make_training_config(settings: Mapping[str, Any] | None = None) -> PRMTrainingConfig:
    """A PRMTrainingConfig from a mapping of field names (or old recipe keys, :data:`ALIASES`)
    to values as a recipe or ``--set`` gives them: each value is converted by its field's type
    and checked, and any problem is a one-line ConfigError naming the key. A separator's
    escapes are decoded (:func:`amcs.steps.parse_separator`)."""
    kinds = field_types(PRMTrainingConfig)
    values: dict[str, Any] = {}
    for name, value in canonical_settings(settings or {}).items():
        field = _FIELDS[name]
        if name == "separator":
            value = parse_separator(value)
        values[name] = convert(field, value, kinds[name])
        if not is_option(field) and values[name] is not None:
            check(field, values[name], kinds[name])
    try:
        return PRMTrainingConfig(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # TrainingArguments' own checks
        raise ConfigError(" ".join(str(exc).split())) from None
