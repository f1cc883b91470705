"""An instruct model as a step judge: asked, ProcessBench-style, for the earliest wrong step.

ProcessBench (arXiv 2412.06559) evaluates critics by showing a problem and a solution split into
indexed paragraphs and asking for the index of the earliest paragraph with an error, -1 when there
is none, in ``\\boxed{}``. ``CriticJudge`` asks any backend's model that question (greedy, one
answer) and turns the index into the step scores the consensus filter reads:

    index = k   ->  scores [1, ..., 1, 0, ..., 0]   (steps 0..k-1 right, step k the first error)
    index = -1  ->  scores [1, ..., 1]
    no usable index (no \\boxed{}, not an integer, out of range) -> scores [nan, ...]: no verdict

so it has the step scorer interface (``async score(question, steps) -> [P(step correct)]``) of a
PRM and of the exact arithmetic checker.
"""

from __future__ import annotations

import math
import re

from amcs.backends.base import Backend, SamplingParams
from amcs.prompts import prompt_ids

CRITIC_TEMPLATE = (
    "Below is a math problem and a solution split into numbered paragraphs (numbered from 0).\n\n"
    "[Problem]\n\n{question}\n\n[Solution]\n\n{paragraphs}\n\n"
    "Check the solution one paragraph at a time. If a paragraph contains an error, give the "
    "number of the earliest paragraph with an error; if every paragraph is correct, give -1. "
    "Put the number in \\boxed{{}}."
)
_BOXED_INT = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def critic_question(question: str, steps: list[str]) -> str:
    """The text the critic is asked: the problem and the steps as numbered paragraphs."""
    paragraphs = "\n\n".join(
        f"<paragraph_{i}>\n{step.strip()}\n</paragraph_{i}>" for i, step in enumerate(steps)
    )
    return CRITIC_TEMPLATE.format(question=question.strip(), paragraphs=paragraphs)


def parse_index(text: str, n_steps: int) -> int | None:
    """The critic's answer: the integer in its last ``\\boxed{}``, when it is -1 or a step index;
    else None."""
    found = _BOXED_INT.findall(text)
    if not found:
        return None
    index = int(found[-1])
    return index if -1 <= index < n_steps else None


def index_scores(index: int | None, n_steps: int) -> list[float]:
    """Step scores for a first-error index (module docstring)."""
    if index is None:
        return [math.nan] * n_steps
    if index < 0:
        return [1.0] * n_steps
    return [1.0] * index + [0.0] * (n_steps - index)


class CriticJudge:
    """Any backend's (instruct) model as a step judge; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_new_tokens: int = 1024,
        system_prompt: str | None = None,
        chat: bool | None = None,
    ) -> None:
        self.backend = backend
        self.params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, seed=0)
        self.system_prompt = system_prompt
        self.chat = chat
        self.answers = 0
        self.unusable = 0  # answers without a usable index

    async def score(self, question: str, steps: list[str]) -> list[float]:
        ids = prompt_ids(
            self.backend.tokenizer,
            critic_question(question, steps),
            system_prompt=self.system_prompt,
            chat=self.chat,
        )
        try:
            (answer,) = await self.backend.sample(ids, 1, self.params)
        except ValueError:  # this request's own problem (e.g. longer than the context)
            answer = None
        index = parse_index(answer.text, len(steps)) if answer is not None else None
        self.answers += 1
        self.unusable += index is None
        return index_scores(index, len(steps))

    async def aclose(self) -> None:
        await self.backend.aclose()
