"""The output files of ``amcs generate``: written by one process, resumable after a crash.

``--out data.jsonl`` writes two files:

- ``data.jsonl``: one line per labelled path (TRL's PRM format plus soft MC values);
- ``data.meta.jsonl``: one line per finished problem (status, stats, search tree) ending with
  ``data_end``, the byte offset in data.jsonl where that problem's data lines end.

A problem is done when its meta line is on disk: data lines are fsynced first, then the meta line.
Resume cuts a torn last meta line, truncates data.jsonl to the last committed ``data_end`` (dropping
data of a problem whose meta line never made it) and reports the done problems so they are skipped.
An flock on ``data.jsonl.lock`` refuses a second writer; the OS drops it when its process dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

STATUSES = ("ok", "failed")
# Keys a path dict passed to write_problem must carry; prompt, problem_id and answer come from
# write_problem's own arguments so every line of a problem agrees on them.
PATH_KEYS = ("completions", "labels", "values", "rollouts", "method", "model")
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class OutputExistsError(Exception):
    """The output file exists and the run was told neither to resume nor to overwrite it."""


class OutputLockedError(Exception):
    """Another process holds the output's lock."""


class RecordFormatError(ValueError):
    """A data or meta file that cannot be read; the message names the file and line."""


def meta_path_for(data_path: str | Path) -> Path:
    """data.jsonl -> data.meta.jsonl (other names get .meta.jsonl appended)."""
    data_path = Path(data_path)
    if data_path.name.endswith(".jsonl"):
        return data_path.with_name(data_path.name[: -len(".jsonl")] + ".meta.jsonl")
    return data_path.with_name(data_path.name + ".meta.jsonl")


def _lock_path_for(data_path: Path) -> Path:
    return data_path.with_name(data_path.name + ".lock")


def _dump(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


class RecordWriter:
    """Appends finished problems to a data file and its meta file; see the module docstring.

    ``done_ids`` and ``completed`` hold the problems already in the files (after resume).
    """

    def __init__(self, path: str | Path, *, resume: bool = True, overwrite: bool = False):
        self.path = Path(path)
        self.meta_path = meta_path_for(self.path)
        self.lock_path = _lock_path_for(self.path)
        self._lock = self._acquire_lock()
        try:
            self.completed = self._prepare(resume, overwrite)
            self.done_ids = {record["problem_id"] for record in self.completed}
            # Held open for the writer's life; close() closes them.
            self._data = open(self.path, "ab")  # noqa: SIM115
            self._meta = open(self.meta_path, "ab")  # noqa: SIM115
        except BaseException:
            self._lock.close()
            raise

    def _acquire_lock(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self.lock_path, "a")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise OutputLockedError(
                f"another amcs process is writing {self.path} (lock file {self.lock_path})"
            ) from None
        return lock

    def _prepare(self, resume: bool, overwrite: bool) -> list[dict]:
        """Bring both files to a committed state and return the meta records already there."""
        if not overwrite and not resume and (self.path.exists() or self.meta_path.exists()):
            raise OutputExistsError(
                f"{self.path} already exists: pass --overwrite to replace it "
                "or drop --no-resume to continue it"
            )
        if overwrite or not resume:
            for path in (self.path, self.meta_path):
                path.write_bytes(b"")
            return []
        records, meta_end = _scan_meta(self.meta_path)
        if self.meta_path.exists() and self.meta_path.stat().st_size > meta_end:
            os.truncate(self.meta_path, meta_end)  # cut a line torn by a crash
        data_end = records[-1]["data_end"] if records else 0
        data_size = self.path.stat().st_size if self.path.exists() else 0
        if data_size < data_end:
            raise RecordFormatError(
                f"{self.path} has {data_size} bytes but {self.meta_path} says {data_end} were "
                "written: the two files do not belong together"
            )
        if data_size > data_end:
            os.truncate(self.path, data_end)  # data of a problem whose meta line never made it
        return records

    def write_problem(
        self,
        problem_id: str,
        question: str,
        answer: str,
        paths: Sequence[dict],
        status: str = "ok",
        reason: str | None = None,
        stats: dict | None = None,
        tree: dict | None = None,
    ) -> None:
        """Append one problem's data lines, then its meta line; it is done once this returns."""
        self.write_problems(
            [
                {
                    "problem_id": problem_id,
                    "question": question,
                    "answer": answer,
                    "paths": paths,
                    "status": status,
                    "reason": reason,
                    "stats": stats,
                    "tree": tree,
                }
            ]
        )

    def write_problems(self, problems: Sequence[dict]) -> None:
        """Commit several problems (each a dict of write_problem's arguments) with one fsync per
        file: all data lines, then all meta lines. They are done once this returns."""
        ids = [p["problem_id"] for p in problems]
        for pid in ids:
            if pid in self.done_ids or ids.count(pid) > 1:
                raise ValueError(f"problem {pid!r} is already in {self.meta_path}")
        # Build every line before writing any, so a bad path leaves the files untouched.
        chunks, metas = [], []
        end = self._data.tell()
        for p in problems:
            status = p.get("status", "ok")
            if status not in STATUSES:
                raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
            pid, paths = p["problem_id"], p["paths"]
            data = b"".join(_dump(_data_line(pid, p["question"], p["answer"], x)) for x in paths)
            end += len(data)
            chunks.append(data)
            metas.append(
                {
                    "problem_id": pid,
                    "question": p["question"],
                    "answer": p["answer"],
                    "status": status,
                    "reason": p.get("reason"),
                    "paths": len(paths),
                    "stats": p.get("stats") or {},
                    "tree": p.get("tree"),
                    "data_end": end,
                }
            )
        self._data.write(b"".join(chunks))
        self._data.flush()
        os.fsync(self._data.fileno())
        self._meta.write(b"".join(_dump(m) for m in metas))
        self._meta.flush()
        os.fsync(self._meta.fileno())
        self.done_ids.update(ids)
        self.completed.extend(metas)

    def close(self) -> None:
        for f in (self._data, self._meta, self._lock):
            f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _data_line(problem_id: str, question: str, answer: str, path: dict) -> dict:
    missing = [key for key in PATH_KEYS if key not in path]
    if missing:
        raise ValueError(f"path of problem {problem_id!r} lacks {missing}")
    steps = len(path["completions"])
    if any(len(path[key]) != steps for key in ("labels", "values", "rollouts")):
        raise ValueError(
            f"path of problem {problem_id!r}: completions, labels, values and rollouts "
            "must have the same length"
        )
    return {
        "prompt": question,
        "completions": list(path["completions"]),
        "labels": [bool(label) for label in path["labels"]],
        "values": [float(value) for value in path["values"]],
        "rollouts": [int(n) for n in path["rollouts"]],
        "problem_id": problem_id,
        "answer": answer,
        "method": path["method"],
        "model": path["model"],
    }


def _check_meta(record: Any) -> str | None:
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


def _scan_meta(path: Path) -> tuple[list[dict], int]:
    """The committed meta records and the byte offset where they end.

    A last line without a newline or with broken JSON was torn by a crash: it is not counted.
    Any other bad line is a RecordFormatError.
    """
    if not path.exists():
        return [], 0
    raw = path.read_bytes()
    records: list[dict] = []
    seen: set[str] = set()
    pos = 0
    line_no = 0
    while pos < len(raw):
        line_no += 1
        newline = raw.find(b"\n", pos)
        if newline == -1:
            break
        is_last = newline == len(raw) - 1
        try:
            record = json.loads(raw[pos:newline])
        except ValueError as e:
            if is_last:
                break
            raise RecordFormatError(f"{path}:{line_no}: invalid JSON ({e})") from None
        problem = _check_meta(record)
        if problem is None and record["problem_id"] in seen:
            problem = f"problem {record['problem_id']!r} appears twice"
        if problem is None and records and record["data_end"] < records[-1]["data_end"]:
            problem = "data_end is smaller than on the line before"
        if problem is not None:
            raise RecordFormatError(f"{path}:{line_no}: {problem}")
        records.append(record)
        seen.add(record["problem_id"])
        pos = newline + 1
    return records, pos


def read_meta(path: str | Path) -> list[dict]:
    """The committed records of a meta file (a line torn by a crash is left out)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return _scan_meta(path)[0]


def read_data(path: str | Path) -> Iterator[dict]:
    """The lines of a data file, each checked for the fields the exporters rely on."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except ValueError as e:
                raise RecordFormatError(f"{path}:{line_no}: invalid JSON ({e})") from None
            if not (
                isinstance(record, dict)
                and isinstance(record.get("prompt"), str)
                and isinstance(record.get("completions"), list)
                and isinstance(record.get("labels"), list)
                and len(record["completions"]) == len(record["labels"])
            ):
                raise RecordFormatError(
                    f"{path}:{line_no}: expected an object with prompt, and completions and "
                    "labels lists of equal length"
                )
            yield record


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0-based: '0/4' is the first of four shards."""
    match = _SHARD_RE.match(text)
    if match is None:
        raise ValueError(f"bad shard {text!r}: expected I/N, e.g. 0/4 for the first of 4")
    index, count = int(match[1]), int(match[2])
    if not 0 <= index < count:
        raise ValueError(f"bad shard {text!r}: need 0 <= I < N (shards are numbered from 0)")
    return index, count


def shard_of(problem_id: str, count: int) -> int:
    # sha1, not hash(): Python salts str hashes per process, and shards must agree across machines.
    return int.from_bytes(hashlib.sha1(problem_id.encode("utf-8")).digest(), "big") % count


def shard_problems(problems: Sequence, index: int, count: int) -> list:
    """The problems (objects with ``.id``) of shard ``index`` of ``count``, in their order."""
    if not 0 <= index < count:
        raise ValueError(f"shard index must satisfy 0 <= {index} < {count}")
    return [p for p in problems if shard_of(p.id, count) == index]
