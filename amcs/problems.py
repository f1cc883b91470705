"""Problems: what a search or an evaluation runs on, and where they come from.

A source is a JSONL, JSON or Parquet file, a Hugging Face dataset name (``name`` or
``name:split``), or the bundled arithmetic domain (``arith`` for 200 problems, ``arith:N``;
``arith-heldout:N`` for the held-out set the bundled tiny models never trained on).
Common field names are mapped: question | problem | query | prompt, and answer | final_answer
(GSM8K's "... #### 42" keeps what follows ``####``). Bad input fails before any work starts, with
the file and line that caused it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amcs.domains import arith

QUESTION_FIELDS = ("question", "problem", "query", "prompt")
ANSWER_FIELDS = ("answer", "final_answer", "expected_answer", "ground_truth")
ID_FIELDS = ("id", "unique_id", "problem_id", "idx")
DEFAULT_ARITH_COUNT = 200
_ARITH_RE = re.compile(r"^arith(-heldout)?(?::(\d+))?$")


class ProblemError(ValueError):
    """Bad problem input; the message names the file and line."""


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def arith_problems(
    n: int = DEFAULT_ARITH_COUNT, seed: int = 0, *, held_out: bool = False
) -> list[Problem]:
    """Problems from the bundled arithmetic domain; meta carries the expression for exact checks.
    ``held_out`` gives the tiny models' held-out set (``arith.held_out_problems``) instead."""
    drawn = arith.held_out_problems(n) if held_out else arith.generate_problems(n, seed=seed)
    return [
        Problem(
            id=p.id,
            question=p.question,
            answer=str(p.answer),
            meta={"domain": "arith", "expression": p.expression},
        )
        for p in drawn
    ]


def is_arith_source(source: str | Path) -> bool:
    """Whether a problem source names the bundled arithmetic domain (arith, arith-heldout, :N)."""
    return bool(_ARITH_RE.match(str(source)))


def load_problems(
    source: str | Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
) -> list[Problem]:
    """Load problems from any supported source; see the module docstring."""
    text = str(source)
    m = _ARITH_RE.match(text)
    if m:
        count = int(m.group(2) or DEFAULT_ARITH_COUNT)
        problems = arith_problems(count, seed=seed, held_out=bool(m.group(1)))
    else:
        path = Path(text)
        if path.exists():
            records = _read_records(path)
        elif path.suffix in {".jsonl", ".json", ".parquet"}:
            raise ProblemError(f"{text}: no such file")
        else:
            records = _read_hub_dataset(text)
        problems = _to_problems(records, question_field, answer_field)
    return problems[:limit] if limit is not None else problems


def _read_records(path: Path) -> list[tuple[str, dict]]:
    """(location, record) pairs; location is 'file:line' so errors can point at the input."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return [(f"{path}:row {i + 1}", r) for i, r in enumerate(rows)]
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ProblemError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise ProblemError(f"{path}: expected a JSON list of problems")
        return [(f"{path}: item {i + 1}", r) for i, r in enumerate(data)]
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{line_no}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ProblemError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from None
    return records


def _read_hub_dataset(spec: str) -> list[tuple[str, dict]]:
    import datasets

    name, _, split = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "test")
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear message
        raise ProblemError(f"{spec}: cannot load Hugging Face dataset ({exc})") from None
    return [(f"{spec}: row {i + 1}", dict(r)) for i, r in enumerate(ds)]


def _pick(record: dict, names: tuple[str, ...], explicit: str | None) -> tuple[str | None, Any]:
    if explicit is not None:
        return (explicit, record[explicit]) if explicit in record else (None, None)
    for name in names:
        if name in record and record[name] is not None:
            return name, record[name]
    return None, None


def _to_problems(
    records: list[tuple[str, dict]], question_field: str | None, answer_field: str | None
) -> list[Problem]:
    problems = []
    seen: dict[str, str] = {}
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
        answer = str(answer)
        if "####" in answer:  # GSM8K: the final answer follows "####"
            answer = answer.rsplit("####", 1)[1].strip().replace(",", "")
        _, pid = _pick(record, ID_FIELDS, None)
        pid = str(pid) if pid is not None else f"p{len(problems)}"
        if pid in seen:
            raise ProblemError(f"{where}: duplicate id {pid!r} (first at {seen[pid]})")
        seen[pid] = where
        meta = {k: v for k, v in record.items() if k not in {q_name, a_name}}
        problems.append(Problem(id=pid, question=question, answer=answer, meta=meta))
    return problems
