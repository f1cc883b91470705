"""`amcs eval`'s runner: verification strategies over a problem set, graded, with compute.

Every (strategy, n) cell runs on every problem through one backend and one PRM, many problems at
once so the backend batches. Each finished (strategy, n, problem) is appended to a JSONL record
file as soon as it is graded, so an interrupted evaluation resumes where it stopped. The summary
puts accuracy next to the compute it cost: generated tokens and PRM calls per problem.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from amcs.backends.base import Backend, Rollout, SamplingParams
from amcs.cards import environment, environment_markdown
from amcs.outputs import naming
from amcs.problems import Problem
from amcs.verification import STRATEGIES, VerifyContext, run_strategy


@dataclass(frozen=True)
class Cell:
    """One row of the report: a strategy at a budget n (greedy always runs at n = 1), scored by
    the run's PRM, or by another scorer (``scorer``, e.g. the policy-confidence baseline)."""

    strategy: str
    n: int
    scorer: str | None = None

    @property
    def name(self) -> str:
        """The strategy as records and reports name it: 'best-of-n (policy-confidence)'."""
        return f"{self.strategy} ({self.scorer})" if self.scorer else self.strategy

    @property
    def key(self) -> str:
        return f"{self.name}@{self.n}"


def make_cells(strategies: Sequence[str], ns: Sequence[int]) -> list[Cell]:
    """The grid strategies x ns; a strategy without a budget (greedy) once, at n = 1."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(
            f"unknown strateg{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"choose from {', '.join(STRATEGIES)}"
        )
    if not ns or any(n < 1 for n in ns):
        raise ValueError("every n must be >= 1")
    cells: list[Cell] = []
    for strategy in strategies:
        for n in sorted(set(ns)) if STRATEGIES[strategy].budgeted else [1]:
            if Cell(strategy, n) not in cells:
                cells.append(Cell(strategy, n))
    return cells


class SharedSamples:
    """A backend wrapper that answers a repeated seeded request from memory.

    Strategies derive their seeds from (seed, question, call index), so majority, best-of-n and
    weighted vote at the same n ask for exactly the same samples; a seeded request always gives
    the same rollouts, so sampling them once is the same evaluation at a third of the cost. Each
    strategy still counts the tokens as its own: the report's compute is what the strategy
    alone would have generated. Unseeded requests pass through.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self._results: dict[tuple, asyncio.Future] = {}
        self.hits = 0

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        if params.seed is None:
            return await self.backend.sample(prompt_ids, n, params)
        key = (tuple(prompt_ids), n, params)
        future = self._results.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._results[key] = future
            try:
                future.set_result(await self.backend.sample(prompt_ids, n, params))
            except BaseException as exc:
                del self._results[key]  # a failure is not remembered: a retry samples again
                future.set_exception(exc)
                future.exception()  # retrieved here, so a lone failure is not logged twice
                raise
        else:
            self.hits += 1
        return list(await asyncio.shield(future))

    async def aclose(self) -> None:
        self._results.clear()
        await self.backend.aclose()


def read_done(path: Path) -> dict[tuple[str, int, str], dict]:
    """Records already in the file, by (strategy, n, problem id). A torn last line (a crash
    mid-write) is ignored; it is rewritten by the resumed run."""
    done: dict[tuple[str, int, str], dict] = {}
    if not path.exists():
        return done
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(record["strategy"], int(record["n"]), str(record["problem_id"]))] = record
    return done


def _truncate_torn_tail(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


async def evaluate(
    problems: Sequence[Problem],
    ctx: VerifyContext,
    cells: Sequence[Cell],
    grader,
    records_path: str | Path,
    *,
    concurrency: int = 64,
    on_record: Callable[[dict], None] | None = None,
    other_scorers: Mapping[str, VerifyContext] | None = None,
) -> list[dict]:
    """Run every cell on every problem; return all records (old ones from the file included).

    ``grader`` has ``async equivalent(predicted, reference) -> bool`` (amcs.grading.Grader).
    Up to ``concurrency`` (cell, problem) runs are in flight at once. A cell with a ``scorer``
    runs with ``other_scorers[cell.scorer]`` (the same samples, another PRM).
    """
    records_path = Path(records_path)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    _truncate_torn_tail(records_path)
    done = read_done(records_path)
    todo = [
        (cell, problem)
        for cell in cells
        for problem in problems
        if (cell.name, cell.n, problem.id) not in done
    ]
    contexts = dict(other_scorers or {})
    missing = {cell.scorer for cell in cells if cell.scorer and cell.scorer not in contexts}
    if missing:
        raise ValueError(f"no context for the scorers {sorted(missing)}")
    slots = asyncio.Semaphore(concurrency)
    records = list(done.values())

    # naming outside open: closing the file flushes too, and may fail the same way.
    with naming(records_path), records_path.open("a", encoding="utf-8") as out:

        async def one(cell: Cell, problem: Problem) -> None:
            async with slots:
                run_ctx = contexts[cell.scorer] if cell.scorer else ctx
                result = await run_strategy(cell.strategy, run_ctx, problem.question, cell.n)
                correct = await grader.equivalent(result.answer, problem.answer)
            record = {
                "strategy": cell.name,
                "n": cell.n,
                "problem_id": problem.id,
                "question": problem.question,
                "reference": problem.answer,
                "answer": result.answer,
                "correct": bool(correct),
                "tokens": result.tokens,
                "prm_calls": result.prm_calls,
                "rollouts": result.rollouts,
                "requests": result.requests,
                "text": result.text,
                "chosen": result.chosen,
                "votes": result.votes,
                "stats": result.stats,
                "candidates": [c.to_dict() for c in result.candidates],
            }
            # Written between awaits, whole lines only: a crash loses at most runs in flight.
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            records.append(record)
            if on_record is not None:
                on_record(record)

        async with asyncio.TaskGroup() as tg:
            for cell, problem in todo:
                tg.create_task(one(cell, problem))
        os.fsync(out.fileno())
    return records


def _mean(records: Sequence[dict], key: str) -> float | None:
    return sum(r[key] for r in records) / len(records) if records else None


def summarize(records: Sequence[dict], cells: Sequence[Cell], problem_ids: Sequence[str]) -> list:
    """One row per cell over the given problems: accuracy, generated tokens, PRM calls and
    rollouts per problem."""
    wanted = set(problem_ids)
    rows = []
    for cell in cells:
        mine = [
            r
            for r in records
            if r["strategy"] == cell.name and r["n"] == cell.n and r["problem_id"] in wanted
        ]
        rows.append(
            {
                "strategy": cell.name,
                "n": cell.n,
                "problems": len(mine),
                "accuracy": _mean(mine, "correct"),
                "tokens_per_problem": _mean(mine, "tokens"),
                "prm_calls_per_problem": _mean(mine, "prm_calls"),
                "rollouts_per_problem": _mean(mine, "rollouts"),
            }
        )
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    lines = [
        "| strategy | N | accuracy | generated tokens / problem | PRM calls / problem | problems |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r["problems"]:
            continue
        lines.append(
            f"| {r['strategy']} | {r['n']} | {r['accuracy']:.1%} | {r['tokens_per_problem']:,.0f} "
            f"| {r['prm_calls_per_problem']:.1f} | {r['problems']} |"
        )
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_tokens(rows: Sequence[dict], path: str | Path, title: str = "") -> bool:
    """Accuracy against generated tokens per problem, one line per strategy (log x).
    Returns False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        pts = sorted(
            (r["tokens_per_problem"], r["accuracy"], r["n"])
            for r in rows
            if r["strategy"] == strategy and r["problems"]
        )
        if not pts:
            continue
        xs, ys, ns = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", label=strategy)
        for x, y, n in pts:
            ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem (log)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "accuracy vs generated tokens (labels: N)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(
    out_dir: str | Path, rows: Sequence[dict], settings: dict, title: str = ""
) -> dict[str, Path]:
    """results.json, results.md and accuracy_vs_tokens.png in out_dir, each with the
    environment the evaluation ran in (:func:`amcs.cards.environment`: amcs, torch and
    transformers versions, policy model, PRM, backend, device, date).

    results.json is what says the evaluation finished, so it goes last, and an earlier one is
    removed first: a report cut short (Ctrl-C, SIGTERM, a full disk) leaves no results.json, and
    never one beside a plot or table of another evaluation. Each file is written beside its
    place and renamed into it, so none is ever half-written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    paths["json"].unlink(missing_ok=True)
    header = f"# {title}\n\n" if title else ""
    env = environment(settings)
    table = markdown_table(rows) + "\n" + environment_markdown(env)
    _write_then_rename(paths["markdown"], lambda part: part.write_text(header + table))
    png = out_dir / "accuracy_vs_tokens.png"
    if _write_then_rename(png, lambda part: plot_accuracy_vs_tokens(rows, part, title)):
        paths["plot"] = png
    else:
        png.unlink(missing_ok=True)  # another evaluation's plot (no matplotlib to draw this one)
    report = {"settings": settings, "environment": env, "results": list(rows)}
    text = json.dumps(report, indent=2) + "\n"
    _write_then_rename(paths["json"], lambda part: part.write_text(text))
    return paths


def _write_then_rename(path: Path, write: Callable[[Path], object]) -> bool:
    """``write(part)`` to a file beside ``path`` (same suffix, for writers that go by it), then
    rename it to ``path``; False, and nothing renamed, when ``write`` returns False. The partial
    file is removed on any failure or interruption."""
    part = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        with naming(path):
            if write(part) is False:
                return False
            os.replace(part, path)
        return True
    finally:
        part.unlink(missing_ok=True)
