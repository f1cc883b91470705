"""An `amcs eval --out` folder as the viewer reads it: the settings and results rows of
results.json, and per problem every (strategy, N) run of records.jsonl with its candidates.

A candidate's correctness: the run's own grade when its answer is the chosen one's, else an exact
comparison of plain numbers (amcs.grading.answers_match_fast), else unknown (None). For a problem
of a domain with step truth (arith's, any registered one) each candidate step also gets its exact
truth from the domain's check_steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from amcs.domains import Domain
from amcs.grading import answers_match_fast
from amcs.steps import DEFAULT_SEPARATOR, split_steps
from amcs.view.run import ViewError, truth_domain

RECORDS = "records.jsonl"
RESULTS = "results.json"


def is_eval_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / RECORDS).exists() or (path / RESULTS).exists())


def _read_records(path: Path) -> list[dict]:
    """The records, the last one for each (strategy, n, problem) winning; a torn last line is
    ignored (a resumed eval rewrites it)."""
    done: dict[tuple, dict] = {}
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    for line_no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            key = (record["strategy"], int(record["n"]), str(record["problem_id"]))
        except (ValueError, KeyError, TypeError):
            if line_no >= len(lines) - 1:
                continue
            raise ViewError(
                f"{path}:{line_no}: not an amcs eval record (JSON with strategy, n, problem_id)"
            ) from None
        done[key] = record
    return list(done.values())


def candidate_correct(answer: str | None, record: dict) -> bool | None:
    if answer is None:
        return False
    if record.get("answer") is not None and answer == record["answer"]:
        return bool(record.get("correct"))
    return answers_match_fast(str(answer), str(record.get("reference") or ""))


def load_eval(path: str | Path, limit: int | None = None) -> dict:
    """Everything the eval page shows; ViewError when the folder is not an eval output."""
    path = Path(path)
    if not path.exists():
        raise ViewError(f"{path}: no such file or directory")
    if not is_eval_dir(path):
        raise ViewError(f"{path} is not an amcs eval folder: it has no {RECORDS} or {RESULTS}")
    settings: dict = {}
    environment: dict = {}
    results: list[dict] = []
    if (path / RESULTS).exists():
        try:
            report = json.loads((path / RESULTS).read_text(encoding="utf-8"))
            settings, results = dict(report.get("settings") or {}), list(report["results"])
            environment = dict(report.get("environment") or {})  # none before amcs wrote it
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ViewError(f"{path / RESULTS}: not an amcs eval results file") from None
    rules = _step_rules(settings.get("verify"))
    problems: dict[str, dict] = {}
    judges: dict[str, Domain | None] = {}  # problem id -> the domain that gives its step truth
    cells: list[str] = []
    for record in _read_records(path / RECORDS):
        pid = str(record["problem_id"])
        problem = problems.get(pid)
        if problem is None:
            question = str(record.get("question") or "")
            domain = truth_domain(question)
            problem = problems[pid] = {
                "problem_id": pid,
                "question": question,
                "reference": record.get("reference"),
                "domain": domain.name if domain else None,
                "domain_title": domain.title if domain else None,
                "runs": [],
            }
            judges[pid] = domain
        cell = f"{record['strategy']}@{record['n']}"
        if cell not in cells:
            cells.append(cell)
        problem["runs"].append(_run(record, problem["question"], judges[pid], rules))
    order = {c: i for i, c in enumerate(_cell_order(results, cells))}
    listed = list(problems.values())
    for problem in listed:
        problem["runs"].sort(key=lambda r: order.get(r["cell"], len(order)))
        problem["correct"] = sum(bool(r["correct"]) for r in problem["runs"])
    return {
        "settings": settings,
        "environment": environment,
        "results": results,
        "cells": _cell_order(results, cells),
        "problems": listed[:limit] if limit else listed,
        "total_problems": len(listed),
        "records": sum(len(p["runs"]) for p in listed),
    }


def _cell_order(results: list[dict], cells: list[str]) -> list[str]:
    ordered = [f"{r['strategy']}@{r['n']}" for r in results if "strategy" in r and "n" in r]
    return ordered + [c for c in cells if c not in ordered]


def _step_rules(verify: Any) -> dict:
    """How the eval split its samples into steps (its verify settings; defaults for what an
    older or damaged results file lacks)."""
    verify = verify if isinstance(verify, dict) else {}
    separator = verify.get("separator")

    def count(key: str) -> int:
        value = verify.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return {
        "separator": separator if isinstance(separator, str) and separator else DEFAULT_SEPARATOR,
        "min_step_chars": count("min_step_chars"),
        "max_solution_steps": count("max_solution_steps"),
    }


def _run(record: dict, question: str, domain: Domain | None, rules: dict) -> dict:
    candidates = []
    for c in record.get("candidates") or []:
        steps = split_steps(str(c.get("text") or ""), **rules)
        truth = domain.check_steps(question, steps).prefix_correct if domain else None
        candidates.append(
            {
                "steps": steps,
                "answer": c.get("answer"),
                "score": c.get("score"),
                "step_scores": c.get("step_scores") or [],
                "finished": c.get("finished", True),
                "correct": candidate_correct(c.get("answer"), record),
                "truth": truth,
            }
        )
    keep = ("strategy", "n", "answer", "correct", "tokens", "prm_calls", "chosen", "votes", "stats")
    return {k: record.get(k) for k in keep} | {
        "cell": f"{record['strategy']}@{record['n']}",
        "candidates": candidates,
    }
