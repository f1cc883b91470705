"""A `generate` run as the viewer reads it: the meta file indexed by byte offset, one table row
per problem, the run's totals, and one problem's step tree with its labelled paths.

The meta file is read lazily. Opening a run scans it once for line offsets and problem ids (a
regular expression per line, no JSON parsing), so a 100k-problem file opens in about a second; a
problem's record is parsed when it is asked for. Lines without ``problem_id`` are skipped; the first
of them with a ``fingerprint`` is the run header. A problem id that appears again (a failed problem
retried on resume) takes its last record, at the position where it first appeared.

A problem's data lines are the bytes of data.jsonl between the previous meta line's ``data_end``
and its own (the writer commits data before meta, and resume truncates data to the last commit).
"""

from __future__ import annotations

import json
import mmap
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amcs.domains import Domain, question_domain
from amcs.records import meta_path_for
from amcs.redaction import redact

STEP_JOIN = "\n\n"  # amcs.search.tree.Node.to_dict joins a node's steps with this
_ID_RE = re.compile(rb'"problem_id"\s*:\s*("(?:[^"\\]|\\.)*")')
QUESTION_CHARS = 200
REASON_CHARS = 400

# The columns of a problem's table row, in order (rows travel as lists to keep pages small).
ROW_COLUMNS = (
    "index",
    "problem_id",
    "status",
    "root_mc",
    "rollouts",
    "tokens",
    "paths",
    "labels_positive",
    "labels_negative",
    "early_exits",
    "nodes",
    "exact",
    "question",
    "reason",
)


class ViewError(ValueError):
    """Input the viewer cannot show; the message is one line for the user."""


@dataclass
class Entry:
    problem_id: str
    start: int  # byte offset of the meta line
    end: int  # offset after its newline
    previous: int  # offset of the problem line before it in the file (-1: none)


def run_paths(path: str | Path) -> tuple[Path, Path]:
    """(data.jsonl, data.meta.jsonl) for a data file or its meta file; ViewError when absent."""
    path = Path(path)
    if path.name.endswith(".meta.jsonl"):
        data, meta = path.with_name(path.name[: -len(".meta.jsonl")] + ".jsonl"), path
    else:
        data, meta = path, meta_path_for(path)
    if not path.exists():
        raise ViewError(f"{path}: no such file")
    if path.is_dir():
        raise ViewError(f"{path} is a directory but not an amcs eval folder (no records.jsonl)")
    if not meta.exists():
        raise ViewError(f"{path} is not an amcs generate run: its meta file {meta.name} is missing")
    if not data.exists():
        raise ViewError(f"{meta} has no data file beside it ({data.name} is missing)")
    return data, meta


def truth_domain(question: str) -> Domain | None:
    """The registered domain with exact step truth that owns ``question`` (arith for its
    questions), else None: the viewer knows a problem by its question text alone."""
    return question_domain(question) if question else None


class RunIndex:
    """The meta and data files of one run, indexed; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.data_path, self.meta_path = run_paths(path)
        self.header: dict | None = None
        self.meta_lines = 0  # problem lines in the file, superseded ones included
        self._meta = self._map(self.meta_path)
        self._data_file = open(self.data_path, "rb")  # noqa: SIM115 - closed by close()
        self._scan()

    @staticmethod
    def _map(path: Path) -> bytes | mmap.mmap:
        with open(path, "rb") as f:
            if f.seek(0, 2) == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def close(self) -> None:
        self._data_file.close()
        if isinstance(self._meta, mmap.mmap):
            self._meta.close()

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._ids)

    def _scan(self) -> None:
        mm, size = self._meta, len(self._meta)
        where: dict[str, int] = {}
        ids, starts, ends, previous_of = [], [], [], []
        pos, previous, line_no, other = 0, -1, 0, 0
        search, find = _ID_RE.search, mm.find
        while pos < size:
            newline = find(b"\n", pos)
            if newline == -1:
                break  # a last line torn by a crash: not committed
            line_no += 1
            match = search(mm, pos, newline)
            if match is None:
                self._other_line(mm[pos:newline], line_no, newline + 1 == size)
                other += 1
            elif newline + 1 == size and not _parses(mm[pos:newline]):
                break  # torn last line that still holds its problem id
            else:
                quoted = match.group(1)
                pid = json.loads(quoted) if b"\\" in quoted else quoted[1:-1].decode()
                slot = where.get(pid)
                if slot is None:
                    where[pid] = len(ids)
                    ids.append(pid)
                    starts.append(pos)
                    ends.append(newline + 1)
                    previous_of.append(previous)
                else:  # retried: the last record wins, at the place of the first
                    starts[slot], ends[slot], previous_of[slot] = pos, newline + 1, previous
                previous = pos
                self.meta_lines += 1
            pos = newline + 1
        self._ids, self._starts, self._ends, self._previous = ids, starts, ends, previous_of
        if not ids and other:
            raise ViewError(
                f"{self.meta_path} is not an amcs generate meta file: no line has a problem_id"
            )

    @property
    def entries(self) -> list[Entry]:
        return [self.entry(i) for i in range(len(self._ids))]

    def entry(self, index: int) -> Entry:
        return Entry(
            self._ids[index], self._starts[index], self._ends[index], self._previous[index]
        )

    def _other_line(self, line: bytes, line_no: int, last: bool) -> None:
        if not line.strip():
            return
        try:
            record = json.loads(line)
        except ValueError:
            if last:
                return
            raise ViewError(f"{self.meta_path}:{line_no}: invalid JSON") from None
        if self.header is None and isinstance(record, dict) and "fingerprint" in record:
            self.header = record

    # --- records ---------------------------------------------------------------------------

    def record(self, index: int) -> dict:
        return self._parse(self._starts[index], self._ends[index])

    def _parse(self, start: int, end: int) -> dict:
        try:
            record = json.loads(self._meta[start:end])
        except ValueError as exc:
            line = self._meta[:start].count(b"\n") + 1
            raise ViewError(f"{self.meta_path}:{line}: invalid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise ViewError(f"{self.meta_path}: a problem line is not a JSON object")
        return record

    def records(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self.record(i)

    def paths(self, index: int, record: dict | None = None) -> list[dict]:
        """The problem's labelled paths from data.jsonl (its byte range, see the docstring)."""
        entry = self.entry(index)
        record = record if record is not None else self.record(index)
        start = 0
        if entry.previous >= 0:
            end_of_previous = self._meta.find(b"\n", entry.previous) + 1
            start = int(self._parse(entry.previous, end_of_previous).get("data_end") or 0)
        end = int(record.get("data_end") or start)
        if end <= start:
            return []
        self._data_file.seek(start)
        chunk = self._data_file.read(end - start)
        lines = []
        for raw in chunk.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                raise ViewError(
                    f"{self.data_path}: bytes {start}-{end} (problem {entry.problem_id}) "
                    "are not JSON lines: data and meta files do not belong together"
                ) from None
            if isinstance(line, dict) and line.get("problem_id") == entry.problem_id:
                lines.append(line)
        return lines

    def fingerprint(self) -> dict:
        """The run header's fingerprint, or what the first data line says (older files)."""
        if self.header is not None:
            return {"header": True, **dict(self.header.get("fingerprint") or {})}
        found: dict[str, Any] = {"header": False}
        for i in range(min(len(self), 50)):
            paths = self.paths(i)
            if paths:
                found |= {"method": paths[0].get("method"), "model": paths[0].get("model")}
                break
        return found


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


# --- rows and totals ---------------------------------------------------------------------------


def problem_row(index: int, record: dict) -> list:
    stats = record.get("stats") or {}
    tree = record.get("tree") or {}
    question = str(record.get("question") or "")
    return [
        index,
        record.get("problem_id"),
        record.get("status"),
        tree.get("mc"),
        stats.get("rollouts", 0),
        stats.get("tokens", 0),
        record.get("paths", 0),
        stats.get("labels_positive", 0),
        stats.get("labels_negative", 0),
        stats.get("early_exits", 0),
        stats.get("nodes", 0),
        truth_domain(question) is not None,
        question[:QUESTION_CHARS],
        redact(str(record.get("reason") or ""))[:REASON_CHARS],  # older runs wrote it as said
    ]


TOTAL_KEYS = (
    "problems",
    "problems_ok",
    "problems_failed",
    "paths",
    "labels_positive",
    "labels_negative",
    "rollouts",
    "tokens",
    "early_exits",
    "nodes",
    "searches",
    "prompt_tokens",
    "cached_tokens",
    "grading_retried",
    "grading_unresolved",
)


class Totals:
    """Sums over the problems' meta records; the cache hit ratio as `amcs generate` reports it."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(TOTAL_KEYS, 0)
        self.wall_time = 0.0

    def add(self, record: dict) -> None:
        c, stats = self.counts, record.get("stats") or {}
        c["problems"] += 1
        c["problems_ok" if record.get("status") == "ok" else "problems_failed"] += 1
        c["paths"] += int(record.get("paths") or 0)
        for key in TOTAL_KEYS[4:]:
            c[key] += int(stats.get(key) or 0)
        self.wall_time += float(stats.get("wall_time") or 0.0)

    def to_dict(self) -> dict:
        c = self.counts
        ratio = c["cached_tokens"] / c["prompt_tokens"] if c["cached_tokens"] else None
        return c | {"cache_hit_ratio": ratio, "wall_time": round(self.wall_time, 3)}


# --- one problem ---------------------------------------------------------------------------------


def split_node_text(text: str) -> list[str]:
    return text.split(STEP_JOIN) if text else []


def problem_detail(record: dict, paths: list[dict]) -> dict:
    """One problem for the page: its record (tree left out), the step tree and the paths.

    The step tree has one node per distinct step prefix seen by the search or written on a path:
    evaluated prefixes carry the tree's MC, rollouts, early exit, cluster sizes and uncertainty
    (and the rollouts themselves, when the run kept them: ``amcs generate --keep-rollouts``);
    prefixes on labelled paths carry each path's label, value and rollouts (0: inherited from a
    later prefix). For a problem of a domain with step truth (arith's, any registered one) every
    prefix also gets its exact truth (all steps so far correct) from the domain's check_steps.
    """
    question = str(record.get("question") or "")
    domain = truth_domain(question)
    nodes: list[dict] = []
    by_key: dict[tuple[str, ...], dict] = {}

    def node_for(key: tuple[str, ...]) -> dict:
        node = by_key.get(key)
        if node is not None:
            return node
        parent = node_for(key[:-1]) if key else None
        node = {
            "id": len(nodes),
            "parent": parent["id"] if parent else None,
            "depth": len(key),
            "step": key[-1] if key else "",
            "evaluated": False,
            "mc": None,
            "rollouts": 0,
            "visits": 0,
            "early_exit": None,
            "clusters": None,
            "uncertainty": None,
            "kept_rollouts": None,
            "labels": [],
            "first_error": False,
            "truth": None,
            "step_truth": None,
            "children": [],
        }
        nodes.append(node)
        by_key[key] = node
        if parent is not None:
            parent["children"].append(node["id"])
        return node

    def walk(tree: dict, prefix: tuple[str, ...]) -> None:
        key = prefix + tuple(split_node_text(str(tree.get("text") or "")))
        node = node_for(key)
        if tree.get("mc") is not None:
            node |= {
                "evaluated": True,
                "mc": tree["mc"],
                "rollouts": tree.get("rollouts", 0),
                "visits": tree.get("visits", 0),
                "early_exit": tree.get("early_exit"),
                "clusters": tree.get("clusters"),
                "uncertainty": tree.get("uncertainty"),
                "kept_rollouts": tree.get("kept_rollouts"),
            }
        for child in tree.get("children") or []:
            walk(child, key)

    node_for(())
    if record.get("tree"):
        walk(record["tree"], ())

    out_paths = []
    for p_index, path in enumerate(paths):
        steps = [str(s) for s in path.get("completions") or []]
        labels = [bool(x) for x in path.get("labels") or []]
        values = list(path.get("values") or [None] * len(steps))
        counts = list(path.get("rollouts") or [None] * len(steps))
        first_error = next((i for i, ok in enumerate(labels) if not ok), -1)
        node_ids = []
        for i in range(len(steps)):
            node = node_for(tuple(steps[: i + 1]))
            node_ids.append(node["id"])
            node["labels"].append(
                {
                    "path": p_index,
                    "label": labels[i] if i < len(labels) else None,
                    "value": values[i] if i < len(values) else None,
                    "rollouts": counts[i] if i < len(counts) else None,
                }
            )
            if i == first_error:
                node["first_error"] = True
        out_paths.append(
            {
                "completions": steps,
                "labels": labels,
                "values": values,
                "rollouts": counts,
                "first_error": first_error,
                "nodes": node_ids,
                "truth": None,
            }
        )

    agreement = None
    if domain is not None:
        keyed = {n["id"]: key for key, n in by_key.items()}
        for node in nodes:
            if node["children"] or not node["depth"]:
                continue
            key = keyed[node["id"]]
            check = domain.check_steps(question, list(key))
            for i in range(len(key)):
                prefix_node = by_key[key[: i + 1]]
                prefix_node["truth"] = check.prefix_correct[i]
                prefix_node["step_truth"] = check.step_correct[i]
        agree = total = 0
        for path in out_paths:
            path["truth"] = [nodes[i]["truth"] for i in path["nodes"]]
            for label, truth in zip(path["labels"], path["truth"], strict=False):
                total += 1
                agree += label == truth
        agreement = {"agree": agree, "steps": total}

    root = nodes[0]
    info = {k: v for k, v in record.items() if k != "tree"}
    if isinstance(info.get("reason"), str):  # a reason written before amcs redacted them
        info["reason"] = redact(info["reason"])
    return info | {
        "has_tree": bool(record.get("tree")),
        "exact": domain is not None,
        "domain": domain.name if domain else None,
        "domain_title": domain.title if domain else None,
        "root": root["id"],
        "nodes": nodes,
        "labelled_paths": out_paths,
        "agreement": agreement,
    }
