"""The exact PRM of a problem domain with step truth: the domain's step checker itself. It is the
upper bound a learned PRM is measured against, and a meaningful PRM for tests. The scorer names
``NAME-oracle`` (``arith-oracle``) load it (:func:`amcs.domains.oracle_domain`)."""

from __future__ import annotations

from amcs.domains import Domain
from amcs.domains.arith import ARITH


class DomainOracleScorer:
    """StepScorer from a domain's step truth: 1.0 for a correct step, 0.0 for a wrong one, as
    ``domain.check_steps`` judges it (for arith a step after an error is judged against what the
    model believes, so it can still be correct; use min or prod to require all steps).
    Raises ValueError for a question the domain does not own."""

    def __init__(self, domain: Domain) -> None:
        if not domain.has_step_truth:
            raise ValueError(f"the {domain.name} domain has no exact step truth to score with")
        self.domain = domain
        self.calls = 0

    async def score(self, question: str, steps: list[str]) -> list[float]:
        self.calls += 1
        check = self.domain.check_steps(question, steps)
        return [1.0 if ok else 0.0 for ok in check.step_correct]

    async def aclose(self) -> None:
        pass  # holds nothing


class ArithOracleScorer(DomainOracleScorer):
    """The bundled arithmetic domain's oracle (``arith-oracle``)."""

    def __init__(self) -> None:
        super().__init__(ARITH)
