"""The one protocol every generation engine implements, and the values that cross it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0 is greedy; top_k 0 and top_p 1 disable those filters.
    Stop strings end a rollout and are kept in its text and token ids (a step ends with its
    separator). With a seed, the same request always gives the same rollouts."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None


@dataclass(frozen=True)
class Rollout:
    """One sampled continuation. token_ids exclude the end-of-sequence token; logprob_sum is the
    model's own (temperature 1) log-probability of token_ids; cached_tokens is how many prompt
    tokens the engine served from its prefix cache, when it says."""

    token_ids: list[int]
    text: str
    logprob_sum: float
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"
    cached_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def truncated(self) -> bool:
        """Cut at max_new_tokens (finish_reason "length"): its last step or answer may be cut
        mid-number, so it never counts as a finished solution."""
        return self.finish_reason == "length"

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood per token, one of AMCS's rollout features."""
        return -self.logprob_sum / max(1, len(self.token_ids))


@runtime_checkable
class Backend(Protocol):
    tokenizer: PreTrainedTokenizerBase

    async def sample(
        self, prompt_ids: list[int], n: int, params: SamplingParams
    ) -> list[Rollout]: ...

    async def aclose(self) -> None: ...


class BackendConfigError(RuntimeError):
    """A request failed for a reason that is not the problem's own (an unknown model name, a
    parameter the server refuses): every problem would fail the same way, so the engine stops the
    run with this message instead of recording failed problems. The message says what to change."""


class PromptTooLongError(ValueError):
    """The server refused one request as longer than the model's context: that problem's own
    fault, so generate records the problem as failed and goes on; a command that cannot go on
    without the answer (eval) stops with this message."""


class BackendUnavailableError(ConnectionError):
    """The server cannot be reached or is not ready (connection refused, 502/503, a timeout). The
    engine waits for it with bounded patience instead of failing the problem."""
