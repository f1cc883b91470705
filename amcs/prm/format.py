"""What a PRM input format is: the base class the formats of :mod:`amcs.prm.registry` derive from,
and what they share (single-token lookup, step markers, strict weight loading).

A format knows four things about a family of checkpoints:

- ``detect``: whether a checkpoint's files look like one of its own (a score, 0 for no; a more
  specific match scores higher), and ``clue``: what it looked for, for the error when nothing fits;
- ``encode``: the token ids of (question, steps) and the position whose logits score each step;
- ``pick_scores``: P(step correct) from the logits at those positions (``prepare`` may first
  adjust the model's inputs and say where the positions land in its output);
- ``load``: the model, and the scorer options its checkpoint sets (e.g. the separator).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import torch


@dataclass
class Encoded:
    """One sequence to score: its ids, the position of each step's score, and extra
    per-token inputs for step-input models (amcs.step_features.STEP_INPUTS)."""

    ids: list[int]
    positions: list[int]
    extra: dict[str, list[int]]


@dataclass(frozen=True)
class FormatOptions:
    """How a scorer builds its inputs; each format reads the options it needs.

    ``separator``: text after each step (token-cls); ``step_inputs``: the model reads the policy's
    view of each step (token-cls, amcs.step_features); ``step_tag``, ``good_token``,
    ``bad_token``: step-tag's marker and its P(good) tokens; ``system_prompt``: qwen-prm's chat."""

    separator: str
    step_inputs: bool
    step_tag: str
    good_token: str
    bad_token: str
    system_prompt: str | None


@dataclass
class CheckpointFiles:
    """What format detection reads from a checkpoint directory: its config.json and tokenizer."""

    path: Path
    config: dict
    tokenizer: object
    step_tag: str

    @cached_property
    def architectures(self) -> list[str]:
        return [a for a in self.config.get("architectures") or [] if a]

    @property
    def architecture(self) -> str:
        return self.architectures[0] if self.architectures else ""

    @cached_property
    def num_labels(self) -> int:
        """The label count (transformers leaves out the default of 2 labels)."""
        if isinstance(self.config.get("id2label"), dict):
            return len(self.config["id2label"])
        return int(self.config.get("num_labels", 2))

    @property
    def two_label_classifier(self) -> bool:
        return self.architecture.endswith("ForTokenClassification") and self.num_labels == 2

    def has_token(self, text: str) -> bool:
        return token_id(self.tokenizer, text) is not None


def read_model_config(path: Path) -> dict:
    """A checkpoint's config.json."""
    return json.loads((path / "config.json").read_text())


class PRMFormat:
    """One PRM input format (see the module docstring); one instance per scorer."""

    name: ClassVar[str]
    # A file only this format's checkpoints have: its presence decides detection at once.
    own_file: ClassVar[str | None] = None
    # Whether models of this format may read the step inputs of amcs.step_features.
    takes_step_inputs: ClassVar[bool] = False

    def __init__(self, model, tokenizer, options: FormatOptions) -> None:
        if options.step_inputs and not self.takes_step_inputs:
            raise ValueError("step inputs go with token-classification PRMs only")
        self.tokenizer = tokenizer
        self.options = options

    @classmethod
    def detect(cls, files: CheckpointFiles) -> int:
        """How well ``files`` match this format: 0 not at all, higher for a more specific match."""
        raise NotImplementedError

    @classmethod
    def clue(cls, files: CheckpointFiles) -> str:
        """What detection found of this format's signs, for the error when no format fits."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, dtype: torch.dtype | None) -> tuple[torch.nn.Module, dict]:
        """The model of the checkpoint at ``path`` and the FormatOptions fields it sets."""
        raise NotImplementedError

    def encode(self, question: str, steps: list[str]) -> Encoded:
        raise NotImplementedError

    def prepare(self, batch: list[Encoded], inputs: dict) -> list[list[int]]:
        """Adjust the model's ``inputs`` for ``batch`` in place; where each row's step positions
        sit in the output's sequence dimension (by default: the positions themselves)."""
        return [e.positions for e in batch]

    def pick_scores(self, picked: torch.Tensor) -> torch.Tensor:
        """P(step correct) per step from the (steps, labels) float logits at its positions:
        softmax(logits)[:, 1] (label 1 = step correct)."""
        return picked.softmax(-1)[:, 1]


class MarkerFormat(PRMFormat):
    """A format that writes a marker token after each step and scores the step at the marker."""

    # What the marker is called in errors.
    marker_role: ClassVar[str] = "step marker"

    def __init__(self, model, tokenizer, options: FormatOptions) -> None:
        super().__init__(model, tokenizer, options)
        self.marker_id = required_token_id(tokenizer, self.marker, self.marker_role)

    @property
    def marker(self) -> str:
        raise NotImplementedError

    def token_ids(self, question: str, steps: list[str]) -> list[int]:
        """The ids of the whole text, a marker after each step."""
        raise NotImplementedError

    def encode(self, question: str, steps: list[str]) -> Encoded:
        ids = self.token_ids(question, steps)
        positions = [i for i, token in enumerate(ids) if token == self.marker_id]
        if len(positions) != len(steps):
            raise ValueError(
                f"found {len(positions)} {self.marker!r} tokens for {len(steps)} steps: the "
                f"question or a step contains the marker, or it does not tokenize to the "
                f"same token inside the text"
            )
        return Encoded(ids, positions, {})


def token_id(tokenizer, text: str) -> int | None:
    """The id of ``text`` when it encodes (without special tokens) to one token, else None.

    A leading token that decodes to only whitespace is ignored (sentencepiece tokenizers may put
    a lone prefix-space piece first); the unknown token does not count."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) > 1 and not tokenizer.decode(ids[:1]).strip():
        ids = ids[1:]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    return ids[0]


def required_token_id(tokenizer, text: str, role: str) -> int:
    found = token_id(tokenizer, text)
    if found is None:
        raise ValueError(f"the {role} {text!r} is not a single token in the PRM's vocabulary")
    return found


@contextlib.contextmanager
def _held_load_report():
    """Hold back what transformers logs while a checkpoint loads (its load report, a warning
    several lines long), yielding the held records: a refused checkpoint then ends in one error
    line, and a kept one gets its report shown as before (:func:`load_trained`)."""
    logger = logging.getLogger("transformers.modeling_utils")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)


def load_trained(loader, path: Path, prm_format: str, **kwargs):
    """``loader.from_pretrained(path)``, refused (ValueError) when the checkpoint lacks weights
    the model needs: transformers would initialise them at random (a policy or base model loaded
    as a classifier gets a random score head) and every score would be noise, with exit code 0.
    The loader's own missing-keys report decides, so the model loads once."""
    from amcs.prm.registry import FORMATS  # the registry imports the formats, which use this

    with _held_load_report() as held:
        model, info = loader.from_pretrained(str(path), output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise ValueError(
            f"cannot use {path} as a {prm_format} PRM: its checkpoint has no trained weights for "
            f"{shown} (a policy or base model, not a PRM?); train one with amcs train, or pass "
            f"the --prm-format it was trained for (one of {', '.join(FORMATS)})"
        )
    logger = logging.getLogger("transformers.modeling_utils")
    for record in held:
        logger.handle(record)
    return model
