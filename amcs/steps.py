"""Splitting a completion into steps on token boundaries.

A step ends at the token that completes the separator ("\\n\\n" by default), and keeps that token,
so a node's prefix is always the model's own ids: prompt ids + the ids of its steps, never text
tokenised again. The last step is whatever follows the last separator.
"""

from __future__ import annotations

from functools import lru_cache

DEFAULT_SEPARATOR = "\n\n"


class StepSplitter:
    """Splits token ids into steps for one tokenizer; decoded token pieces are cached."""

    def __init__(self, tokenizer, separator: str = DEFAULT_SEPARATOR) -> None:
        self.tokenizer = tokenizer
        self.separator = separator
        self._piece = lru_cache(maxsize=None)(lambda i: tokenizer.decode([i]))

    def split(self, token_ids: list[int]) -> list[list[int]]:
        """Steps of a completion: each a list of ids, all but the last ending in the separator."""
        steps: list[list[int]] = []
        current: list[int] = []
        tail = ""  # text of the current step, enough of it to see a separator form
        keep = len(self.separator) + 8
        for tok in token_ids:
            current.append(tok)
            tail = (tail + self._piece(tok))[-keep:]
            if self.separator in tail:
                steps.append(current)
                current, tail = [], ""
        if current and self.tokenizer.decode(current).strip():
            steps.append(current)
        return steps

    def text(self, step_ids: list[int]) -> str:
        """A step's text for labels and files: the separator and outer whitespace removed."""
        return self.tokenizer.decode(step_ids).strip()


def split_steps(text: str, separator: str = DEFAULT_SEPARATOR) -> list[str]:
    """The steps of a solution text: split on the separator, stripped, empty pieces dropped.
    (For text that is only read, e.g. to score or check it; prefixes to extend stay token ids.)"""
    return [s.strip() for s in text.split(separator) if s.strip()]
