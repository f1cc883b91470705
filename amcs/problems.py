"""Problems: what a search or an evaluation runs on, and where they come from.

A source is a JSONL, JSON or Parquet file, a Hugging Face dataset name (``name``, ``name:split`` or
``name:config:split``, e.g. ``openai/gsm8k:main:test``), or a problem domain's source (``NAME`` or
``NAME:N`` for its first N problems, :mod:`amcs.domains`): the bundled arithmetic domain gives
``arith`` (200 problems), ``arith:N`` and ``arith-heldout:N`` (the held-out set the bundled tiny
models never trained on).
Common field names are mapped: question | problem | query | prompt, and answer | final_answer
(GSM8K's "... #### 42" keeps what follows ``####``).

A problem's id is its record's id field (id | unique_id | problem_id | idx) when it has one, else
``q-`` + the first 12 hex digits of the SHA-256 of the exact question text (:func:`question_id`):
the same question has the same id in every file and every run, so runs over several problem files
train together, and one id never names two questions. A domain's problems keep their own ids.

Bad input fails before any work starts, as one ProblemError line naming the file and line: text
that is not UTF-8, malformed JSON, a missing question or answer, a duplicate id, the same question
twice without id fields (both would get one hashed id), a directory, a corrupt Parquet file, a
source with no problems at all. A missing path is "no such file" when it
ends in .jsonl/.json/.parquet or could not be a hub dataset id (``amcs.hub.looks_like_local_path``);
other names go to the hub, or to the local datasets cache when the hub cannot be reached.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amcs.domains import parse_source
from amcs.domains.arith import ARITH, DEFAULT_COUNT, HELD_OUT_SOURCE
from amcs.hub import HubDatasetError, load_hub_dataset, looks_like_local_path
from amcs.jsonl import JSONLinesError, check_surrogates, decode_utf8, read_json_lines

QUESTION_FIELDS = ("question", "problem", "query", "prompt")
ANSWER_FIELDS = ("answer", "final_answer", "expected_answer", "ground_truth")
ID_FIELDS = ("id", "unique_id", "problem_id", "idx")
QUESTION_ID_PREFIX = "q-"
QUESTION_ID_DIGITS = 12  # 48 bits: a collision is a duplicate-id error, never a silent merge


class ProblemError(ValueError):
    """Bad problem input; the message names the file and line."""


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def question_id(question: str) -> str:
    """The id of a problem without an id field: ``q-`` + the first 12 hex digits of
    sha256(question as UTF-8). The exact text counts: any change to it is another problem."""
    digest = hashlib.sha256(question.encode("utf-8")).hexdigest()
    return QUESTION_ID_PREFIX + digest[:QUESTION_ID_DIGITS]


def arith_problems(
    n: int = DEFAULT_COUNT, seed: int = 0, *, held_out: bool = False
) -> list[Problem]:
    """The bundled arithmetic domain's problems, as ``arith:N`` (``arith-heldout:N`` with
    ``held_out``) loads them; meta carries the expression."""
    return ARITH.problems(HELD_OUT_SOURCE if held_out else ARITH.name, n, seed)


def load_problems(
    source: str | Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
) -> list[Problem]:
    """Load problems from any supported source; see the module docstring.

    With ``limit``, a JSONL or Parquet file is read only as far as its first ``limit`` problems
    (JSONL line by line, Parquet batch by batch), so ``--limit 5`` on a file of a million rows
    takes the time and memory of five: what lies beyond is not read, so not checked either
    (a run extended to more problems checks them then). A JSON file is one document and is read
    whole; a hub dataset is downloaded whole by ``datasets``.

    Raises ProblemError, with one line naming the source (and the line, for a file), for input
    that cannot be used, including a source that holds no problems at all: a run on nothing is a
    mistake, better reported before any model loads.
    """
    text = str(source)
    try:
        domain_source = parse_source(text)
    except ValueError as exc:
        raise ProblemError(str(exc)) from None
    if domain_source is not None:
        domain, name, count = domain_source
        if limit is not None:
            count = min(count, limit)  # a domain's first n problems are the same at any count
        problems = domain.problems(name, count, seed)
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            raise ProblemError(f"{text}: is a directory, not a problem file")
        if path.exists():
            records = _read_records(path, limit)
        elif path.suffix in {".jsonl", ".json", ".parquet"}:
            raise ProblemError(f"{text}: no such file")
        else:
            records = _read_hub_dataset(text)
        problems = _to_problems(records, question_field, answer_field, limit)
    if not problems:
        raise ProblemError(f"no problems in {text}")
    return problems[:limit] if limit is not None else problems


def _read_records(path: Path, limit: int | None = None) -> Iterator[tuple[str, dict]]:
    """(location, record) pairs, read as they are asked for; location is 'file:line' so errors
    can point at the input. ``limit`` sizes Parquet's batches (the first one holds the first
    ``limit`` rows)."""
    try:
        if path.suffix == ".parquet":
            yield from _read_parquet(path, limit)
        elif path.suffix == ".json":
            yield from _read_json(path)
        else:
            for n, record in read_json_lines(path):
                yield f"{path}:{n}", record
    except JSONLinesError as exc:
        raise ProblemError(str(exc)) from None
    except OSError as exc:
        raise ProblemError(f"{path}: cannot read ({exc.strerror or exc})") from None


PARQUET_BATCH_ROWS = 8192  # rows decoded at a time when all of a Parquet file is read
PARQUET_BUFFER_BYTES = 1 << 16


def _read_parquet(path: Path, limit: int | None = None) -> Iterator[tuple[str, dict]]:
    """The rows of a Parquet file, one record batch at a time (row groups after the one that
    holds the last row asked for are never read)."""
    import pyarrow
    import pyarrow.parquet as pq

    def unreadable(exc: Exception) -> ProblemError:
        # Arrow's messages span lines, and may quote a corrupt byte as it is.
        detail = " ".join("".join(c if c.isprintable() else " " for c in str(exc)).split())
        where = f" after row {row:,}" if row else ""
        return ProblemError(f"{path}: not a readable Parquet file{where} ({detail})")

    row = 0
    try:
        # Buffered column-chunk reads fetch pages as they are decoded: a file written as one row
        # group (pyarrow's default up to a million rows) is then not read whole for five rows.
        parquet = pq.ParquetFile(path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
        batches = parquet.iter_batches(
            batch_size=min(limit or PARQUET_BATCH_ROWS, PARQUET_BATCH_ROWS)
        )
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:row {row}", record
    except pyarrow.ArrowException as exc:
        raise unreadable(exc) from None
    except OSError as exc:
        if exc.errno is not None:
            raise  # the OS's (no permission, ...): _read_records says "cannot read"
        raise unreadable(exc) from None  # Arrow's own, e.g. a corrupt page header


def _read_json(path: Path) -> list[tuple[str, dict]]:
    text = decode_utf8(path.read_bytes(), path).removeprefix("\ufeff")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProblemError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    check_surrogates(text, path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ProblemError(f"{path}: expected a JSON list of problems")
    return [(f"{path}: item {i + 1}", r) for i, r in enumerate(data)]


def _read_hub_dataset(spec: str) -> Iterator[tuple[str, dict]]:
    """A hub dataset named ``NAME``, ``NAME:SPLIT`` or ``NAME:CONFIG:SPLIT`` (the split defaults
    to test; ``openai/gsm8k:main:test`` is GSM8K's test set, which has two configurations); its
    rows are converted as they are asked for."""
    name, *rest = spec.split(":")
    if looks_like_local_path(name):
        raise ProblemError(f"{spec}: no such file")
    if len(rest) > 2 or any(not part for part in rest):
        raise ProblemError(f"{spec}: a hub dataset is NAME, NAME:SPLIT or NAME:CONFIG:SPLIT")
    config, split = rest if len(rest) == 2 else (None, rest[0] if rest else None)
    try:
        ds = load_hub_dataset(name, split or "test", config)
    except HubDatasetError as exc:
        raise ProblemError(str(exc)) from None
    return ((f"{spec}: row {i + 1}", dict(r)) for i, r in enumerate(ds))


def _pick(record: dict, names: tuple[str, ...], explicit: str | None) -> tuple[str | None, Any]:
    if explicit is not None:
        return (explicit, record[explicit]) if explicit in record else (None, None)
    for name in names:
        if name in record and record[name] is not None:
            return name, record[name]
    return None, None


def _answer_text(answer: Any, where: str, name: str | None) -> str:
    """A problem's answer as text: a string as it is, an integer or a finite float as ``str``
    writes it. Anything else would become a string no grader can match ("[1, 2]", "True",
    "nan"), so it is a ProblemError naming the location and the field."""
    if isinstance(answer, str):
        return answer
    number = isinstance(answer, numbers.Real) and not isinstance(answer, bool)
    if number and math.isfinite(answer):
        return str(answer)
    if number:  # NaN or an infinity, spelled as a JSON file spells them
        got = f"{json.dumps(float(answer))}, not a finite number"
    elif isinstance(answer, bool):
        got = f"the boolean {json.dumps(answer)}"
    else:
        try:
            shown = json.dumps(answer, ensure_ascii=False, default=repr)
        except ValueError:  # a circular structure
            shown = repr(answer)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        got = f"a {type(answer).__name__} ({shown})"
    raise ProblemError(f"{where}: field {name!r} must be a string or a number, got {got}")


def _to_problems(
    records: Iterable[tuple[str, dict]],
    question_field: str | None,
    answer_field: str | None,
    limit: int | None = None,
) -> list[Problem]:
    """The problems of ``records``, in order; with ``limit``, records after the first ``limit``
    are not asked for (the reader then never reads them)."""
    problems: list[Problem] = []
    if limit is not None:
        records = itertools.islice(records, limit)
    seen: dict[str, str] = {}  # id -> where it was first
    hashed: set[str] = set()  # ids that are their own question's hash
    for where, record in records:
        if not isinstance(record, dict):
            raise ProblemError(f"{where}: expected a JSON object, got {type(record).__name__}")
        q_name, question = _pick(record, QUESTION_FIELDS, question_field)
        if not isinstance(question, str) or not question.strip():
            wanted = question_field or " | ".join(QUESTION_FIELDS)
            raise ProblemError(f"{where}: missing question (looked for {wanted})")
        a_name, answer = _pick(record, ANSWER_FIELDS, answer_field)
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            wanted = answer_field or " | ".join(ANSWER_FIELDS)
            raise ProblemError(f"{where}: missing answer (looked for {wanted})")
        answer = _answer_text(answer, where, a_name)
        if "####" in answer:  # GSM8K: the final answer follows "####"
            answer = answer.rsplit("####", 1)[1].strip().replace(",", "")
        _, pid = _pick(record, ID_FIELDS, None)
        if pid is None:
            pid = question_id(question)
            if pid in hashed:
                raise ProblemError(
                    f"{where}: no id field, and the same question as {seen[pid]}: a problem "
                    f"without an id is named by its question's hash ({pid}), which is taken; "
                    f"remove the duplicate or give each an id field ({' | '.join(ID_FIELDS)})"
                )
        pid = str(pid)
        if pid in seen:
            raise ProblemError(f"{where}: duplicate id {pid!r} (first at {seen[pid]})")
        seen[pid] = where
        if pid == question_id(question):
            hashed.add(pid)
        meta = {k: v for k, v in record.items() if k not in {q_name, a_name}}
        problems.append(Problem(id=pid, question=question, answer=answer, meta=meta))
    return problems
