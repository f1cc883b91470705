"""The searches that label solution steps: AMCS and its baselines in one framework.

A search knows the backend protocol and an answer checker; it writes no files. ``run_search``
runs one problem and returns its labelled paths, tree and statistics.
"""

from __future__ import annotations

from amcs.backends.base import Backend
from amcs.problems import Problem
from amcs.search.config import SearchConfig, make_config
from amcs.search.context import AnswerChecker, SearchContext, SearchResult
from amcs.search.methods import METHODS, MethodSpec, register_method
from amcs.steps import StepSplitter

__all__ = [
    "METHODS",
    "MethodSpec",
    "SearchConfig",
    "SearchResult",
    "make_config",
    "register_method",
    "run_search",
]


async def run_search(
    problem: Problem,
    backend: Backend,
    checker: AnswerChecker,
    config: SearchConfig,
    prompt_ids: list[int],
    seed: int,
    splitter: StepSplitter | None = None,
    keep_rollouts: bool = False,
) -> SearchResult:
    """Label one problem with the configured method. `seed` makes it reproducible;
    keep_rollouts stores each estimate's rollouts in the tree (it changes no label)."""
    ctx = SearchContext(
        problem=problem,
        backend=backend,
        checker=checker,
        config=config,
        prompt_ids=prompt_ids,
        seed=seed,
        splitter=splitter or StepSplitter.for_config(backend.tokenizer, config),
        keep_rollouts=keep_rollouts,
    )
    search = METHODS.entry(config.method).search_class()(ctx)
    return await search.run()
