"""The strategies by name, and the one entry point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from amcs.verification.base import StrategyResult
from amcs.verification.beam import beam_search
from amcs.verification.context import VerifyContext
from amcs.verification.mcts import mcts
from amcs.verification.sampling import best_of_n, greedy, majority, weighted_vote

Strategy = Callable[[VerifyContext, str, int | None], Awaitable[StrategyResult]]

STRATEGIES: dict[str, Strategy] = {
    "greedy": greedy,
    "majority": majority,
    "best-of-n": best_of_n,
    "weighted-vote": weighted_vote,
    "beam": beam_search,
    "mcts": mcts,
}


async def run_strategy(name: str, ctx: VerifyContext, question: str, n: int) -> StrategyResult:
    """Run strategy `name` on one question with budget n (samples, candidate steps per depth, or
    MCTS iterations; greedy ignores it)."""
    try:
        strategy = STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}"
        ) from None
    return await strategy(ctx, question, n)
