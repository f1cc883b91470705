"""The run fingerprint: what makes two runs of ``amcs generate`` the same run, so that one may
resume the other."""

from __future__ import annotations

from typing import Any


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
