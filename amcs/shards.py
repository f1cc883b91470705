"""Several output files as one data set: the shards of a run spread over machines.

``amcs generate --shard i/n`` on n machines writes n files; ``amcs train`` and ``amcs export``
take them all (repeated, or as a glob such as ``'part*.jsonl'``) and refuse a problem id present
in two of them — overlapping shards (the same shard run twice, or two runs with different n)
would count a problem twice.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable
from pathlib import Path

from amcs.records import meta_path_for, read_meta

_GLOB_CHARS = set("*?[")


class ShardError(ValueError):
    """Sources that cannot be combined; the message names the files."""


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


def problem_ids(path: Path) -> set[str]:
    """The problems whose lines a file holds: the ok records of its meta file when it has one,
    else the problem_id of every data line (files without problem ids give an empty set)."""
    meta = meta_path_for(path)
    if meta.exists():
        last = {m["problem_id"]: m["status"] for m in read_meta(meta)}
        return {pid for pid, status in last.items() if status == "ok"}
    ids: set[str] = set()
    with open(path, "rb") as f:
        for line in f:
            try:
                pid = json.loads(line).get("problem_id")
            except (ValueError, AttributeError):
                continue  # the data loader reports bad lines with their file and line
            if isinstance(pid, str):
                ids.add(pid)
    return ids


def check_disjoint(sources: Iterable[str | Path]) -> None:
    """Refuse sources that share a problem id (ShardError naming both files and the id)."""
    owner: dict[str, str] = {}
    for source in sources:
        path = Path(source)
        if not path.is_file():
            continue  # a dataset name: its loader reports what is wrong
        for pid in sorted(problem_ids(path)):
            if pid in owner:
                raise ShardError(
                    f"problem {pid!r} is in both {owner[pid]} and {source}: shards must not "
                    "overlap (the same --shard run twice, or runs with different shard counts?)"
                )
            owner[pid] = str(source)
