"""Live progress of `amcs train` on stderr, from a transformers Trainer callback."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback

log = logging.getLogger("amcs")


class TrainProgress(TrainerCallback):
    """Rich progress for `amcs train`: a bar over optimizer steps with the latest loss, learning
    rate and epoch; with quiet=True (or stderr not a terminal) a log line at each Trainer log.
    Under accelerate launch / torchrun only the first process shows it (every process trains the
    same steps; N bars on one terminal would fight over it)."""

    def __init__(self, quiet: bool = False) -> None:
        console = Console(stderr=True)
        self.quiet = quiet or not console.is_terminal
        self._progress = Progress(
            TextColumn("train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self._task = self._progress.add_task("train", total=None, status="")
        self.active = True

    def on_train_begin(self, args, state, control, **kwargs):
        self.active = state.is_world_process_zero
        if not self.active:
            return
        self._progress.update(self._task, total=state.max_steps)
        if not self.quiet:
            self._progress.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.active:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.active:
            return
        logs = logs or {}
        parts = [f"epoch {state.epoch or 0:.2f}"]
        if "loss" in logs:
            parts.append(f"loss {logs['loss']:.4f}")
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        status = " · ".join(parts)
        self._progress.update(self._task, status=status)
        if self.quiet:
            log.info("step %d/%d · %s", state.global_step, state.max_steps, status)

    def on_train_end(self, args, state, control, **kwargs):
        if self.active and not self.quiet:
            self._progress.stop()
