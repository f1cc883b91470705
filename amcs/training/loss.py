"""The PRM loss: cross-entropy at the label positions, against hard classes or soft MC values."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amcs.training.tokenize import IGNORE_INDEX


def prm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft_labels: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy over label positions (``labels != -100``). With ``soft_labels`` the
    target at each label position is the distribution [1 - v, v] instead of the hard class;
    positions whose soft value is unknown (SOFT_IGNORE, a null value) are masked out.

    ``class_weights`` (hard labels only; [w_wrong, w_correct]) gives the weighted mean
    sum_i w_{y_i} CE_i / sum_i w_{y_i} (torch's ``cross_entropy(weight=...)``)."""
    mask = labels != IGNORE_INDEX
    if soft_labels is not None:
        mask = mask & (soft_labels >= 0)
    picked = logits[mask].float()
    if picked.numel() == 0:
        return logits.sum() * 0.0
    if soft_labels is None:
        weight = class_weights.to(picked) if class_weights is not None else None
        return F.cross_entropy(picked, labels[mask], weight=weight)
    v = soft_labels[mask].to(picked.dtype)
    target = torch.stack([1.0 - v, v], dim=-1)
    return -(target * F.log_softmax(picked, dim=-1)).sum(-1).mean()


def balanced_class_weights(features: list[dict]) -> torch.Tensor:
    """[w_wrong, w_correct] with w_c = n / (2 n_c) over the label positions of ``features``, so
    both classes carry half the loss; a class absent from the data gets weight 1."""
    counts = [0, 0]
    for feature in features:
        for label in feature["labels"]:
            if label != IGNORE_INDEX:
                counts[int(label)] += 1
    total = sum(counts)
    return torch.tensor([total / (2 * c) if c else 1.0 for c in counts])
