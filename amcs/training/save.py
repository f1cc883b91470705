"""Saving a trained PRM: model (LoRA merged in), tokenizer and ``amcs_prm.json``, written by one
process only, however many processes trained it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def save_prm(trainer, tokenizer, out_dir: str | Path, base: str, config: PRMTrainingConfig):
    """Save the trained model, its tokenizer and ``amcs_prm.json`` to ``out_dir``.

    Under ``accelerate launch`` or ``torchrun`` every rank holds the same trained weights, so
    only world process zero merges LoRA and writes: N ranks writing the same files at once would
    race (a reader can meet a half-written safetensors file) and N merges waste N - 1 copies of
    the model's memory. Every rank then waits at a barrier, so no rank returns (and, e.g., starts
    evaluating ``out_dir``) before the files are complete. The barrier is reached even when the
    save fails, so the other ranks do not hang until the collective timeout; the failing rank
    raises."""
    out_dir = Path(out_dir)
    try:
        if trainer.is_world_process_zero():
            model = trainer.model
            if config.uses_lora:
                model = model.merge_and_unload()
            out_dir.mkdir(parents=True, exist_ok=True)
            saved = model.save_pretrained(str(out_dir))
            tokenizer.save_pretrained(str(out_dir))
            settings = prm_config(base, config)
            if config.policy_features:
                # StepFeaturePRM.save_pretrained: the frozen base + head; the scorer rebuilds it
                # from this entry.
                settings["policy_features"] = saved
            text = json.dumps(settings, indent=2) + "\n"
            (out_dir / PRM_CONFIG_FILE).write_text(text)
    finally:
        trainer.accelerator.wait_for_everyone()


def load_prm_config(path: str | Path) -> dict[str, Any]:
    """Read ``amcs_prm.json`` from a saved PRM directory."""
    return json.loads((Path(path) / PRM_CONFIG_FILE).read_text())
