"""PRM training data from several formats, in one in-memory form.

Every loader returns TRL's stepwise-supervision rows ``{"prompt": str, "completions": [str],
"labels": [bool]}``, plus ``"values": [float]`` (soft Monte-Carlo values) where the source has
them. Other keys of the source are dropped.

Formats (``fmt``; ``auto`` picks one from the keys of the first row):

- ``trl`` / ``amcs``: TRL's format and ``amcs generate`` data files (``amcs.records``);
  labels may be bools or 0/1, ``values`` is kept when present.
- ``shepherd``: Math-Shepherd, ``{"input": "<question> Step 1: <step> ки\\nStep 2: <step> ки",
  "label": <input with each "ки" replaced by + or ->}``. The question is the text before the first
  "Step 1:" less the one separating space; steps lose their "Step N:" prefix and surrounding
  whitespace. This inverts ``amcs.export``'s shepherd export exactly (for stripped steps).
- ``prm800k``: OpenAI's PRM800K phase 1/2 labels. One row per labelled sample, following the path
  the labeller took: at each step the chosen completion, else the human completion (positive
  unless it carries a rating), else the first completion; a step with no text or an unrated model
  completion ends the row. Rating 1 is positive, -1 negative, 0 (neutral) positive when
  ``neutral_is_positive`` (default) else negative. The row ends after its first negative step.
  Samples that yield no step are skipped.

A source that is not an existing file is taken as a Hugging Face dataset name and loaded with
``datasets.load_dataset(name, split="train")`` (from the local cache when the hub cannot be
reached); its rows go through the same converters. A missing source that ends in .jsonl/.json or
looks like a local path (``amcs.hub.looks_like_local_path``) is a "no such file" error.

An ``amcs generate`` data file with its meta file beside it is read only as far as the meta file
says problems were committed: the data of a problem still running (or killed) is left out.

Input is checked row by row, and every error is a PRMDataError whose message names the file and
line: a line that is not UTF-8 or not JSON, labels that are not booleans or 0/1 (the string
"false" and null are errors, never truthy or falsy), values that are not MC values in [0, 1] or
null (NaN and Infinity, which Python's json module parses, included), completions that are not
strings, lengths that differ. ``amcs export`` reads a run's data through the same checks.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from amcs.hub import HubDatasetError, load_hub_dataset, looks_like_local_path
from amcs.jsonl import JSONLinesError, read_json_lines
from amcs.records import RecordFormatError, committed_end, meta_path_for, values_problem

FORMATS = ("auto", "trl", "amcs", "shepherd", "prm800k")
SHEPHERD_TAG = "ки"  # Math-Shepherd's step tag, replaced by + or - in the label
_STEP_PREFIX = re.compile(r"^\s*Step\s*\d+\s*:")
_FIRST_STEP = re.compile(r"Step\s*1\s*:")
log = logging.getLogger(__name__)


class PRMDataError(RecordFormatError):
    """Input that cannot be read as PRM data; the message names the file and line."""


def load_prm_rows(
    source: str | Path, fmt: str = "auto", *, neutral_is_positive: bool = True
) -> list[dict]:
    """Rows of ``source`` (a JSONL file or a Hugging Face dataset name) in TRL's PRM form."""
    return [row for _, row in iter_prm_rows(source, fmt, neutral_is_positive=neutral_is_positive)]


def iter_prm_rows(
    source: str | Path,
    fmt: str = "auto",
    *,
    neutral_is_positive: bool = True,
    keep: tuple[str, ...] = (),
) -> Iterator[tuple[str, dict]]:
    """(location, row) for each row of ``source``, checked and converted as ``load_prm_rows``
    does; the location is ``FILE:LINE`` (or ``NAME[train]:INDEX``) for messages about the row.
    The source keys named in ``keep`` (e.g. an amcs line's problem_id, answer, model) are copied
    into the row where present.

    Every problem with the input is a PRMDataError (a ValueError) naming the file and line, or
    the source when it cannot be opened at all.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown PRM data format {fmt!r}: choose one of {', '.join(FORMATS)}")
    records = _open_source(source)
    convert = None
    for where, record in records:
        if not isinstance(record, dict):
            raise PRMDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if convert is None:
            convert = _CONVERTERS[detect_format(record, where) if fmt == "auto" else fmt]
        row = convert(record, where, neutral_is_positive)
        if row is not None:
            yield where, row | {k: record[k] for k in keep if k in record}


def _open_source(source: str | Path) -> Iterator[tuple[str, Any]]:
    """(location, record) pairs of a local JSONL file or a hub dataset, see the module docstring."""
    path = Path(source).expanduser()
    if path.is_dir():
        raise PRMDataError(f"{source}: is a directory, not a data file")
    if path.exists():
        return _read_jsonl(path, _committed_end(path))
    name = str(source)
    if path.suffix in (".jsonl", ".json") or looks_like_local_path(name):
        raise PRMDataError(f"{source}: no such file")
    try:
        dataset = load_hub_dataset(name, "train")
    except HubDatasetError as exc:
        raise PRMDataError(str(exc)) from None
    return ((f"{name}[train]:{i}", row) for i, row in enumerate(dataset))


def detect_format(record: dict, where: str = "<row>") -> str:
    """The format of one row, from its keys: trl, amcs, shepherd or prm800k."""
    keys = set(record)
    if {"prompt", "completions", "labels"} <= keys:
        return "amcs" if "values" in keys or "rollouts" in keys else "trl"
    if {"input", "label"} <= keys:
        return "shepherd"
    if isinstance(record.get("question"), dict) and isinstance(record.get("label"), dict):
        return "prm800k"
    hint = ""
    if "data_end" in keys or "fingerprint" in keys:  # a problem record, or the run header
        hint = " (this looks like an amcs .meta.jsonl file: pass the data file instead)"
    elif "reasoning_steps" in keys:
        hint = " (math-aps / tree files are not PRM step data)"
    raise PRMDataError(
        f"{where}: cannot tell the format from keys {sorted(keys)}{hint}; expected trl/amcs "
        "(prompt, completions, labels), shepherd (input, label) or prm800k (question, label)"
    )


def write_trl(rows: Iterable[dict], path: str | Path) -> int:
    """Write rows as TRL JSONL (prompt, completions, labels, and values where present)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            out = {k: row[k] for k in ("prompt", "completions", "labels")}
            if row.get("values") is not None:
                out["values"] = row["values"]
            f.write(json.dumps(out, ensure_ascii=False) + "\n")
            count += 1
    return count


def _committed_end(path: Path) -> int | None:
    """Where the committed part of an ``amcs generate`` data file ends, or None (read it all).

    A data file with a meta file beside it is read only up to the largest ``data_end`` in the
    meta file: anything after that is data of a problem whose meta line is not written yet (a run
    in progress, or killed mid-problem; resume truncates it), possibly with a torn last line.
    """
    try:
        end = committed_end(path)
    except OSError as exc:
        raise PRMDataError(f"{meta_path_for(path)}: cannot read ({exc.strerror or exc})") from None
    except RecordFormatError as exc:
        raise PRMDataError(str(exc)) from None
    if end is None:
        return None
    size = path.stat().st_size
    if size > end:
        log.warning(
            "%s: reading the %d bytes committed in %s; the %d bytes after them belong to a "
            "problem not finished (a run in progress, or killed) and are left out",
            path,
            end,
            meta_path_for(path).name,
            size - end,
        )
    return end


def _read_jsonl(path: Path, end: int | None = None) -> Iterator[tuple[str, Any]]:
    try:
        for line_no, record in read_json_lines(path, end):
            yield f"{path}:{line_no}", record
    except JSONLinesError as exc:
        raise PRMDataError(str(exc)) from None
    except OSError as exc:
        raise PRMDataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _trl_row(record: dict, where: str, _neutral: bool) -> dict:
    prompt, completions, labels = (record.get(k) for k in ("prompt", "completions", "labels"))
    if not isinstance(prompt, str):
        raise PRMDataError(f"{where}: prompt missing or not a string")
    if not isinstance(completions, list):
        raise PRMDataError(f"{where}: completions missing or not a list of strings")
    for i, step in enumerate(completions, 1):
        if not isinstance(step, str):
            raise PRMDataError(
                f"{where}: completions must be a list of strings, step {i} is {step!r}"
            )
    if not isinstance(labels, list) or len(labels) != len(completions):
        raise PRMDataError(f"{where}: labels must be a list as long as completions")
    for i, label in enumerate(labels, 1):
        # "false" or null would be truthy or falsy, silently: only booleans and 0/1 are labels.
        if not (isinstance(label, bool) or label in (0, 1)):
            raise PRMDataError(f"{where}: labels must be booleans (or 0/1), label {i} is {label!r}")
    row = {"prompt": prompt, "completions": completions, "labels": [bool(x) for x in labels]}
    values = record.get("values")
    if values is not None:
        # NaN, infinities and numbers outside [0, 1] are refused here, for hard and soft training
        # and export alike: a NaN value would become a "-" label without a word.
        problem = values_problem(values, len(completions))
        if problem is not None:
            raise PRMDataError(f"{where}: {problem}")
        row["values"] = [None if v is None else float(v) for v in values]  # None: not measured
    return row


def _shepherd_row(record: dict, where: str, _neutral: bool) -> dict:
    text, label = record.get("input"), record.get("label")
    if not isinstance(text, str) or not isinstance(label, str):
        raise PRMDataError(f"{where}: shepherd rows need string input and label")
    parts = text.split(SHEPHERD_TAG)
    if len(parts) < 2 or parts[-1].strip():
        raise PRMDataError(
            f"{where}: shepherd input must end with a {SHEPHERD_TAG!r} tag after each step"
        )
    labels, pos = [], 0
    for part in parts[:-1]:
        tag = label[pos + len(part) : pos + len(part) + 1]
        if label[pos : pos + len(part)] != part or tag not in ("+", "-"):
            raise PRMDataError(
                f"{where}: label does not match input with each {SHEPHERD_TAG!r} "
                f"replaced by + or - (step {len(labels) + 1})"
            )
        labels.append(tag == "+")
        pos += len(part) + 1
    if label[pos:] != parts[-1]:
        raise PRMDataError(f"{where}: label and input differ after the last tag")
    first = _FIRST_STEP.search(parts[0])
    if first is None:
        raise PRMDataError(f"{where}: no 'Step 1:' after the question in shepherd input")
    question = parts[0][: first.start()]
    question = question[:-1] if question.endswith(" ") else question
    steps = [parts[0][first.end() :].strip()]
    for part in parts[1:-1]:
        steps.append(_STEP_PREFIX.sub("", part, count=1).strip())
    return {"prompt": question, "completions": steps, "labels": labels}


def _prm800k_row(record: dict, where: str, neutral_is_positive: bool) -> dict | None:
    question, label = record.get("question"), record.get("label")
    if not isinstance(question, dict) or not isinstance(question.get("problem"), str):
        raise PRMDataError(f"{where}: prm800k rows need question.problem")
    if not isinstance(label, dict) or not isinstance(label.get("steps"), list):
        raise PRMDataError(f"{where}: prm800k rows need label.steps")
    completions: list[str] = []
    labels: list[bool] = []
    for i, step in enumerate(label["steps"], 1):
        if not isinstance(step, dict):
            raise PRMDataError(f"{where}: label.steps[{i - 1}] is not an object")
        options = step.get("completions") or []
        chosen, human = step.get("chosen_completion"), step.get("human_completion")
        if chosen is not None:
            if not isinstance(chosen, int) or not 0 <= chosen < len(options):
                raise PRMDataError(
                    f"{where}: step {i}: chosen_completion {chosen!r} is not an index "
                    f"into its {len(options)} completions"
                )
            pick, rating = options[chosen], options[chosen].get("rating")
        elif human is not None:
            pick = human
            rating = human.get("rating")
            rating = 1 if rating is None else rating  # human-written steps are unrated: good
        elif options:
            pick, rating = options[0], options[0].get("rating")
        else:
            break
        if rating is None:
            break  # an unrated model step: nothing to learn from here on
        if rating not in (-1, 0, 1) or not isinstance(pick.get("text"), str):
            raise PRMDataError(f"{where}: step {i}: need a text and a rating in -1, 0, 1")
        good = rating == 1 or (rating == 0 and neutral_is_positive)
        completions.append(pick["text"])
        labels.append(good)
        if not good:
            break
    if not completions:
        return None
    return {"prompt": question["problem"], "completions": completions, "labels": labels}


_CONVERTERS = {
    "trl": _trl_row,
    "amcs": _trl_row,
    "shepherd": _shepherd_row,
    "prm800k": _prm800k_row,
}
