"""Batches of PRM features: right padding with the values the loss ignores."""

from __future__ import annotations

import torch

from amcs.step_features import STEP_INPUT_PAD, STEP_INPUTS
from amcs.training.tokenize import IGNORE_INDEX, SOFT_IGNORE


class PRMCollator:
    """Right-pad ``input_ids`` (pad id), ``attention_mask`` (0), ``labels`` (-100) and, when
    present, ``soft_labels`` (-1.0) and the step inputs of policy-feature PRMs
    (``step_owner`` -1, ``step_separator`` 0). Extra keys (``n_steps_kept``...) are dropped."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)

        def pad(key: str, value, dtype) -> torch.Tensor:
            return torch.tensor(
                [list(f[key]) + [value] * (width - len(f[key])) for f in features], dtype=dtype
            )

        batch = {
            "input_ids": pad("input_ids", self.pad_token_id, torch.long),
            "attention_mask": pad("attention_mask", 0, torch.long),
            "labels": pad("labels", IGNORE_INDEX, torch.long),
        }
        if all("soft_labels" in f for f in features):
            batch["soft_labels"] = pad("soft_labels", SOFT_IGNORE, torch.float32)
        for key in STEP_INPUTS:
            if all(key in f for f in features):
                batch[key] = pad(key, STEP_INPUT_PAD[key], torch.long)
        return batch
