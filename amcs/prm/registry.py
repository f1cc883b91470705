"""The PRM input formats by name, and detection of a checkpoint's format.

Adding a format is one class (a module beside this one, deriving from
:class:`amcs.prm.format.PRMFormat`) and one line in ``FORMATS``.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from amcs.prm.format import CheckpointFiles, PRMFormat, read_model_config
from amcs.prm.qwen_prm import QwenPRM
from amcs.prm.step_tag import DEFAULT_STEP_TAG, StepTag
from amcs.prm.token_cls import TokenClassification

FORMATS: dict[str, type[PRMFormat]] = {
    TokenClassification.name: TokenClassification,
    StepTag.name: StepTag,
    QwenPRM.name: QwenPRM,
}
PRM_FORMATS = tuple(FORMATS)


def format_named(name: str) -> type[PRMFormat]:
    """The format class called ``name``; ValueError naming the known ones otherwise."""
    if name not in FORMATS:
        raise ValueError(f"unknown PRM format {name!r}; expected one of {tuple(FORMATS)}")
    return FORMATS[name]


def detect_prm_format(path: str | Path, *, step_tag: str = DEFAULT_STEP_TAG) -> str:
    """Guess a checkpoint's PRM format from its files: a format's own file (``amcs_prm.json``)
    decides at once; otherwise every format scores the config.json and tokenizer
    (:meth:`PRMFormat.detect`) and the most specific match wins.

    Raises ValueError, naming the path, when the directory matches none of the formats."""
    path = Path(path)
    hint = f"pass --prm-format (one of {', '.join(FORMATS)})"
    for name, format_class in FORMATS.items():
        if format_class.own_file and (path / format_class.own_file).is_file():
            return name
    if not (path / "config.json").is_file():
        raise ValueError(f"cannot tell the PRM format of {path}: no config.json there; {hint}")
    config = read_model_config(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means we cannot tell
        raise ValueError(f"cannot tell the PRM format of {path}: {exc}; {hint}") from exc
    files = CheckpointFiles(path, config, tokenizer, step_tag)
    scores = {name: format_class.detect(files) for name, format_class in FORMATS.items()}
    best = max(scores, key=lambda name: scores[name])  # the first of the best, in FORMATS order
    if scores[best] > 0:
        return best
    clues = ", ".join(format_class.clue(files) for format_class in FORMATS.values())
    raise ValueError(
        f"cannot tell the PRM format of {path}: architecture {files.architecture or 'unknown'!r} "
        f"with {files.num_labels} labels, {clues}; {hint}"
    )
