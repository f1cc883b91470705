"""What a problem domain provides: the :class:`Domain` protocol and :class:`StepCheck`, the exact
verdict on a solution's steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from amcs.problems import Problem


@dataclass
class StepCheck:
    """Exact verdict on a list of steps. ``step_correct[i]``: step i is itself right, judged
    against the problem as the earlier steps left it. ``prefix_correct[i]``: steps 0..i are all
    right. ``solved``: the steps end in the right final answer with no error."""

    step_correct: list[bool] = field(default_factory=list)
    prefix_correct: list[bool] = field(default_factory=list)
    solved: bool = False

    @property
    def first_error(self) -> int:
        """Index of the first wrong step, or -1 when every step is correct."""
        return next((i for i, ok in enumerate(self.step_correct) if not ok), -1)


@runtime_checkable
class Domain(Protocol):
    """A source of problems, and, when it has one, the exact truth of their steps.

    ``name``: the registry key, ``problem.meta["domain"]`` of its problems, and with ``-oracle``
    the name of its exact scorer (``arith-oracle``) when ``has_step_truth``. ``title``: how
    messages and the viewer name it ("arithmetic"). ``sources``: the problem-source names it
    answers (``arith``, ``arith-heldout``), each also as ``NAME:N`` for its first N problems;
    ``default_count`` is N for a bare ``NAME``.
    """

    name: str
    title: str
    sources: tuple[str, ...]
    default_count: int
    has_step_truth: bool

    def problems(self, source: str, count: int, seed: int) -> list[Problem]:
        """The first ``count`` problems of ``source`` (one of ``sources``) for ``seed``. The
        first n of a larger count are the same n problems: a run over ``NAME:100`` is extended
        by ``NAME:200``."""
        ...

    def owns(self, question: str) -> bool:
        """Whether ``question`` is one of this domain's (the viewer and the oracle know a
        problem by its question text alone)."""
        ...

    def check_steps(self, question: str, steps: Sequence[str]) -> StepCheck:
        """The exact verdict on ``steps`` written for ``question`` (one the domain owns; a
        ValueError for another). Never raises on the steps' text: model output is judged, not
        trusted. A domain without step truth raises NotImplementedError."""
        ...
