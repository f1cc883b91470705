"""Turning per-step PRM scores into one solution score, and choosing the best solution."""

from __future__ import annotations

import math
from collections.abc import Sequence

from amcs.verification.base import Candidate

AGGREGATIONS = ("last", "min", "prod", "mean")


def aggregate(scores: Sequence[float], how: str = "last") -> float:
    """One score for a solution whose steps scored s_1..s_T:

    - last: s_T (the PRM's verdict on the whole solution, as trained PRMs see the last step)
    - min:  min_t s_t (a solution is as good as its weakest step)
    - prod: prod_t s_t (P(all steps correct) if step errors were independent)
    - mean: (1/T) sum_t s_t

    A solution with no steps scores 0.0 under every rule.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}")
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    return math.fsum(scores) / len(scores)


def best_index(candidates: Sequence[Candidate]) -> int | None:
    """Index of the best candidate: the highest score among those that state an answer (a
    solution without one cannot be right, so it wins only when none states one); ties go to the
    earliest. None for an empty list. A missing score counts as 0."""
    best, best_key = None, None
    for i, c in enumerate(candidates):
        key = (c.answer is not None, c.score if c.score is not None else 0.0)
        if best_key is None or key > best_key:  # strictly greater: ties keep the earlier one
            best, best_key = i, key
    return best
