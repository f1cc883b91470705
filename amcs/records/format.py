"""What the files of ``amcs generate`` hold: their names, the shape of a data line and of a meta
line, and the errors for files that cannot be written, resumed or read (the package docstring
describes the files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATUSES = ("ok", "failed")
# Keys a path dict passed to write_problem must carry; prompt, policy_prompt, problem_id and answer
# come from write_problem's own arguments so every line of a problem agrees on them.
PATH_KEYS = ("completions", "labels", "values", "rollouts", "method", "model")
META_FORMAT = "amcs-meta"
META_VERSION = 1
HOW_TO_PROCEED = "pass --no-resume --overwrite to replace it, or choose another --out"


class OutputError(Exception):
    """The output cannot be written or resumed as asked; the message says why and what to do."""


class OutputExistsError(OutputError):
    """The output file exists and the run was told neither to resume nor to overwrite it."""


class OutputLockedError(OutputError):
    """Another process holds the output's lock."""


class OutputMismatchError(OutputError):
    """Resume found files it cannot prove it wrote (or wrote with another configuration)."""


class RecordFormatError(ValueError):
    """A data or meta file that cannot be read; the message names the file and line."""


def meta_path_for(data_path: str | Path) -> Path:
    """data.jsonl -> data.meta.jsonl (other names get .meta.jsonl appended)."""
    data_path = Path(data_path)
    if data_path.name.endswith(".jsonl"):
        return data_path.with_name(data_path.name[: -len(".jsonl")] + ".meta.jsonl")
    return data_path.with_name(data_path.name + ".meta.jsonl")


def lock_path_for(data_path: str | Path) -> Path:
    """data.jsonl -> data.jsonl.lock, the file whose flock refuses a second writer."""
    data_path = Path(data_path)
    return data_path.with_name(data_path.name + ".lock")


def dump_line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def check_meta(record: Any) -> str | None:
    """What is wrong with a parsed meta line, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("problem_id"), str):
        return "problem_id missing or not a string"
    if record.get("status") not in STATUSES:
        return f"status must be one of {STATUSES}"
    for key in ("paths", "data_end"):
        if not isinstance(record.get(key), int) or record[key] < 0:
            return f"{key} missing or not a non-negative integer"
    return None


def is_header(record: Any) -> bool:
    return isinstance(record, dict) and record.get("format") == META_FORMAT


def is_data_row(record: Any) -> bool:
    """Whether a parsed line has what every reader of data lines relies on (``data_row_problem``
    finds nothing wrong)."""
    return data_row_problem(record) is None


def data_row_problem(record: Any) -> str | None:
    """What is wrong with a parsed data line, or None: it needs prompt (a string), completions
    and labels lists of equal length, labels booleans or 0/1, and ``values``, when present, MC
    values in [0, 1] or null (``values_problem``)."""
    if not (
        isinstance(record, dict)
        and isinstance(record.get("prompt"), str)
        and isinstance(record.get("completions"), list)
        and isinstance(record.get("labels"), list)
        and len(record["completions"]) == len(record["labels"])
    ):
        return "expected an object with prompt, and completions and labels lists of equal length"
    for i, label in enumerate(record["labels"], 1):
        # "false", null or NaN would be truthy or falsy, silently: only booleans and 0/1 are labels.
        if not (isinstance(label, bool) or label in (0, 1)):
            return f"labels must be booleans (or 0/1), label {i} is {label!r}"
    return values_problem(record.get("values"), len(record["completions"]))


def values_problem(values: Any, steps: int) -> str | None:
    """What is wrong with a data line's ``values`` (``steps`` long), or None (also when absent).

    A value is a Monte-Carlo estimate, a fraction of rollouts: a number in [0, 1], or null where
    it was not measured. NaN and infinities (JSON's non-standard ``NaN`` / ``Infinity``, which
    Python's json module parses) and numbers outside [0, 1] are refused: hard labels derived
    from them (``NaN > threshold`` is false) would be wrong without a word.
    """
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != steps:
        return "values must be a list of numbers as long as completions"
    for i, value in enumerate(values, 1):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            shown = json.dumps(value)  # as the file spells it: NaN, Infinity, 7.0, "0.5"
            return f"values must be MC values in [0, 1] or null, value {i} is {shown[:40]}"
    return None
