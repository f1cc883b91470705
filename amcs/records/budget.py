"""Cutting a run at a token budget: the longest prefix of its problems whose generated tokens fit,
to compare search methods (or seeds) at equal cost on one stream of problems."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from amcs.records.format import meta_path_for
from amcs.records.reader import read_data, read_meta


def budget_cut(meta: Sequence[dict], budget: int) -> tuple[set[str], int, int]:
    """The longest prefix of meta records (file order) whose generated tokens (stats.tokens) fit
    `budget`: (ids of its problems that finished ok, tokens it cost, failed records in it). A
    failed attempt's tokens count (they were spent) but its problem gives no rows; a problem
    retried ok later counts only if that later record is inside the prefix."""
    spent, kept, failed = 0, set(), 0
    for record in meta:
        tokens = int((record.get("stats") or {}).get("tokens", 0))
        if spent + tokens > budget:
            break
        spent += tokens
        if record.get("status", "ok") == "ok":
            kept.add(record["problem_id"])
        else:
            failed += 1
    return kept, spent, failed


def within_budget(data_path: Path, budget: int) -> tuple[list[dict], int, int, int]:
    """Data rows of the budget's prefix of problems: (rows, tokens, problems ok, failed)."""
    kept, spent, failed = budget_cut(read_meta(meta_path_for(data_path)), budget)
    rows = [row for row in read_data(data_path) if row["problem_id"] in kept]
    return rows, spent, len(kept), failed


def committed_tokens(data_path: Path) -> tuple[int, int]:
    """(generated tokens, distinct problems searched) of a data file's committed meta records."""
    if not meta_path_for(data_path).exists():
        return 0, 0
    meta = read_meta(meta_path_for(data_path))
    tokens = sum(int((r.get("stats") or {}).get("tokens", 0)) for r in meta)
    return tokens, len({r["problem_id"] for r in meta})
