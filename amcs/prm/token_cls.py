"""The ``token-cls`` PRM format: our own PRMs from ``amcs train`` and TRL-style
token-classification PRMs.

An ``AutoModelForTokenClassification`` with 2 labels (1 = step correct), its tokenizer and, for
ours, ``amcs_prm.json`` (:mod:`amcs.prm.checkpoint`: separator, label meaning, base model, label
kind). Inputs are built exactly as in training (:func:`amcs.training.tokenize.tokenize_prm_row`):
prompt ids, then the ids of ``step + separator`` for each step; a step's score is
softmax(logits)[1] on the last token of ``step + separator``. Without ``amcs_prm.json`` the
separator is ``"\\n\\n"``.

Policy-features PRMs and the policy-confidence baseline (:mod:`amcs.step_features`) read the
policy's view of each step instead: the policy's prompt, and the ``step_owner`` /
``step_separator`` inputs (``step_inputs``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from amcs.prm import checkpoint
from amcs.prm.format import CheckpointFiles, Encoded, PRMFormat
from amcs.step_features import STEP_INPUTS, encode_steps
from amcs.training.tokenize import IGNORE_INDEX, tokenize_prm_row


class TokenClassification(PRMFormat):
    name = "token-cls"
    own_file = checkpoint.PRM_CONFIG_FILE
    takes_step_inputs = True

    @classmethod
    def detect(cls, files: CheckpointFiles) -> int:
        return 1 if files.two_label_classifier else 0

    @classmethod
    def clue(cls, files: CheckpointFiles) -> str:
        return f"no {checkpoint.PRM_CONFIG_FILE}"

    @classmethod
    def load(cls, path: Path, dtype: torch.dtype | None) -> tuple[torch.nn.Module, dict]:
        return checkpoint.load_model(path, dtype)

    def encode(self, question: str, steps: list[str]) -> Encoded:
        separator = self.options.separator
        if self.options.step_inputs:
            enc = encode_steps(self.tokenizer, question, steps, separator)
            return Encoded(enc["input_ids"], enc["positions"], {k: enc[k] for k in STEP_INPUTS})
        row = {"prompt": question, "completions": steps, "labels": [True] * len(steps)}
        feat = tokenize_prm_row(row, self.tokenizer, separator, max_length=None)
        positions = [i for i, label in enumerate(feat["labels"]) if label != IGNORE_INDEX]
        return Encoded(feat["input_ids"], positions, {})
