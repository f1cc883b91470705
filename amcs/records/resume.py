"""Resume's proof, before it cuts a byte, that the files on disk are this run's (checks 1-5 of the
package docstring), and the cut of what was never committed."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amcs.records.fingerprint import fingerprint_differences
from amcs.records.format import HOW_TO_PROCEED, OutputMismatchError, meta_path_for
from amcs.records.reader import scan_meta

_POSITIONAL_ID = re.compile(r"^p\d+$")  # how amcs named problems without an id field before


def check_data_against_meta(
    data_path: Path, meta_path: Path, records: list[dict], data_size: int
) -> None:
    """Resume's proof that the data file holds what the meta file says (module docstring, 3-4)."""
    if data_size == 0:
        return
    # Each committed problem: its lines end exactly at data_end and carry its problem id.
    ends = iter(records)
    current = next(ends, None)
    count, line_no = 0, 0
    committed_ok = {m["problem_id"] for m in records if m["status"] == "ok"}

    def mismatch(what: str) -> OutputMismatchError:
        return OutputMismatchError(
            f"{data_path}:{line_no}: {what}; the data and meta files do not belong together "
            f"({meta_path.name}); " + HOW_TO_PROCEED
        )

    with open(data_path, "rb") as f:
        pos = 0
        while current is not None and pos == current["data_end"] and current["paths"] == 0:
            current = next(ends, None)  # problems without paths end where the previous did
        for line in f:
            line_no += 1
            end = pos + len(line)
            if current is None:  # the uncommitted tail
                if not line.endswith(b"\n"):
                    break  # a line torn by a crash
                pid = _line_problem_id(line)
                if pid is None or pid in committed_ok:
                    raise mismatch(
                        "after the last committed problem there is a line that is not an "
                        "uncommitted problem's data"
                    )
                pos = end
                continue
            if end > current["data_end"]:
                raise mismatch(
                    f"problem {current['problem_id']!r} ends at byte {current['data_end']:,}, "
                    "inside this line"
                )
            if _line_problem_id(line) != current["problem_id"]:
                raise mismatch(
                    f"expected a line of problem {current['problem_id']!r} (per the meta file)"
                )
            count += 1
            pos = end
            while current is not None and pos == current["data_end"]:
                if count != current["paths"]:
                    raise mismatch(
                        f"problem {current['problem_id']!r} has {count} lines, its meta line "
                        f"says {current['paths']}"
                    )
                count = 0
                current = next(ends, None)
        if current is not None:
            raise mismatch(f"problem {current['problem_id']!r} has fewer lines than committed")


def _line_problem_id(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    pid = record.get("problem_id") if isinstance(record, dict) else None
    return pid if isinstance(pid, str) else None


def verify_and_cut(
    path: Path, fingerprint: dict[str, Any] | None, problems: Sequence | None
) -> tuple[dict | None, list[dict]]:
    """Check the output ``path`` and its meta file (package docstring, 1-5) and only then cut what
    was never committed: a torn meta line, data lines after the last committed ``data_end``.
    Returns the meta header (or None) and the committed meta records; raises
    OutputMismatchError, with both files as they were, when they are not this run's. A None
    ``fingerprint`` or ``problems`` skips that comparison."""
    meta_path = meta_path_for(path)
    data_size = path.stat().st_size if path.exists() else 0
    if not meta_path.exists():
        if data_size == 0:
            return None, []
        raise OutputMismatchError(
            f"{path} has {data_size:,} bytes but its meta file {meta_path.name} is "
            "missing, so nothing proves which lines are complete; restore the meta file, or "
            + HOW_TO_PROCEED
        )
    header, records, meta_end = scan_meta(meta_path, with_header=True)
    if header is None and records:
        raise OutputMismatchError(
            f"{meta_path} has no run fingerprint (written by an older amcs), so resume "
            "cannot check it belongs to this run; " + HOW_TO_PROCEED
        )
    if header is not None and fingerprint is not None:
        old = header.get("fingerprint") or {}
        diff = fingerprint_differences(old, fingerprint)
        if diff and (records or data_size):
            raise OutputMismatchError(
                f"{path} was written by another configuration ({'; '.join(diff[:6])}"
                f"{'; ...' if len(diff) > 6 else ''}): rerun with the same options to resume "
                "it, or " + HOW_TO_PROCEED
            )
    data_end = records[-1]["data_end"] if records else 0
    if data_size < data_end:
        raise OutputMismatchError(
            f"{path} has {data_size:,} bytes but {meta_path.name} says {data_end:,} "
            "were committed: the two files do not belong together; " + HOW_TO_PROCEED
        )
    check_data_against_meta(path, meta_path, records, data_size)
    if problems is not None:
        check_problems(meta_path, records, problems)
    # Every check passed: now cut what was never committed.
    if meta_path.stat().st_size > meta_end:
        os.truncate(meta_path, meta_end)  # a line torn by a crash
    if data_size > data_end:
        os.truncate(path, data_end)  # lines of problems whose meta line never made it
    if not records and meta_path.exists():
        # Nothing committed (at most a header and a torn line): the first commit writes this
        # run's header, not the one a crashed start of other options left.
        os.unlink(meta_path)
    return header, records


def check_problems(meta_path: Path, committed: Sequence[dict], problems: Sequence) -> None:
    """Refuse to resume unless the ``committed`` meta records of ``meta_path`` are this run's
    first ``problems`` (``RecordWriter.check_problems`` says why and how)."""
    order: list[dict] = []
    seen: set[str] = set()
    for m in committed:
        if m["problem_id"] not in seen:
            seen.add(m["problem_id"])
            order.append(m)
    for position, (m, p) in enumerate(zip(order, problems, strict=False), 1):
        if m["problem_id"] != p.id:
            raise _moved_problem(meta_path, position, m, problems)
        changed = [
            key
            for key in ("question", "answer")
            if m.get(key) is not None and m[key] != getattr(p, key)
        ]
        if "question" in changed:
            raise OutputMismatchError(
                f"problem {p.id!r} in {meta_path} has another question than in this "
                "run's problems (did the problem file change?); " + HOW_TO_PROCEED
            )
        if changed:
            raise OutputMismatchError(
                f"problem {p.id!r} was committed to {meta_path} with answer "
                f"{m['answer']!r}, and this run's problems give {p.answer!r}: resuming would "
                "mix labels graded against two answers; restore the problem file, or "
                + HOW_TO_PROCEED
            )


def _moved_problem(
    meta_path: Path, position: int, m: dict, problems: Sequence
) -> OutputMismatchError:
    """Why the committed problem ``m``, this run's problem number ``position``, is not at
    that place in ``problems`` any more: renamed, moved, or gone."""
    pid, here = m["problem_id"], problems[position - 1]
    if here.question == m.get("question"):
        # The same question under another id. Runs of amcs before stable ids named problems
        # by position (p0, p1); resuming would search it again under the new id.
        why = (
            "the run was written when problems without an id field were named by "
            "position (p0, p1, ...); now they are named by their question's hash (q-...)"
            if _POSITIONAL_ID.match(pid)
            else "the problem file renamed it"
        )
        return OutputMismatchError(
            f"{meta_path} has this run's problem {here.id!r} as {pid!r}: {why}, so "
            "resuming would search it again under a new id. Start a new run (another "
            "--out, or --no-resume --overwrite), or continue this one by giving each "
            "problem its old name in an id field of the problem file"
        )
    now = next((i for i, p in enumerate(problems, 1) if p.id == pid), None)
    where = (
        f"is now problem {now}: the problem file's order changed"
        if now is not None
        else f"is not among this run's problems any more (problem {position} is now "
        f"{here.id!r}): the problem file lost or renamed it"
    )
    return OutputMismatchError(
        f"problem {pid!r}, committed to {meta_path} as this run's problem {position}, "
        f"{where}; resuming would mix two problem sets; restore the problem file, or "
        + HOW_TO_PROCEED
    )
