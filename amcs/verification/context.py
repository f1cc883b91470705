"""What a strategy runs with (backend, PRM, prompt, config) and the bookkeeping of one run:
seeds, generated tokens, rollouts, requests and PRM calls."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from amcs.backends.base import Backend, Rollout, SamplingParams
from amcs.prompts import prompt_ids as default_prompt_ids
from amcs.seeds import derive_seed
from amcs.verification.base import Candidate, StepScorer, StrategyResult
from amcs.verification.config import VerifyConfig


@dataclass
class VerifyContext:
    """Shared by every run: the backend, the PRM (None for greedy and majority), the config and
    the prompt function prompt(tokenizer, question) -> token ids."""

    backend: Backend
    scorer: StepScorer | None = None
    config: VerifyConfig = field(default_factory=VerifyConfig)
    prompt: Callable[[Any, str], list[int]] = default_prompt_ids


class Run:
    """One strategy on one question. Every sample and score goes through here, so the counts in
    the result cover every rollout, discarded ones included."""

    def __init__(self, ctx: VerifyContext, strategy: str, question: str, n: int | None) -> None:
        self.ctx = ctx
        self.strategy = strategy
        self.question = question
        self.config = ctx.config if n is None else replace(ctx.config, n=n)
        self.prompt_ids = list(ctx.prompt(ctx.backend.tokenizer, question))
        self.tokens = 0
        self.rollouts = 0
        self.requests = 0
        self.prm_calls = 0

    def sample(
        self,
        prefix_ids: Sequence[int],
        n: int,
        *,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        stop: tuple[str, ...] = (),
    ) -> Coroutine[Any, Any, list[Rollout]]:
        """n rollouts from prompt + prefix_ids. Not itself async: the call's seed is fixed when
        it is made, so concurrent calls (gathered) get the same seeds on every run."""
        cfg = self.config
        params = SamplingParams(
            temperature=cfg.temperature if temperature is None else temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            max_new_tokens=cfg.max_new_tokens if max_new_tokens is None else max_new_tokens,
            stop=stop,
            # Stable across processes: two strategies with the same seed draw the same first
            # samples (majority and best-of-n then judge the same n solutions).
            seed=derive_seed(cfg.seed, self.question, self.requests, separator="\x00"),
        )
        self.requests += 1
        return self._sample(self.prompt_ids + list(prefix_ids), n, params)

    async def _sample(self, ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        rollouts = await self.ctx.backend.sample(ids, n, params)
        self.rollouts += len(rollouts)
        self.tokens += sum(r.num_tokens for r in rollouts)
        return rollouts

    async def score(self, steps: list[str]) -> list[float]:
        """PRM scores of `steps` (one call); no call for an empty list, which scores []."""
        if not steps:
            return []
        if self.ctx.scorer is None:
            raise ValueError(f"strategy {self.strategy!r} needs a PRM: VerifyContext.scorer")
        self.prm_calls += 1
        scores = await self.ctx.scorer.score(self.question, steps)
        if len(scores) != len(steps):
            raise ValueError(f"PRM returned {len(scores)} scores for {len(steps)} steps")
        return [float(s) for s in scores]

    def result(
        self,
        candidates: list[Candidate],
        chosen: int | None,
        *,
        votes: dict[str, float] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> StrategyResult:
        pick = candidates[chosen] if chosen is not None else None
        return StrategyResult(
            strategy=self.strategy,
            question=self.question,
            answer=pick.answer if pick else None,
            text=pick.text if pick else "",
            tokens=self.tokens,
            prm_calls=self.prm_calls,
            rollouts=self.rollouts,
            requests=self.requests,
            candidates=candidates,
            chosen=chosen,
            votes=votes,
            stats=stats or {},
        )
