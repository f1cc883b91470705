"""Saving a trained PRM: model (LoRA merged in), tokenizer and ``amcs_prm.json``, written by one
process only, however many processes trained it."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from amcs.cards import CARD_FILE, write_model_card
from amcs.training.config import PRMTrainingConfig

PRM_CONFIG_FILE = "amcs_prm.json"
LABEL_MEANING = {"1": "step correct", "0": "step wrong"}
# What save_prm writes in its folder (transformers' model and tokenizer files, the step head of
# a policy-features PRM, amcs_prm.json): `amcs train` checks none of them is an input.
SAVED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "step_head.safetensors",
    CARD_FILE,
    PRM_CONFIG_FILE,
)


def prm_config(base: str, config: PRMTrainingConfig) -> dict[str, Any]:
    """What the scorer needs to rebuild training's inputs (``amcs_prm.json``)."""
    return {
        "separator": config.separator,
        "label_meaning": LABEL_MEANING,
        "base_model": str(base),
        "labels": config.labels,
    }


def save_prm(
    trainer,
    tokenizer,
    out_dir: str | Path,
    base: str,
    config: PRMTrainingConfig,
    card: str | None = None,
):
    """Save the trained model, its tokenizer, ``amcs_prm.json`` and the model card ``card``
    (README.md, :func:`amcs.cards.prm_card`) to ``out_dir``.

    Under ``accelerate launch`` or ``torchrun`` every rank holds the same trained weights, so
    only world process zero merges LoRA and writes: N ranks writing the same files at once would
    race (a reader can meet a half-written safetensors file) and N merges waste N - 1 copies of
    the model's memory. Every rank then waits at a barrier, so no rank returns (and, e.g., starts
    evaluating ``out_dir``) before the files are complete. The barrier is reached even when the
    save fails, so the other ranks do not hang until the collective timeout; the failing rank
    raises. The files are written to a directory beside ``out_dir`` and moved into it when
    complete (:func:`_move_into_place`): a save cut short leaves nothing that loads as a PRM."""
    out_dir = Path(out_dir)
    try:
        if trainer.is_world_process_zero():
            model = trainer.model
            if config.uses_lora:
                model = model.merge_and_unload()
            if not out_dir.parent.is_dir():
                out_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = out_dir.with_name(f".{out_dir.name}.saving")
            shutil.rmtree(staging, ignore_errors=True)  # left by a save killed with -9
            try:
                staging.mkdir()
                saved = model.save_pretrained(str(staging))
                tokenizer.save_pretrained(str(staging))
                settings = prm_config(base, config)
                if config.policy_features:
                    # StepFeaturePRM.save_pretrained: the frozen base + head; the scorer
                    # rebuilds it from this entry.
                    settings["policy_features"] = saved
                text = json.dumps(settings, indent=2) + "\n"
                (staging / PRM_CONFIG_FILE).write_text(text)
                write_model_card(staging, card)
                _move_into_place(staging, out_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        trainer.accelerator.wait_for_everyone()


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


def load_prm_config(path: str | Path) -> dict[str, Any]:
    """Read ``amcs_prm.json`` from a saved PRM directory."""
    return json.loads((Path(path) / PRM_CONFIG_FILE).read_text())
