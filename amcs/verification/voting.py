"""Voting over final answers: answers that mean the same number vote together; the choice rules of
majority@n and the PRM-weighted vote (best-of-n's is ``aggregation.best_index``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from amcs.grading import answers_match_fast
from amcs.verification.aggregation import best_index
from amcs.verification.base import Candidate


def same_answer(a: str, b: str) -> bool:
    """Plain numbers compare by value ("1,000" == "1000.0"); anything else by its stripped text."""
    fast = answers_match_fast(a, b)
    return fast if fast is not None else a.strip() == b.strip()


def group_answers(answers: Sequence[str | None]) -> list[int | None]:
    """A group id per answer, numbered in order of first occurrence; None for a missing answer.
    Numeric equality is exact (Decimal), so grouping is transitive."""
    reps: list[str] = []
    groups: list[int | None] = []
    for a in answers:
        if a is None:
            groups.append(None)
            continue
        g = next((j for j, r in enumerate(reps) if same_answer(r, a)), None)
        if g is None:
            g = len(reps)
            reps.append(a)
        groups.append(g)
    return groups


def vote(
    answers: Sequence[str | None], weights: Sequence[float] | None = None
) -> tuple[int | None, dict[str, float]]:
    """The winning answer's group and the totals.

    Each sample adds its weight (1 without weights) to its answer's group; samples without an
    answer do not vote. The winner is the group with the largest total; on a tie, the answer that
    first appeared earliest wins (deterministic, and among equal totals it favours what the model
    produced first). Returns (index of the first sample of the winning group, or None when no
    sample has an answer; {first spelling of each answer: total}).
    """
    if weights is None:
        weights = [1.0] * len(answers)
    groups = group_answers(answers)
    members: dict[int, list[float]] = {}
    first: dict[int, int] = {}
    for i, (g, w) in enumerate(zip(groups, weights, strict=True)):
        if g is None:
            continue
        members.setdefault(g, []).append(float(w))
        first.setdefault(g, i)
    totals = {g: math.fsum(ws) for g, ws in members.items()}
    winner = None
    for g in sorted(totals):  # groups in order of first occurrence
        if winner is None or totals[g] > totals[winner]:
            winner = g
    table = {answers[first[g]]: totals[g] for g in sorted(totals)}
    return (first[winner] if winner is not None else None), table


def majority_choice(candidates: Sequence[Candidate]) -> tuple[int | None, dict[str, float]]:
    """majority@n: the first candidate of the most voted answer (``vote``: ties to the answer
    that appeared first); the first candidate when none states an answer, None for none. Returns
    (that index, the vote totals)."""
    winner, votes = vote([c.answer for c in candidates])
    return (winner if winner is not None else (0 if candidates else None)), votes


def weighted_choice(candidates: Sequence[Candidate]) -> tuple[int | None, dict[str, float]]:
    """PRM-weighted vote: answer a totals sum_{i: answer_i = a} score_i (a missing score counts
    0; ties to the answer that appeared first); the chosen candidate is the best-scored one with
    the winning answer (ties: earliest), or ``best_index`` when no candidate states an answer.
    Returns (that index, the vote totals)."""
    scores = [c.score or 0.0 for c in candidates]
    winner, votes = vote([c.answer for c in candidates], scores)
    if winner is None:
        return best_index(candidates), votes
    groups = group_answers([c.answer for c in candidates])
    members = [i for i, g in enumerate(groups) if g == groups[winner]]
    return max(members, key=lambda i: (scores[i], -i)), votes
