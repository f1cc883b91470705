"""Splitting a completion into steps on token boundaries, and the rules that shape a step.

A completion is first cut into *pieces*: a piece ends at the token that completes the separator
("\\n\\n" by default) and keeps that token, so a node's prefix is always the model's own ids:
prompt ids + the ids of its steps, never text tokenised again. The pieces then become steps by
:func:`group_pieces`, one rule set shared by the token splitter (:class:`StepSplitter`) and the
text splitter (:func:`split_steps`):

1. a blank piece (only whitespace once its separator is taken out, e.g. the second "\\n" of a
   blank line when the separator is "\\n") joins the step before it; at the very start it joins
   the next one. No step is empty.
2. ``min_step_chars``: a step whose text (its pieces stripped, concatenated) is shorter than this
   takes in the next piece, so a heading line ("Step 1:", "1.") joins the line it heads; a short
   last step joins the step before it.
3. ``max_solution_steps`` (0 = no cap): everything after step ``max_solution_steps - 1`` is the
   last step.

A real instruct model's numbered list with separator "\\n" and a small ``min_step_chars`` gives
one step per item. A step ends at the token in which the separator completes: a token that went
on past the separator would carry that text into the step it ends, while the text splitter puts
it in the next step. SmolLM2's tokenizer has no such token for a newline separator (its
pre-tokenizer splits whitespace from the text that follows, so a token with "\\n" holds at most
more whitespace: tests/test_steps.py checks its whole vocabulary); the two splitters then give
the same steps.

A separator from a recipe or the command line may be written with escapes: ``\\n``, ``\\t``,
``\\r`` and ``\\\\`` are decoded (:func:`parse_separator`), so ``--set 'separator=\\n'``, a
recipe's ``separator: '\\n'`` and ``separator: "\\n"`` are the same newline.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from amcs.fields import ConfigError

DEFAULT_SEPARATOR = "\n\n"

# Backslash escapes a separator may be written with, and what each means.
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
# Control characters a separator may hold: the whitespace the escapes write.
_ALLOWED_CONTROLS = set("\n\t\r")


def decode_escapes(text: str) -> str:
    """``text`` with ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` decoded; any other backslash stays."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ESCAPES:
            out.append(ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def check_separator(value: Any, key: str = "separator") -> str:
    """``value`` if it can end a step: a non-empty string of printable text or whitespace
    (newline, tab, carriage return); else a ConfigError naming ``key``."""
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if not value:
        raise ConfigError(f"{key} must not be empty (write a newline as \\n)")
    bad = [c for c in value if c not in _ALLOWED_CONTROLS and unicodedata.category(c)[0] == "C"]
    if bad:
        raise ConfigError(
            f"{key} must be printable text or whitespace (\\n, \\t), got {value!r} "
            f"(it holds U+{ord(bad[0]):04X})"
        )
    return value


def parse_separator(value: Any, key: str = "separator") -> str:
    """A separator as a recipe or the command line gives it: escapes decoded
    (:func:`decode_escapes`), then checked (:func:`check_separator`)."""
    if isinstance(value, str):
        value = decode_escapes(value)
    return check_separator(value, key)


def check_step_rules(min_step_chars: Any, max_solution_steps: Any) -> None:
    """ConfigError unless both are integers >= 0 (for configs without ``option()`` ranges)."""
    for key, value in (
        ("min_step_chars", min_step_chars),
        ("max_solution_steps", max_solution_steps),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{key} must be an integer >= 0, got {value!r}")


def step_rules(config: Any) -> dict[str, Any]:
    """The splitting options of any config that has them (search, verification), as keyword
    arguments of :class:`StepSplitter` and :func:`split_steps`."""
    return {
        "separator": config.separator,
        "min_step_chars": getattr(config, "min_step_chars", 0),
        "max_solution_steps": getattr(config, "max_solution_steps", 0),
    }


def group_pieces(
    texts: Sequence[str], min_step_chars: int = 0, max_solution_steps: int = 0
) -> list[tuple[int, int]]:
    """Which consecutive pieces make each step: ``[start, end)`` index ranges, in order, that
    cover every piece (rules 1-3 of the module docstring). ``texts``: each piece's text without
    the separator that ends it. Pieces that are all blank make no step (``[]``).

    The length of a step is ``len("".join(t.strip() for t in its pieces))``."""
    need = max(min_step_chars, 1)  # a blank step is never one on its own
    steps: list[list[int]] = []  # [start, end] of each step
    start, length = None, 0  # the step being gathered
    for i, text in enumerate(texts):
        size = len(text.strip())
        if start is None:
            if size == 0 and steps:  # rule 1: a blank piece joins the step before it
                steps[-1][1] = i + 1
                continue
            start, length = i, 0
        length += size
        if length >= need:  # rule 2: long enough to stand on its own
            steps.append([start, i + 1])
            start = None
    if start is not None:  # a short (or blank) tail
        if steps:
            steps[-1][1] = len(texts)
        elif length:
            steps.append([start, len(texts)])
    if max_solution_steps and len(steps) > max_solution_steps:  # rule 3
        steps[max_solution_steps - 1][1] = len(texts)
        del steps[max_solution_steps:]
    return [(s, e) for s, e in steps]


class StepSplitter:
    """Splits token ids into steps for one tokenizer; decoded token pieces are cached."""

    def __init__(
        self,
        tokenizer,
        separator: str = DEFAULT_SEPARATOR,
        *,
        min_step_chars: int = 0,
        max_solution_steps: int = 0,
    ) -> None:
        check_separator(separator)
        check_step_rules(min_step_chars, max_solution_steps)
        self.tokenizer = tokenizer
        self.separator = separator
        self.min_step_chars = min_step_chars
        self.max_solution_steps = max_solution_steps
        self._piece = lru_cache(maxsize=None)(lambda i: tokenizer.decode([i]))

    @classmethod
    def for_config(cls, tokenizer, config) -> StepSplitter:
        """The splitter a config asks for (its separator, min_step_chars, max_solution_steps)."""
        return cls(tokenizer, **step_rules(config))

    def pieces(self, token_ids: list[int]) -> list[list[int]]:
        """The ids cut after each token that completes the separator (the last piece is what
        follows the last separator); every id is in exactly one piece."""
        pieces: list[list[int]] = []
        current: list[int] = []
        tail = ""  # text of the current piece, enough of it to see a separator form
        keep = len(self.separator) + 8
        for tok in token_ids:
            current.append(tok)
            tail = (tail + self._piece(tok))[-keep:]
            if self.separator in tail:
                pieces.append(current)
                current, tail = [], ""
        if current:
            pieces.append(current)
        return pieces

    def split(self, token_ids: list[int]) -> list[list[int]]:
        """Steps of a completion: each a list of the model's own ids (pieces joined, never
        re-tokenised), all but the last ending in the separator (or blank text after it). A
        completion that is only whitespace has no steps."""
        pieces = self.pieces(token_ids)
        texts = [self._without_separator(self.tokenizer.decode(p)) for p in pieces]
        groups = group_pieces(texts, self.min_step_chars, self.max_solution_steps)
        return [[t for piece in pieces[s:e] for t in piece] for s, e in groups]

    def _without_separator(self, text: str) -> str:
        """A piece's text as the rules see it: the separator that ends it taken out."""
        head, sep, tail = text.rpartition(self.separator)
        return head + tail if sep else text

    def text(self, step_ids: list[int]) -> str:
        """A step's text for labels and files: the separator and outer whitespace removed."""
        return self.tokenizer.decode(step_ids).strip()


def split_steps(
    text: str,
    separator: str = DEFAULT_SEPARATOR,
    *,
    min_step_chars: int = 0,
    max_solution_steps: int = 0,
) -> list[str]:
    """The steps of a solution text, by the same rules as :class:`StepSplitter`: pieces between
    separators grouped by :func:`group_pieces`, each step its pieces joined by the separator and
    stripped; never an empty step. (For text that is only read, e.g. to score or check it;
    prefixes to extend stay token ids.)"""
    pieces = text.split(separator)
    groups = group_pieces(pieces, min_step_chars, max_solution_steps)
    return [separator.join(pieces[s:e]).strip() for s, e in groups]
