"""Test-time verification: greedy, majority@n, best-of-n, PRM-weighted vote, step-level beam
search and MCTS, all on the Backend protocol and a StepScorer (PRM).

    ctx = VerifyContext(backend, scorer, VerifyConfig(aggregation="min"))
    result = await run_strategy("best-of-n", ctx, question, n=8)
    result.answer, result.tokens, result.prm_calls, result.candidates
"""

from __future__ import annotations

from amcs.steps import split_steps
from amcs.verification.aggregation import AGGREGATIONS, aggregate, best_index
from amcs.verification.base import Candidate, StepScorer, StrategyResult
from amcs.verification.beam import beam_search
from amcs.verification.config import VerifyConfig, make_verify_config
from amcs.verification.context import Run, VerifyContext
from amcs.verification.mcts import MCTS, mcts, puct
from amcs.verification.oracle import ArithOracleScorer, DomainOracleScorer
from amcs.verification.sampling import best_of_n, greedy, majority, weighted_vote
from amcs.verification.strategies import (
    STRATEGIES,
    StrategySpec,
    register_strategy,
    run_strategy,
)
from amcs.verification.voting import (
    group_answers,
    majority_choice,
    same_answer,
    vote,
    weighted_choice,
)

__all__ = [
    "AGGREGATIONS",
    "MCTS",
    "STRATEGIES",
    "ArithOracleScorer",
    "Candidate",
    "DomainOracleScorer",
    "Run",
    "StepScorer",
    "StrategyResult",
    "StrategySpec",
    "VerifyConfig",
    "VerifyContext",
    "aggregate",
    "beam_search",
    "best_index",
    "best_of_n",
    "greedy",
    "group_answers",
    "majority_choice",
    "majority",
    "make_verify_config",
    "mcts",
    "puct",
    "register_strategy",
    "run_strategy",
    "same_answer",
    "split_steps",
    "vote",
    "weighted_choice",
    "weighted_vote",
]
