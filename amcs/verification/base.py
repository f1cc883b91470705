"""What verification strategies share: the PRM protocol they score with and the result each
strategy returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from amcs.grading import extract_answer


@runtime_checkable
class StepScorer(Protocol):
    """A process reward model as the strategies see it.

    ``score(question, steps)`` returns, for each step (text, separator and outer whitespace
    removed), the probability that the step is correct given the question and the steps before
    it: one float in [0, 1] per step. ``calls`` counts the score() calls made so far;
    ``aclose()`` releases what the scorer holds (a worker thread, say).
    """

    calls: int

    async def score(self, question: str, steps: list[str]) -> list[float]: ...

    async def aclose(self) -> None: ...


@dataclass
class Candidate:
    """One solution a strategy considered. score is its aggregated PRM score (majority: the vote
    share of its answer; None where nothing scored it); finished is False for a partial solution:
    a beam still open at max_depth, or a solution cut at the token limit (its last rollout's
    finish_reason is "length"). An unfinished candidate states no answer (see final_answer)."""

    text: str
    answer: str | None
    score: float | None = None
    step_scores: list[float] = field(default_factory=list)
    finished: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def final_answer(text: str, finished: bool) -> str | None:
    """The answer a candidate states: the one extracted from its text when it is finished, else
    None. A solution cut at the token limit may stop mid-number ("The answer is 1" of 12), so,
    as `amcs generate` grades a cut rollout wrong, its answer never counts: it does not vote,
    and it is chosen only when no candidate states an answer (then the result is wrong)."""
    return extract_answer(text) if finished else None


@dataclass
class StrategyResult:
    """What one strategy did on one question.

    tokens: generated tokens of every rollout sampled, kept or discarded; rollouts and requests:
    how many rollouts and backend.sample calls that took; prm_calls: StepScorer.score calls.
    chosen indexes the candidate whose text and answer are the result (None when there is none).
    votes maps each answer voted for to its total (count or PRM weight), vote strategies only.
    stats holds strategy-specific numbers (beam width, depth reached, tree size, ...).
    """

    strategy: str
    question: str
    answer: str | None
    text: str
    tokens: int
    prm_calls: int
    rollouts: int
    requests: int
    candidates: list[Candidate]
    chosen: int | None
    votes: dict[str, float] | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
