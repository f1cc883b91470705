"""``RecordWriter``: appends finished problems to a data file and its meta file, one process at a
time, and resumes them only after ``resume`` proved they are this run's (package docstring)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amcs.outputs import naming
from amcs.records.format import (
    META_FORMAT,
    META_VERSION,
    PATH_KEYS,
    STATUSES,
    OutputError,
    OutputExistsError,
    dump_line,
    lock_path_for,
    meta_path_for,
)
from amcs.records.lock import OutputLock
from amcs.records.reader import scan_meta
from amcs.records.resume import check_problems, verify_and_cut
from amcs.redaction import redact


class RecordWriter:
    """Appends finished problems to a data file and its meta file; see the package docstring.

    ``fingerprint`` (see ``run_fingerprint``) is stored in a new file's header and compared on
    resume; None skips the comparison (library use). ``retry_failed`` (default) leaves failed
    problems out of ``done_ids`` so a resumed run searches them again. ``problems``, the run's
    problems in order, are checked against the committed ones (``check_problems``) before resume
    cuts a byte, so a refused resume leaves both files as they were.

    ``done_ids`` holds the problems not to search again; ``completed`` every committed meta record
    (a retried problem appears more than once: the last one wins); ``failed_ids`` the problems
    whose last record failed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        resume: bool = True,
        overwrite: bool = False,
        fingerprint: dict[str, Any] | None = None,
        retry_failed: bool = True,
        problems: Sequence | None = None,
    ):
        self.path = Path(path)
        self._problems = problems
        self.meta_path = meta_path_for(self.path)
        self.lock_path = lock_path_for(self.path)
        self.fingerprint = fingerprint
        self.retry_failed = retry_failed
        self.header: dict | None = None
        self._data = self._meta = None
        if self.path.is_dir():
            raise OutputError(f"--out {self.path} is a directory; name a .jsonl file")
        if self.meta_path.is_dir():
            raise OutputError(f"{self.meta_path} is a directory; choose another --out")
        self._lock: OutputLock | None = OutputLock(self.path)
        try:
            self.completed = self._prepare(resume, overwrite)
            last: dict[str, dict] = {}
            for record in self.completed:
                last[record["problem_id"]] = record
            self.failed_ids = {pid for pid, m in last.items() if m["status"] == "failed"}
            self.done_ids = {
                pid for pid, m in last.items() if m["status"] == "ok" or not retry_failed
            }
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- opening: fresh, overwrite or verified resume --------------------------------------------

    def _has_content(self) -> bool:
        data = self.path.exists() and self.path.stat().st_size > 0
        return data or bool(self.meta_path.exists() and scan_meta(self.meta_path)[1])

    def _prepare(self, resume: bool, overwrite: bool) -> list[dict]:
        """Bring both files to a committed state and return the meta records already there."""
        if overwrite and resume:
            raise OutputError("--overwrite applies only with --no-resume")
        if not resume:
            if not overwrite and self._has_content():
                raise OutputExistsError(
                    f"{self.path} already exists: pass --overwrite to replace it "
                    "or drop --no-resume to continue it"
                )
            self._replace_with_empty()
            return []
        if not (self.path.exists() or self.meta_path.exists()):
            return []
        self.header, records = verify_and_cut(self.path, self.fingerprint, self._problems)
        return records

    def _replace_with_empty(self) -> None:
        """--no-resume --overwrite: remove both files (the meta file first); the first commit
        creates them anew. Until then a crash leaves nothing that resume would accept as this
        run's, so nothing is silently mixed."""
        for path in (self.meta_path, self.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # --- writing -------------------------------------------------------------------------------

    def _open_files(self) -> None:
        """Open both files for appending; a new meta file starts with the run header."""
        new_meta = not self.meta_path.exists() or self.meta_path.stat().st_size == 0
        self._data = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._meta = open(self.meta_path, "ab")  # noqa: SIM115
        if new_meta:
            self.header = {
                "format": META_FORMAT,
                "version": META_VERSION,
                "fingerprint": self.fingerprint,
            }
            self._meta.write(dump_line(self.header))

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
        policy_prompt: str | None = None,
    ) -> None:
        """Append one problem's data lines, then its meta line; it is done once this returns.
        ``policy_prompt``, the exact text the policy was given (chat template and system prompt
        included), goes on the meta line and every data line when given."""
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
                    "policy_prompt": policy_prompt,
                }
            ]
        )

    def write_problems(self, problems: Sequence[dict]) -> None:
        """Commit several problems (each a dict of write_problem's arguments) with one fsync per
        file: all data lines, then all meta lines. They are done once this returns."""
        if self._lock is None:
            raise ValueError(f"the writer of {self.path} is closed")
        ids = [p["problem_id"] for p in problems]
        for pid in ids:
            if pid in self.done_ids or ids.count(pid) > 1:
                raise ValueError(f"problem {pid!r} is already in {self.meta_path}")
        if not problems:
            return
        if self._data is None:
            self._open_files()
        # Build every line before writing any, so a bad path leaves the files untouched.
        chunks, metas = [], []
        end = self._data.tell()
        for p in problems:
            status = p.get("status", "ok")
            if status not in STATUSES:
                raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
            pid, paths = p["problem_id"], p["paths"]
            shown = p.get("policy_prompt")
            data = b"".join(
                dump_line(_data_line(pid, p["question"], p["answer"], x, shown)) for x in paths
            )
            end += len(data)
            chunks.append(data)
            metas.append(
                {
                    "problem_id": pid,
                    "question": p["question"],
                    **({} if shown is None else {"policy_prompt": shown}),
                    "answer": p["answer"],
                    "status": status,
                    # A reason may quote a server's error body: no secret goes to disk.
                    "reason": None if p.get("reason") is None else redact(str(p["reason"])),
                    "paths": len(paths),
                    "stats": p.get("stats") or {},
                    **({"decoding": p["decoding"]} if p.get("decoding") else {}),
                    "tree": p.get("tree"),
                    "data_end": end,
                }
            )
        with naming(self.path):
            self._data.write(b"".join(chunks))
            self._data.flush()
            os.fsync(self._data.fileno())
        with naming(self.meta_path):
            self._meta.write(b"".join(dump_line(m) for m in metas))
            self._meta.flush()
            os.fsync(self._meta.fileno())
        for m in metas:
            if m["status"] == "ok" or not self.retry_failed:
                self.done_ids.add(m["problem_id"])
                self.failed_ids.discard(m["problem_id"])
            else:
                self.failed_ids.add(m["problem_id"])
        self.completed.extend(metas)

    def check_problems(self, problems: Sequence) -> None:
        """Refuse to resume unless the committed problems are this run's first problems: the same
        ids in the same order, each with the question and answer it was committed with.

        The problem source in the fingerprint is a path or a name, so a problem file edited under
        a run (a gold answer corrected, a line deleted, lines sorted) still matches it; resuming
        would then grade the new problems against other answers than the committed ones, and the
        file would mix labels of two problem sets. The meta lines carry each committed problem's
        question and answer in the order the run committed them (input order: first attempts,
        since a retry repeats a problem id later), so they are the proof. A larger ``--limit`` or
        ``arith:N`` extends the run (the committed problems stay its first ones); a smaller one
        is checked as far as it reaches. In a sharded run ``problems`` is the shard's list, in
        the same order. A meta line without a question or answer (none that amcs wrote) is not
        compared there. ``problems`` are objects with ``.id``, ``.question`` and ``.answer``.
        """
        check_problems(self.meta_path, self.completed, problems)

    def close(self) -> None:
        data, meta = self._data, self._meta
        self._data = self._meta = None
        # Closing flushes what a failed write left in a buffer, and may fail the same way.
        try:
            if data is not None:
                with naming(self.path):
                    data.close()
        finally:
            try:
                if meta is not None:
                    with naming(self.meta_path):
                        meta.close()
            finally:
                self._release_lock()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
            return
        # Already failing (often a write that failed): a close that fails the same way would
        # hide that first error, which names the file it happened in.
        with contextlib.suppress(OSError):
            self.close()


def _data_line(
    problem_id: str, question: str, answer: str, path: dict, policy_prompt: str | None = None
) -> dict:
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
        "prompt": question,  # the bare question: TRL's PRM convention, read by train and filter
        **({} if policy_prompt is None else {"policy_prompt": policy_prompt}),
        "completions": list(path["completions"]),
        "labels": [bool(label) for label in path["labels"]],
        "values": [None if value is None else float(value) for value in path["values"]],
        "rollouts": [int(n) for n in path["rollouts"]],
        "problem_id": problem_id,
        "answer": answer,
        "method": path["method"],
        "model": path["model"],
    }
