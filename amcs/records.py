"""The output files of ``amcs generate``: written by one process, resumable after a crash, and
never shortened unless they prove the bytes are theirs.

``--out data.jsonl`` writes two files:

- ``data.jsonl``: one line per labelled path (TRL's PRM format plus soft MC values; ``prompt`` is
  the bare question, ``policy_prompt`` the text the policy was given);
- ``data.meta.jsonl``: a header line with the run's fingerprint (method, model, seed, search
  config, problem source, shard, prompt), then one line per finished problem (status, stats, ``decoding``: deterministic or batched,
  search tree) ending with ``data_end``, the byte offset in data.jsonl where that problem's data
  lines end.

A problem is done when its meta line is on disk: data lines are fsynced first, then the meta line.
Both files are created at the first commit, so a run that stops before committing anything leaves
nothing behind.

Resume checks everything before it changes anything:

1. the meta file exists whenever the data file has bytes, and starts with a header;
2. the header's fingerprint equals this run's (a different config, model, seed or problem source
   is refused, naming what differs);
3. every ``data_end`` falls on a line boundary, in order, and the data lines between two offsets
   carry that meta line's problem id, as many as it says;
4. what lies after the last committed offset is data lines of problems not committed (a batch
   whose meta lines never made it), possibly ending in a torn line;
5. with the run's problems given (``problems=``; ``check_problems``), the committed problems are
   the run's first problems, in order, each with the question and answer it was committed with.

Then it cuts a torn last meta line, truncates data.jsonl to the last committed ``data_end`` and
reports the problems that finished ok; failed problems are retried (their earlier meta line stays,
and the retry's line comes later: the last line of a problem id wins). On any mismatch it raises
``OutputMismatchError`` and leaves both files as they were. An flock on ``data.jsonl.lock`` refuses
a second writer; the OS drops it when its process dies, and a clean close removes the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from amcs.jsonl import JSONLinesError, check_surrogates, read_json_lines
from amcs.outputs import naming
from amcs.redaction import redact

STATUSES = ("ok", "failed")
# Keys a path dict passed to write_problem must carry; prompt, policy_prompt, problem_id and answer
# come from write_problem's own arguments so every line of a problem agrees on them.
PATH_KEYS = ("completions", "labels", "values", "rollouts", "method", "model")
META_FORMAT = "amcs-meta"
META_VERSION = 1
_POSITIONAL_ID = re.compile(r"^p\d+$")  # how amcs named problems without an id field before
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
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


def _dump(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def run_fingerprint(
    *,
    method: str,
    model: str,
    seed: int,
    search: dict[str, Any],
    problems: str,
    shard: str | None = None,
    prompt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What makes two runs the same run: resuming is allowed only when these are equal.

    ``problems`` is the problem source without its count (``arith``, a resolved file path, a
    dataset name), so a run can be extended with a larger ``--limit`` or ``arith:N``; the problems
    themselves are checked against the committed ones by id, question, answer and order
    (``RecordWriter.check_problems``), from the meta lines, which carry each of them. The backend
    is not part of it: the same model served by another engine continues the same run."""
    return {
        "method": method,
        "model": model,
        "seed": seed,
        "problems": problems,
        "shard": shard,
        "prompt": prompt,
        "search": dict(search),
    }


# Fingerprint keys added after runs were written without them, with the value that a run written
# before the key existed behaved as: its absence equals that value, so such a run still resumes.
ADDED_LATER: dict[str, Any] = {"search.min_step_chars": 0, "search.max_solution_steps": 0}


def fingerprint_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs (nested dicts as dotted keys); a key of
    ADDED_LATER missing from ``old`` counts as its value there."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        b = new.get(key)
        a = old.get(key, ADDED_LATER.get(f"{prefix}{key}"))
        if isinstance(a, dict) and isinstance(b, dict):
            out += fingerprint_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class RecordWriter:
    """Appends finished problems to a data file and its meta file; see the module docstring.

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
        self._lock = self._acquire_lock()
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

    # --- the lock ------------------------------------------------------------------------------

    def _acquire_lock(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {self.path.parent}: {exc.strerror}") from None
        while True:
            try:
                lock = open(self.lock_path, "a")  # noqa: SIM115 - held until close()
            except OSError as exc:
                raise OutputError(
                    f"cannot write in {self.path.parent}: {exc.strerror} ({self.lock_path})"
                ) from None
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise OutputLockedError(
                    f"another amcs process is writing {self.path} (lock file {self.lock_path})"
                ) from None
            # The lock file is removed on close; if it was removed (and maybe re-created by
            # another writer) between our open and flock, we hold a stale inode: try again.
            try:
                same = os.fstat(lock.fileno()).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return lock
            lock.close()

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)  # while still holding it; see _acquire_lock
            self._lock.close()
            self._lock = None

    # --- opening: fresh, overwrite or verified resume --------------------------------------------

    def _has_content(self) -> bool:
        data = self.path.exists() and self.path.stat().st_size > 0
        return data or bool(self.meta_path.exists() and _scan_meta(self.meta_path)[1])

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
        return self._verify_and_cut()

    def _replace_with_empty(self) -> None:
        """--no-resume --overwrite: remove both files (the meta file first); the first commit
        creates them anew. Until then a crash leaves nothing that resume would accept as this
        run's, so nothing is silently mixed."""
        for path in (self.meta_path, self.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _verify_and_cut(self) -> list[dict]:
        data_size = self.path.stat().st_size if self.path.exists() else 0
        if not self.meta_path.exists():
            if data_size == 0:
                return []
            raise OutputMismatchError(
                f"{self.path} has {data_size:,} bytes but its meta file {self.meta_path.name} is "
                "missing, so nothing proves which lines are complete; restore the meta file, or "
                + HOW_TO_PROCEED
            )
        header, records, meta_end = _scan_meta(self.meta_path, with_header=True)
        if header is None and records:
            raise OutputMismatchError(
                f"{self.meta_path} has no run fingerprint (written by an older amcs), so resume "
                "cannot check it belongs to this run; " + HOW_TO_PROCEED
            )
        if header is not None and self.fingerprint is not None:
            old = header.get("fingerprint") or {}
            diff = fingerprint_differences(old, self.fingerprint)
            if diff and (records or data_size):
                raise OutputMismatchError(
                    f"{self.path} was written by another configuration ({'; '.join(diff[:6])}"
                    f"{'; ...' if len(diff) > 6 else ''}): rerun with the same options to resume "
                    "it, or " + HOW_TO_PROCEED
                )
        self.header = header
        data_end = records[-1]["data_end"] if records else 0
        if data_size < data_end:
            raise OutputMismatchError(
                f"{self.path} has {data_size:,} bytes but {self.meta_path.name} says {data_end:,} "
                "were committed: the two files do not belong together; " + HOW_TO_PROCEED
            )
        _check_data_against_meta(self.path, self.meta_path, records, data_size)
        if self._problems is not None:
            self._check_problems(records, self._problems)
        # Every check passed: now cut what was never committed.
        if self.meta_path.stat().st_size > meta_end:
            os.truncate(self.meta_path, meta_end)  # a line torn by a crash
        if data_size > data_end:
            os.truncate(self.path, data_end)  # lines of problems whose meta line never made it
        if not records and self.meta_path.exists():
            # Nothing committed (at most a header and a torn line): the first commit writes this
            # run's header, not the one a crashed start of other options left.
            os.unlink(self.meta_path)
        return records

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
            self._meta.write(_dump(self.header))

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
                _dump(_data_line(pid, p["question"], p["answer"], x, shown)) for x in paths
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
            self._meta.write(b"".join(_dump(m) for m in metas))
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
        self._check_problems(self.completed, problems)

    def _check_problems(self, committed: Sequence[dict], problems: Sequence) -> None:
        order: list[dict] = []
        seen: set[str] = set()
        for m in committed:
            if m["problem_id"] not in seen:
                seen.add(m["problem_id"])
                order.append(m)
        for position, (m, p) in enumerate(zip(order, problems, strict=False), 1):
            if m["problem_id"] != p.id:
                raise self._moved_problem(position, m, problems)
            changed = [
                key
                for key in ("question", "answer")
                if m.get(key) is not None and m[key] != getattr(p, key)
            ]
            if "question" in changed:
                raise OutputMismatchError(
                    f"problem {p.id!r} in {self.meta_path} has another question than in this "
                    "run's problems (did the problem file change?); " + HOW_TO_PROCEED
                )
            if changed:
                raise OutputMismatchError(
                    f"problem {p.id!r} was committed to {self.meta_path} with answer "
                    f"{m['answer']!r}, and this run's problems give {p.answer!r}: resuming would "
                    "mix labels graded against two answers; restore the problem file, or "
                    + HOW_TO_PROCEED
                )

    def _moved_problem(self, position: int, m: dict, problems: Sequence) -> OutputMismatchError:
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
                f"{self.meta_path} has this run's problem {here.id!r} as {pid!r}: {why}, so "
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
            f"problem {pid!r}, committed to {self.meta_path} as this run's problem {position}, "
            f"{where}; resuming would mix two problem sets; restore the problem file, or "
            + HOW_TO_PROCEED
        )

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


def _check_data_against_meta(
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


def _is_header(record: Any) -> bool:
    return isinstance(record, dict) and record.get("format") == META_FORMAT


def _scan_meta(path: Path, with_header: bool = False):
    """The committed meta records and the byte offset where they end (and, with
    ``with_header``, the header first: (header or None, records, end)).

    A last line without a newline or with broken JSON was torn by a crash: it is not counted.
    Any other bad line is a RecordFormatError. A problem id may appear again only after a failed
    record of it (a retry).
    """
    header: dict | None = None
    records: list[dict] = []
    pos = 0
    if path.exists():
        raw = path.read_bytes()
        last_status: dict[str, str] = {}
        line_no = 0
        while pos < len(raw):
            line_no += 1
            newline = raw.find(b"\n", pos)
            if newline == -1:
                break
            is_last = newline == len(raw) - 1
            try:
                record = json.loads(raw[pos:newline])
                if b"\\u" in raw[pos:newline]:  # a hand-edited line: "\ud800" is no text
                    check_surrogates(raw[pos:newline].decode(), path, line_no)
            except JSONLinesError as e:
                raise RecordFormatError(str(e)) from None
            except ValueError as e:
                if is_last:
                    break
                raise RecordFormatError(f"{path}:{line_no}: invalid JSON ({e})") from None
            if line_no == 1 and _is_header(record):
                if record.get("version") != META_VERSION:
                    raise RecordFormatError(
                        f"{path}:1: meta format version {record.get('version')!r}; this amcs "
                        f"reads version {META_VERSION}"
                    )
                header = record
                pos = newline + 1
                continue
            problem = _check_meta(record)
            if problem is None and last_status.get(record["problem_id"], "failed") != "failed":
                problem = f"problem {record['problem_id']!r} appears twice"
            if problem is None and records and record["data_end"] < records[-1]["data_end"]:
                problem = "data_end is smaller than on the line before"
            if problem is not None:
                raise RecordFormatError(f"{path}:{line_no}: {problem}")
            records.append(record)
            last_status[record["problem_id"]] = record["status"]
            pos = newline + 1
    if with_header:
        return header, records, pos
    return records, pos


def read_meta(path: str | Path) -> list[dict]:
    """The committed problem records of a meta file, header left out (a line torn by a crash is
    left out too). A retried problem appears once per attempt; the last record wins."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return _scan_meta(path)[0]


def read_meta_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for each committed problem record of a meta file, as ``read_meta``
    reads them: for messages that point at the line. Every line before the committed end is the
    header (line 1) or a record, so numbering follows from the header's presence."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    header, records, _ = _scan_meta(path, with_header=True)
    first = 2 if header is not None else 1
    return list(enumerate(records, first))


def read_run_header(path: str | Path) -> dict | None:
    """The header of a meta file (``format``, ``version``, ``fingerprint``), or None."""
    return _scan_meta(Path(path), with_header=True)[0]


def recorded_search(data_path: str | Path) -> dict | None:
    """The search settings (``SearchConfig.to_dict()``: separator, step rules, ...) that the run
    which wrote ``data_path`` recorded in its meta file's header; None when there is no meta file
    or its header has none. Reads the first line only (meta lines carry whole search trees)."""
    meta = meta_path_for(data_path)
    if not meta.is_file():
        return None
    with meta.open("rb") as f:
        line = f.readline()
    try:
        header = json.loads(line)
    except ValueError as e:
        if not line.endswith(b"\n"):  # torn by a crash before the first commit finished
            return None
        raise RecordFormatError(f"{meta}:1: invalid JSON ({e})") from None
    if not _is_header(header) or not isinstance(header.get("fingerprint"), dict):
        return None
    search = header["fingerprint"].get("search")
    return search if isinstance(search, dict) else None


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


def committed_end(data_path: str | Path) -> int | None:
    """Where the committed part of a data file ends: the last ``data_end`` of its meta file, or
    None when it has no meta file (read it all). What lies after it belongs to a problem not
    finished (a run in progress, or killed mid-problem; resume cuts it), possibly a torn line.
    A data file shorter than its meta file says is a RecordFormatError."""
    data_path = Path(data_path)
    meta = meta_path_for(data_path)
    if not meta.is_file():
        return None
    records = read_meta(meta)
    end = records[-1]["data_end"] if records else 0  # non-decreasing: _scan_meta checks
    size = data_path.stat().st_size
    if size < end:
        raise RecordFormatError(
            f"{data_path} has {size} bytes but {meta} says {end} were written: the two files do "
            "not belong together"
        )
    return end


def read_data(path: str | Path) -> Iterator[dict]:
    """The lines of a data file, each checked with ``data_row_problem``; a line that is not
    UTF-8, not JSON or not such a record (NaN values included) is a RecordFormatError naming
    file and line."""
    path = Path(path)
    try:
        for line_no, record in read_json_lines(path):
            problem = data_row_problem(record)
            if problem is not None:
                raise RecordFormatError(f"{path}:{line_no}: {problem}")
            yield record
    except JSONLinesError as exc:
        raise RecordFormatError(str(exc)) from None


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
