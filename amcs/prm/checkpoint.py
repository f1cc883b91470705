"""The checkpoint format of ``amcs train``: what it writes and how a scorer reads it back.

A saved PRM is a directory holding:

- the model as transformers saves it (``config.json``, ``model.safetensors`` or shards), LoRA
  merged in: a 2-label ``AutoModelForTokenClassification``, label 1 = step correct;
- or, for a policy-features PRM (:class:`amcs.step_features.StepFeaturePRM`), the frozen base as
  a causal LM checkpoint plus the trained step head in ``step_head.safetensors``;
- the tokenizer's files;
- a model card, ``README.md`` (:func:`amcs.cards.prm_card`), when the trainer gives one;
- ``amcs_prm.json`` (:data:`PRM_CONFIG_FILE`): ``separator`` (the text after each step; a step's
  label and score sit on the last token of step + separator), ``label_meaning``, ``base_model``,
  ``labels`` (hard | soft) and, for a policy-features PRM, ``policy_features`` (its features,
  ``hidden_projection`` and ``width``, from which the scorer rebuilds it).

:func:`write_checkpoint` writes the files beside the target directory and moves them in when
complete, ``amcs_prm.json`` last, so a save cut short never leaves a directory that loads as a
PRM it is not. :func:`load_model` reads a token-classification checkpoint back (ours, or one
without ``amcs_prm.json``, e.g. TRL's, with the default separator).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForTokenClassification

from amcs.cards import CARD_FILE, write_model_card
from amcs.prm.format import load_trained
from amcs.step_features import HEAD_FILE, StepFeaturePRM
from amcs.steps import DEFAULT_SEPARATOR

PRM_CONFIG_FILE = "amcs_prm.json"
LABEL_MEANING = {"1": "step correct", "0": "step wrong"}
# What write_checkpoint writes in its folder (transformers' model and tokenizer files, the step
# head of a policy-features PRM, the model card, amcs_prm.json): `amcs train` checks none of them is an input.
SAVED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    HEAD_FILE,
    CARD_FILE,
    PRM_CONFIG_FILE,
)


def prm_settings(*, separator: str, base_model: str, labels: str) -> dict[str, Any]:
    """The ``amcs_prm.json`` entries every saved PRM has (see the module docstring)."""
    return {
        "separator": separator,
        "label_meaning": LABEL_MEANING,
        "base_model": str(base_model),
        "labels": labels,
    }


def write_checkpoint(
    model, tokenizer, out_dir: str | Path, settings: dict[str, Any], card: str | None = None
) -> None:
    """Save ``model``, ``tokenizer``, ``amcs_prm.json`` (``settings``, plus the
    ``policy_features`` entry that :meth:`StepFeaturePRM.save_pretrained` returns) and the model
    card ``card`` (none when None) to ``out_dir``, through a directory beside it
    (:func:`_move_into_place`)."""
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)  # left by a save killed with -9
    try:
        staging.mkdir()
        saved = model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        settings = dict(settings)
        if isinstance(model, StepFeaturePRM):
            settings["policy_features"] = saved
        text = json.dumps(settings, indent=2) + "\n"
        (staging / PRM_CONFIG_FILE).write_text(text)
        write_model_card(staging, card)
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# The files that make a directory load as a PRM: without config.json transformers loads nothing,
# and amcs_prm.json is what says the PRM is amcs train's (and complete).
_LOADABLE_LAST = ("config.json", PRM_CONFIG_FILE)
_WEIGHTS_FILE = re.compile(
    r"^(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$"
)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Move a complete save from ``staging`` into ``out_dir``, so that an interruption (Ctrl-C,
    SIGTERM, a full disk) at any moment leaves no directory that loads as a PRM it is not.

    A new ``out_dir`` is one rename. An existing one keeps the files the save does not replace
    (the user's); its config.json and amcs_prm.json go first, so while the files are replaced one
    by one nothing loads from it, and the new ones come last, amcs_prm.json at the very end."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    for name in _LOADABLE_LAST:
        (out_dir / name).unlink(missing_ok=True)
    names = sorted(p.name for p in staging.iterdir())
    # Weights of an earlier save that this one does not overwrite (a sharded model replaced by
    # one file, or the reverse) would be loaded in place of the new ones: save_pretrained
    # removes them when it writes into a directory itself, and so does this.
    for old in out_dir.iterdir():
        if _WEIGHTS_FILE.match(old.name) and old.name not in names and old.is_file():
            old.unlink()
    for name in [n for n in names if n not in _LOADABLE_LAST] + [
        n for n in _LOADABLE_LAST if n in names
    ]:
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)


def is_amcs_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds an ``amcs_prm.json`` (a PRM amcs train saved, complete)."""
    return (Path(path) / PRM_CONFIG_FILE).is_file()


def load_prm_config(path: str | Path) -> dict[str, Any]:
    """Read ``amcs_prm.json`` from a saved PRM directory."""
    return json.loads((Path(path) / PRM_CONFIG_FILE).read_text())


def load_model(path: Path, dtype: torch.dtype | None) -> tuple[torch.nn.Module, dict]:
    """The token-classification model at ``path`` (a :class:`StepFeaturePRM` when its
    amcs_prm.json has ``policy_features``) and the scorer options its checkpoint sets:
    ``separator`` (amcs_prm.json's, else ``"\\n\\n"``) and ``step_inputs``."""
    separator = DEFAULT_SEPARATOR
    features = None
    if is_amcs_checkpoint(path):
        settings = load_prm_config(path)
        separator = settings.get("separator", DEFAULT_SEPARATOR)
        features = settings.get("policy_features")
    if features is not None:
        model = StepFeaturePRM.from_pretrained(path, features, dtype=dtype)
    else:
        model = load_trained(AutoModelForTokenClassification, path, "token-cls", dtype=dtype)
    return model, {"separator": separator, "step_inputs": features is not None}
