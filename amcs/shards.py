"""Several output files as one data set: the shards of a run spread over machines.

``amcs generate --shard i/n`` on n machines writes n files; ``amcs train`` and ``amcs export``
take them all (repeated, or as a glob such as ``'part*.jsonl'``). Files of different runs over the
same problems (two methods, two models) combine too. ``check_combinable`` refuses what would
corrupt the data set: a problem id that names two questions, and a problem in two shards of one
run (the same shard run twice, or two runs with different n would count it twice).
``parse_shard`` reads ``--shard i/n`` and ``shard_problems`` picks a shard's problems.

``amcs.records`` re-exports the shard functions, so this module reads the records package only
inside the functions that need it (importing it here would be circular).
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from amcs.jsonl import JSONLinesError, read_json_lines

_GLOB_CHARS = set("*?[")
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    """Sources that cannot be combined; the message names the files."""


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


def expand_sources(specs: Iterable[str | Path]) -> list[str]:
    """Each source as given, a glob replaced by the files it matches (sorted); a glob that
    matches nothing, or a file named twice, is a ShardError."""
    out: list[str] = []
    for spec in specs:
        text = str(spec)
        if _GLOB_CHARS & set(text) and not Path(text).exists():
            matches = sorted(m for m in glob.glob(text) if not m.endswith(".meta.jsonl"))
            if not matches:
                raise ShardError(f"{text}: no file matches this pattern")
            out += matches
        else:
            out.append(text)
    seen: set[Path] = set()
    for source in out:
        path = Path(source)
        if path.exists():
            key = path.resolve()
            if key in seen:
                raise ShardError(f"{source} is named twice")
            seen.add(key)
    return out


def _run_key(path: Path) -> str | None:
    """What names the run that wrote ``path``: its fingerprint less the shard (the shards of one
    run differ only there), or None when it has no meta file or no fingerprint."""
    from amcs.records import meta_path_for, read_run_header

    meta = meta_path_for(path)
    if not meta.is_file():
        return None
    try:
        fingerprint = (read_run_header(meta) or {}).get("fingerprint")
    except OSError as exc:
        raise ShardError(f"{meta}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(fingerprint, dict):
        return None
    return json.dumps({k: v for k, v in fingerprint.items() if k != "shard"}, sort_keys=True)


def _id_questions(path: Path) -> Iterator[tuple[str, str, str]]:
    """(problem id, question, FILE:LINE) of every committed data line that has a problem id; the
    question is the line's ``prompt`` (TRL's convention: the bare question). A line that is not
    JSON is a ShardError, a bad meta file a RecordFormatError, both naming file and line."""
    from amcs.records import committed_end

    try:
        for line_no, record in read_json_lines(path, committed_end(path)):
            if isinstance(record, dict):
                pid, prompt = record.get("problem_id"), record.get("prompt")
                if isinstance(pid, str) and isinstance(prompt, str):
                    yield pid, prompt, f"{path}:{line_no}"
    except JSONLinesError as exc:
        raise ShardError(str(exc)) from None
    except OSError as exc:
        raise ShardError(f"{path}: cannot read ({exc.strerror or exc})") from None


def check_combinable(sources: Iterable[str | Path]) -> None:
    """Refuse data files that cannot be used as one data set (ShardError naming both files and
    lines, and the id):

    - one problem id with two questions, in one file or in two (problem files whose ids were
      positions, or two problem files concatenated): the data would mix two problems under
      one name;
    - one problem in two files written by the same run (equal fingerprints but for the shard):
      overlapping shards, which would count the problem twice.

    The same problem with the same question in runs that differ otherwise (two methods, two
    models, two seeds) is fine: that is what comparing and pooling runs means. Lines without a
    problem id (plain TRL data) and dataset names are not checked.
    """
    first: dict[str, tuple[str, str, int]] = {}  # id -> question, where, index of its file
    runs: list[str | None] = []
    for index, source in enumerate(sources):
        path = Path(source)
        if not path.is_file():
            runs.append(None)
            continue  # a dataset name: its loader reports what is wrong
        runs.append(_run_key(path))
        for pid, question, where in _id_questions(path):
            if pid not in first:
                first[pid] = (question, where, index)
                continue
            seen_question, seen_where, seen_index = first[pid]
            if question != seen_question:
                raise ShardError(
                    f"problem {pid!r} names two questions: {seen_where} and {where} (ids from "
                    "positions in a problem file, or problem files concatenated?); an id must "
                    "name one question wherever runs are combined"
                )
            if seen_index != index and runs[index] is not None and runs[index] == runs[seen_index]:
                raise ShardError(
                    f"problem {pid!r} is in both {seen_where} and {where}, written by the same "
                    "run: shards must not overlap (the same --shard run twice, or runs with "
                    "different shard counts?)"
                )
