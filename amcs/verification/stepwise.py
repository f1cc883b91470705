"""Growing solutions one step at a time, shared by beam search and MCTS.

A path's prefix is the prompt's ids plus the ids the model generated for its steps, never
re-tokenised text. Its steps for the PRM come from splitting the joined step texts, so a step cut
at step_max_new_tokens and continued by the next sample is still scored as one step. A cut step
never ends a solution, even when it holds an answer (it may stop mid-number): the next sample
continues it, and a path whose tokens run out that way is unfinished and states no answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from amcs.backends.base import Rollout
from amcs.grading import extract_answer
from amcs.steps import split_steps, step_rules
from amcs.verification.aggregation import aggregate
from amcs.verification.base import Candidate, final_answer
from amcs.verification.context import Run


@dataclass(frozen=True)
class StepPath:
    """A partial or finished solution: the generated ids and text of each sampled step, and the
    PRM's scores of its steps (as of the last step added)."""

    ids: tuple[int, ...] = ()
    texts: tuple[str, ...] = ()
    step_scores: tuple[float, ...] = ()
    finished: bool = False

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def depth(self) -> int:
        return len(self.texts)

    @property
    def value(self) -> float:
        """The PRM score of the last step: what MCTS backs up (beam search ranks by the
        aggregate of all step scores, the rule its final choice uses)."""
        return self.step_scores[-1] if self.step_scores else 0.0

    def candidate(self, how: str) -> Candidate:
        return Candidate(
            self.text,
            final_answer(self.text, self.finished),
            aggregate(self.step_scores, how),
            list(self.step_scores),
            self.finished,
        )


def ends_solution(rollout: Rollout, separator: str) -> bool:
    """A step ends the solution when the model stopped on end-of-sequence (finish "stop" but no
    separator in the text, since stop strings are kept) or the step states a final answer; a
    step cut at the token limit never does."""
    if rollout.truncated:
        return False
    eos = rollout.finish_reason == "stop" and separator not in rollout.text
    return eos or extract_answer(rollout.text) is not None


def tokens_left(run: Run, path: StepPath) -> int:
    return run.config.max_new_tokens - len(path.ids)


def can_extend(run: Run, path: StepPath) -> bool:
    """Whether another step may be sampled after `path`: not finished, under max_depth steps and
    under max_new_tokens generated tokens."""
    return not path.finished and path.depth < run.config.max_depth and tokens_left(run, path) > 0


async def extend(run: Run, path: StepPath, k: int) -> list[StepPath]:
    """k next steps after `path` (one backend request with n=k, stopping at the separator), each
    scored by the PRM: one call per distinct new step (a repeated sample reuses the score, since
    the PRM sees the same input). Returns the k new paths in sample order."""
    cfg = run.config
    rollouts = await run.sample(
        path.ids,
        k,
        max_new_tokens=min(cfg.step_max_new_tokens, tokens_left(run, path)),
        stop=(cfg.separator,),
    )
    new = [
        StepPath(
            ids=path.ids + tuple(r.token_ids),
            texts=path.texts + (r.text,),
            finished=ends_solution(r, cfg.separator),
        )
        for r in rollouts
    ]
    distinct: dict[tuple[int, ...], StepPath] = {}
    for p in new:
        distinct.setdefault(p.ids, p)
    scores = await asyncio.gather(
        *(run.score(split_steps(p.text, **step_rules(cfg))) for p in distinct.values())
    )
    by_ids = {ids: tuple(s) for ids, s in zip(distinct, scores, strict=True)}
    return [replace(p, step_scores=by_ids[p.ids]) for p in new]
