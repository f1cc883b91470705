"""The PRM loss: cross-entropy at the label positions, against hard classes or soft MC values."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amcs.training.tokenize import IGNORE_INDEX


def prm_loss(
    logits: torch.Tensor, labels: torch.Tensor, soft_labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over label positions (``labels != -100``). With ``soft_labels`` the
    target at each label position is the distribution [1 - v, v] instead of the hard class;
    positions whose soft value is unknown (SOFT_IGNORE, a null value) are masked out."""
    mask = labels != IGNORE_INDEX
    if soft_labels is not None:
        mask = mask & (soft_labels >= 0)
    picked = logits[mask].float()
    if picked.numel() == 0:
        return logits.sum() * 0.0
    if soft_labels is None:
        return F.cross_entropy(picked, labels[mask])
    v = soft_labels[mask].to(picked.dtype)
    target = torch.stack([1.0 - v, v], dim=-1)
    return -(target * F.log_softmax(picked, dim=-1)).sum(-1).mean()
