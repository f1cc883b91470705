"""The strategies by name with their traits, and the one entry point.

A strategy is ``async run(ctx, question, n) -> StrategyResult``; its :class:`StrategySpec` says
what ``amcs eval`` must know about it without knowing its name: whether it scores steps with the
PRM (``needs_prm``; no PRM is loaded for an eval without one), whether it only rescores the
samples every sampling strategy shares (``rescoring``; the policy-confidence baseline then
rescores them too, at no generation cost), and whether ``n`` is its budget (``budgeted``; greedy
runs once, at n = 1). A new strategy is one module plus one :func:`register_strategy` line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from amcs.registry import Registry
from amcs.verification.base import StrategyResult
from amcs.verification.beam import beam_search
from amcs.verification.context import VerifyContext
from amcs.verification.mcts import mcts
from amcs.verification.sampling import best_of_n, greedy, majority, weighted_vote

Strategy = Callable[[VerifyContext, str, int | None], Awaitable[StrategyResult]]


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: the function that runs it and its traits (module docstring)."""

    run: Strategy
    needs_prm: bool = False
    rescoring: bool = False
    budgeted: bool = True

    def __post_init__(self) -> None:
        if self.rescoring and not self.needs_prm:
            raise ValueError("a rescoring strategy scores with the PRM: rescoring needs needs_prm")


STRATEGIES: Registry[StrategySpec] = Registry("strategy")


def register_strategy(
    name: str,
    run: Strategy,
    *,
    needs_prm: bool = False,
    rescoring: bool = False,
    budgeted: bool = True,
    replace: bool = False,
) -> StrategySpec:
    """Register the strategy ``run`` under ``name`` with its traits (module docstring)."""
    spec = StrategySpec(run, needs_prm=needs_prm, rescoring=rescoring, budgeted=budgeted)
    return STRATEGIES.register(name, spec, replace=replace)


register_strategy("greedy", greedy, budgeted=False)
register_strategy("majority", majority)
register_strategy("best-of-n", best_of_n, needs_prm=True, rescoring=True)
register_strategy("weighted-vote", weighted_vote, needs_prm=True, rescoring=True)
register_strategy("beam", beam_search, needs_prm=True)
register_strategy("mcts", mcts, needs_prm=True)


async def run_strategy(name: str, ctx: VerifyContext, question: str, n: int) -> StrategyResult:
    """Run strategy `name` on one question with budget n (samples, candidate steps per depth, or
    MCTS iterations; greedy ignores it)."""
    return await STRATEGIES.entry(name).run(ctx, question, n)
