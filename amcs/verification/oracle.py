"""The exact PRM for the arithmetic domain: the step checker itself. It is the upper bound a
learned PRM is measured against, and a meaningful PRM for tests."""

from __future__ import annotations

from amcs.domains.arith import check_steps, expression_from_question


class ArithOracleScorer:
    """StepScorer for arithmetic questions: 1.0 for a correct step, 0.0 for a wrong one, as
    amcs.domains.arith.check_steps judges it (a step after an error is judged against what the
    model believes, so it can still be correct; use min or prod to require all steps).
    Raises ValueError for a question not written with the arithmetic template."""

    def __init__(self) -> None:
        self.calls = 0

    async def score(self, question: str, steps: list[str]) -> list[float]:
        self.calls += 1
        check = check_steps(expression_from_question(question), steps)
        return [1.0 if ok else 0.0 for ok in check.step_correct]

    async def aclose(self) -> None:
        pass  # holds nothing
