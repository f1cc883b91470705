"""Saving a trained PRM in the checkpoint format of :mod:`amcs.prm.checkpoint` (model with LoRA
merged in, tokenizer, ``amcs_prm.json``, model card), written by one process only, however many
processes trained it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amcs.prm.checkpoint import prm_settings, write_checkpoint
from amcs.training.config import PRMTrainingConfig


def prm_config(base: str, config: PRMTrainingConfig) -> dict[str, Any]:
    """What the scorer needs to rebuild training's inputs (``amcs_prm.json``)."""
    return prm_settings(separator=config.separator, base_model=base, labels=config.labels)


def save_prm(
    trainer,
    tokenizer,
    out_dir: str | Path,
    base: str,
    config: PRMTrainingConfig,
    card: str | None = None,
):
    """Save the trained model, its tokenizer, ``amcs_prm.json`` and the model card ``card``
    (README.md, :func:`amcs.cards.prm_card`) to ``out_dir``
    (:func:`amcs.prm.checkpoint.write_checkpoint`).

    Under ``accelerate launch`` or ``torchrun`` every rank holds the same trained weights, so
    only world process zero merges LoRA and writes: N ranks writing the same files at once would
    race (a reader can meet a half-written safetensors file) and N merges waste N - 1 copies of
    the model's memory. Every rank then waits at a barrier, so no rank returns (and, e.g., starts
    evaluating ``out_dir``) before the files are complete. The barrier is reached even when the
    save fails, so the other ranks do not hang until the collective timeout; the failing rank
    raises. A save cut short leaves nothing that loads as a PRM (write_checkpoint)."""
    try:
        if trainer.is_world_process_zero():
            model = trainer.model
            if config.uses_lora:
                model = model.merge_and_unload()
            write_checkpoint(model, tokenizer, out_dir, prm_config(base, config), card)
    finally:
        trainer.accelerator.wait_for_everyone()
