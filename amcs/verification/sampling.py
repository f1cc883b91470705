"""Strategies over whole sampled solutions: greedy, majority vote, best-of-n and PRM-weighted vote.

Majority, best-of-n and weighted vote draw their n samples in one request seeded by (seed,
question, 0), so with the same seed they judge the same n solutions. A sample cut at
max_new_tokens is an unfinished candidate with no answer (``final_answer``).
"""

from __future__ import annotations

import asyncio

from amcs.backends.base import Rollout
from amcs.steps import split_steps, step_rules
from amcs.verification.aggregation import aggregate, best_index
from amcs.verification.base import Candidate, StrategyResult, final_answer
from amcs.verification.context import Run, VerifyContext
from amcs.verification.voting import group_answers, majority_choice, weighted_choice


async def greedy(ctx: VerifyContext, question: str, n: int | None = None) -> StrategyResult:
    """One sample at temperature 0; n is ignored."""
    run = Run(ctx, "greedy", question, n)
    (rollout,) = await run.sample([], 1, temperature=0.0)
    return run.result([_candidate(rollout)], 0)


def _candidate(rollout: Rollout, score: float | None = None, step_scores=()) -> Candidate:
    """A whole sampled solution as a candidate: unfinished, with no answer, when it was cut."""
    done = not rollout.truncated
    text = rollout.text
    return Candidate(text, final_answer(text, done), score, list(step_scores), done)


async def _samples(run: Run) -> list[Rollout]:
    return await run.sample([], run.config.n)


async def _scored(run: Run, rollouts: list[Rollout]) -> list[Candidate]:
    """Each sample split into steps, scored by the PRM (one call per sample with steps), and
    its score aggregated."""
    rules, how = step_rules(run.config), run.config.aggregation
    step_scores = await asyncio.gather(*(run.score(split_steps(r.text, **rules)) for r in rollouts))
    return [_candidate(r, aggregate(s, how), s) for r, s in zip(rollouts, step_scores, strict=True)]


async def majority(ctx: VerifyContext, question: str, n: int | None = None) -> StrategyResult:
    """majority@n: n samples, the most frequent answer wins (numbers compare by value); ties go to
    the answer that appeared first. The text is the first sample with that answer. Each
    candidate's score is its answer's vote share. No PRM calls."""
    run = Run(ctx, "majority", question, n)
    candidates = [_candidate(r) for r in await _samples(run)]
    chosen, votes = majority_choice(candidates)  # none states an answer: the first sample
    groups = group_answers([c.answer for c in candidates])
    for c, g in zip(candidates, groups, strict=True):
        c.score = None if g is None else groups.count(g) / len(candidates)
    return run.result(candidates, chosen, votes=votes)


async def best_of_n(ctx: VerifyContext, question: str, n: int | None = None) -> StrategyResult:
    """best-of-n: n samples, each scored aggregate(PRM step scores); the highest wins, ties to the
    earliest sample (a sample stating no answer wins only when none states one)."""
    run = Run(ctx, "best-of-n", question, n)
    candidates = await _scored(run, await _samples(run))
    return run.result(candidates, best_index(candidates))


async def weighted_vote(ctx: VerifyContext, question: str, n: int | None = None) -> StrategyResult:
    """PRM-weighted majority: n samples; answer a scores sum_{i: answer_i = a} aggregate(PRM(i));
    the largest total wins, ties to the answer that appeared first; samples without an answer do
    not vote. The text is the best-scored sample with the winning answer (ties: earliest)."""
    run = Run(ctx, "weighted-vote", question, n)
    candidates = await _scored(run, await _samples(run))
    chosen, votes = weighted_choice(candidates)
    return run.result(candidates, chosen, votes=votes)
