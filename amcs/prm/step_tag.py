"""The ``step-tag`` PRM format: Math-Shepherd / OpenR-style causal LMs.

The input text is ``question + " " + "\\n".join(step + " " + tag for step in steps)`` (tag
``"ки"`` by default), and a step's score is P(good) from the next-token logits at the tag's
position, restricted to the good and bad tokens (``"+"`` and ``"-"``)::

    score = softmax([z_tag[good], z_tag[bad]])[0]

A plain causal LM whose vocabulary happens to hold the tag looks like a step-tag PRM to
detection, so pass the format when unsure.
"""

from __future__ import annotations

import bisect
import inspect
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from amcs.prm.format import (
    CheckpointFiles,
    Encoded,
    FormatOptions,
    MarkerFormat,
    load_trained,
    required_token_id,
)

DEFAULT_STEP_TAG = "ки"
DEFAULT_GOOD_TOKEN = "+"
DEFAULT_BAD_TOKEN = "-"


class StepTag(MarkerFormat):
    name = "step-tag"
    marker_role = "step tag"

    def __init__(self, model, tokenizer, options: FormatOptions) -> None:
        super().__init__(model, tokenizer, options)
        self.good_id = required_token_id(tokenizer, options.good_token, "good token")
        self.bad_id = required_token_id(tokenizer, options.bad_token, "bad token")
        if self.good_id == self.bad_id:
            raise ValueError("the good and bad tokens have the same id")
        # Whether the model can return logits at chosen positions only (logits_to_keep).
        self.keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def marker(self) -> str:
        return self.options.step_tag

    @classmethod
    def detect(cls, files: CheckpointFiles) -> int:
        return int(files.architecture.endswith("ForCausalLM") and files.has_token(files.step_tag))

    @classmethod
    def clue(cls, files: CheckpointFiles) -> str:
        found = "present" if files.has_token(files.step_tag) else "absent"
        return f"step tag {files.step_tag!r} {found}"

    @classmethod
    def load(cls, path: Path, dtype: torch.dtype | None) -> tuple[torch.nn.Module, dict]:
        return load_trained(AutoModelForCausalLM, path, cls.name, dtype=dtype), {}

    def token_ids(self, question: str, steps: list[str]) -> list[int]:
        text = question + " " + "\n".join(f"{step} {self.marker}" for step in steps)
        return list(self.tokenizer(text)["input_ids"])

    def prepare(self, batch: list[Encoded], inputs: dict) -> list[list[int]]:
        inputs["use_cache"] = False
        if not self.keeps_logits:
            return super().prepare(batch, inputs)
        # Only the tag positions need vocabulary-sized logits.
        keep = sorted({p for e in batch for p in e.positions})
        inputs["logits_to_keep"] = torch.tensor(keep, device=inputs["input_ids"].device)
        return [[bisect.bisect_left(keep, p) for p in e.positions] for e in batch]

    def pick_scores(self, picked: torch.Tensor) -> torch.Tensor:
        return picked[:, [self.good_id, self.bad_id]].softmax(-1)[:, 0]
