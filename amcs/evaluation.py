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
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amcs.backends.base import Backend, Rollout, SamplingParams
from amcs.cards import environment, environment_markdown
from amcs.domains import is_domain_source, oracle_domain, source_domain
from amcs.fields import ConfigError, option, validate
from amcs.outputs import naming
from amcs.policy_config import BackendSource, PolicyConfig, open_given
from amcs.prm.names import (
    POLICY_CONFIDENCE,
    SCORER_NAMES,
    TINY_PRM_NAME,
    is_policy_confidence,
    scorer_location,
)
from amcs.problems import Problem
from amcs.verification import STRATEGIES, VerifyConfig, VerifyContext, run_strategy


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


# --- the eval stage: run(EvalConfig(...)), as `amcs eval` does ----------------------------------

ALL_STRATEGIES = ",".join(STRATEGIES)


def _comma_text(value: Any) -> Any:
    """A recipe's list (``n: [1, 4]``) or number (``n: 4``) as the comma-separated text a flag
    gives; anything else unchanged (the field's check names it)."""
    if isinstance(value, list | tuple):
        return ",".join(str(v).strip() for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class EvalConfig(PolicyConfig):
    """Every option of `amcs eval` (``verify`` is a recipe's ``verify:`` section and ``--set``:
    :class:`amcs.verification.VerifyConfig` fields)."""

    problems: str = option(
        "arith-heldout:300",
        "problems: .jsonl/.json/.parquet, a HF dataset, 'arith[:N]' or 'arith-heldout[:N]'",
    )
    limit: int | None = option(None, "only the first N problems [default: all]", min=1)
    strategies: str = option(ALL_STRATEGIES, f"comma-separated, from {ALL_STRATEGIES}")
    n: str = option(
        "1,4,16",
        "budgets, comma-separated: samples (majority, best-of-n, weighted-vote), candidate steps "
        "per depth (beam) or iterations (mcts)",
    )
    prm: str | None = option(
        None,
        f"who scores the steps: {SCORER_NAMES}. A directory may hold a PRM of `amcs train`, "
        "TRL, Math-Shepherd or Qwen2.5-Math-PRM; policy-confidence reads --model unless it names "
        f"its own [default: {TINY_PRM_NAME}]",
    )
    prm_format: str | None = option(
        None, "token-cls | step-tag | qwen-prm [default: read from the checkpoint]"
    )
    prm_batch_size: int = option(32, "steps the PRM scores in one forward pass", min=1)
    baseline: bool | None = option(
        None,
        "also run best-of-n and weighted-vote scored by policy-confidence (the policy's own "
        "lowest token probability per step, no training) on the same samples, so the table "
        "shows what the trained PRM adds; no extra generation. The policy must load with "
        "transformers [default: on with the hf backend]",
    )
    out: str = option("amcs-eval", "report directory: records.jsonl, results.json/.md, PNG")
    concurrency: int = option(64, "problem runs in flight at once", min=1)
    seed: int = option(0, "sampling seed (the strategies' seed)")
    title: str | None = option(None, "the report's title [default: amcs eval: PROBLEMS]")
    verify: dict | None = option(None, "strategy parameters (a recipe's verify:, --set KEY=VALUE)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("out", "problems"):
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        for name in ("n", "strategies"):
            object.__setattr__(self, name, _comma_text(getattr(self, name)))
        validate(self)
        try:
            budgets = [int(x) for x in _split(self.n)]
        except ValueError:
            budgets = []
        if not budgets or min(budgets) < 1:
            raise ConfigError(f"n must list budgets >= 1, got {self.n!r}")

    @property
    def budgets(self) -> list[int]:
        return [int(x) for x in _split(self.n)]


def prm_separator(prm: str | None) -> tuple[str, Path] | None:
    """The separator a PRM directory was trained with (its ``amcs_prm.json``, written by
    ``amcs train``) and that file; None for the oracle, policy-confidence, a hub id or a PRM
    without the file. A file that cannot be read is left to the PRM loader to report; a bad
    separator in it is a ConfigError naming the file."""
    from amcs.assets import TINY_PRM
    from amcs.prm.checkpoint import PRM_CONFIG_FILE, load_prm_config
    from amcs.steps import check_separator

    folder = TINY_PRM if prm in (None, TINY_PRM_NAME) else scorer_location(prm)
    if folder is None:
        return None
    path = Path(folder) / PRM_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        separator = load_prm_config(path.parent).get("separator")
    except (OSError, ValueError, AttributeError):
        return None
    if separator is None:
        return None
    return check_separator(separator, f"{path}: separator"), path


@dataclass
class EvalPlan:
    """A checked evaluation, before any model loads: the strategy parameters, the report's
    cells (baseline cells included), the problems, and whether a PRM is needed."""

    config: EvalConfig
    verify: VerifyConfig
    cells: list[Cell]
    problems: list[Problem]
    needs_prm: bool

    @property
    def out(self) -> Path:
        return Path(self.config.out).expanduser()


def plan(
    config: EvalConfig, *, inputs: tuple = (), notify: Callable[[str], None] | None = None
) -> EvalPlan:
    """Check everything before a model loads (ConfigError, OutputPathError, ProblemError) and
    decide the cells: every strategy at every budget, and with ``baseline`` (default: on with
    the hf backend, whose policy loads with transformers) best-of-n and weighted-vote again,
    scored by policy-confidence. The separator is the PRM's (its amcs_prm.json) unless the
    ``verify`` settings give one; ``notify`` hears when it is not the default."""
    from amcs.outputs import EVAL_FILES, check_output
    from amcs.problems import ProblemError, load_problems
    from amcs.steps import DEFAULT_SEPARATOR
    from amcs.verification import make_verify_config

    verify = dict(config.verify or {})
    verify["seed"] = config.seed
    out = Path(config.out).expanduser()
    check_output(
        "--out",
        out,
        inputs=[config.problems, *inputs, scorer_location(config.prm), config.model],
        beside=[(name, out / name) for name in EVAL_FILES],
        folder=True,
    )
    if verify.get("separator") is None:
        verify.pop("separator", None)
        recorded = prm_separator(config.prm)
        if recorded is not None:
            verify["separator"] = recorded[0]
            if recorded[0] != DEFAULT_SEPARATOR and notify is not None:
                notify(f"steps end with separator {recorded[0]!r}, as {recorded[1]} records")
    verify_config = make_verify_config(**verify)
    try:
        cells = make_cells(_split(config.strategies), config.budgets)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    problems = load_problems(config.problems, limit=config.limit, seed=config.seed)
    if not problems:
        raise ProblemError(f"no problems in {config.problems}")
    needs_prm = any(STRATEGIES[c.strategy].needs_prm for c in cells)
    baseline = config.backend == "hf" if config.baseline is None else config.baseline
    if baseline and not is_policy_confidence(config.prm):
        cells += [
            Cell(c.strategy, c.n, POLICY_CONFIDENCE)
            for c in cells
            if STRATEGIES[c.strategy].rescoring
        ]
    oracle = oracle_domain(config.prm)
    if oracle is not None and not all(oracle.owns(p.question) for p in problems):
        sources = ", ".join(oracle.sources)
        raise ConfigError(f"--prm {config.prm} scores {oracle.title} problems only ({sources})")
    return EvalPlan(config, verify_config, cells, problems, needs_prm)


@dataclass
class EvalResult:
    """A finished evaluation: the report's rows, the files written (``json``, ``markdown``,
    ``plot`` when matplotlib drew it), its settings and the grader's counts."""

    rows: list[dict]
    paths: dict[str, Path]
    settings: dict
    grading: dict[str, int]


async def run_async(
    config: EvalConfig | EvalPlan,
    *,
    backend: BackendSource = None,
    on_record: Callable[[dict], None] | None = None,
    display: Callable[[], Any] | None = None,
    on_report: Callable[[], None] | None = None,
    notify: Callable[[str], None] | None = None,
    inputs: tuple = (),
) -> EvalResult:
    """Evaluate every cell of ``config`` (or of a checked :func:`plan`) on its problems and
    write the report to ``config.out``; an earlier, interrupted evaluation there resumes from
    its records.jsonl.

    backend: an open backend (left open), an async function that opens one (closed at the
    end), or None: the one ``config.backend`` names. on_record(record) hears every finished
    run; display() is a context manager entered around the runs; on_report() is called when
    every run is done, before the report is written (Ctrl-C after it cuts only the report);
    notify(message) hears notes (a PRM's separator). ScorerError when --prm names nothing
    loadable."""
    from amcs.grading import Grader
    from amcs.prm import load_scorer

    run = config if isinstance(config, EvalPlan) else plan(config, inputs=inputs, notify=notify)
    config = run.config

    def scorer(spec: str | None):
        return load_scorer(
            spec,
            prm_format=config.prm_format if spec == config.prm else None,
            policy=config.model,
            separator=run.verify.separator,
            max_batch_size=config.prm_batch_size,
        )

    scorers = {None: scorer(config.prm)} if run.needs_prm else {}
    if any(c.scorer == POLICY_CONFIDENCE for c in run.cells):
        scorers[POLICY_CONFIDENCE] = scorer(POLICY_CONFIDENCE)
    grading: dict[str, int] = {}
    opened = None
    try:
        opened = await open_given(backend, config)
        # majority, best-of-n and weighted vote ask for the same seeded samples: draw them once
        samples = SharedSamples(opened)
        prompt = config.prompt_function()
        contexts = {
            name: VerifyContext(samples, each, run.verify, prompt) for name, each in scorers.items()
        }
        main = contexts.pop(None, None) or VerifyContext(samples, None, run.verify, prompt)
        async with Grader(max_workers=min(2, os.cpu_count() or 1)) as grader:
            try:
                with display() if display is not None else nullcontext():
                    records = await evaluate(
                        run.problems,
                        main,
                        run.cells,
                        grader,
                        run.out / "records.jsonl",
                        concurrency=config.concurrency,
                        on_record=on_record,
                        other_scorers=contexts,
                    )
            finally:
                grading.update(grader.counts())
    finally:
        if opened is not None and opened is not backend:  # we opened it: we close it
            await opened.aclose()
        for each in scorers.values():
            await each.aclose()
    if on_report is not None:
        on_report()
    return report(run, records, grading)


def report(run: EvalPlan, records: Sequence[dict], grading: dict[str, int]) -> EvalResult:
    """Summarize the records and write results.json/.md and the plot."""
    config = run.config
    rows = summarize(records, run.cells, [p.id for p in run.problems])
    settings = {
        "problems": str(config.problems),
        "n_problems": len(run.problems),
        "model": config.model_name,
        "backend": config.backend,
        "prm": str(config.prm or "amcs/tiny-arith-prm") if run.needs_prm else None,
        "verify": run.verify.to_dict(),
        "grading": grading,
    }
    title = config.title or f"amcs eval: {config.problems}"
    return EvalResult(rows, write_report(run.out, rows, settings, title), settings, grading)


def run(config: EvalConfig | EvalPlan, **hooks: Any) -> EvalResult:
    """:func:`run_async` in an event loop of its own: evaluate ``config`` and write its report."""
    return asyncio.run(run_async(config, **hooks))


# --- the step-level stage: run_steps(StepsConfig(...)), as `amcs eval steps` does ------------------


@dataclass(frozen=True)
class StepsConfig:
    """Every option of `amcs eval steps`."""

    data: str = option(
        "arith-heldout:500",
        "a ProcessBench-layout JSONL file (problem, steps, label = earliest wrong step or -1); "
        "an amcs run or TRL PRM rows (prompt, completions, labels: label = first '-' step, the "
        "run's Monte Carlo labels); or arith-heldout[:N] / arith[:N]: sample the policy and "
        "label with exact truth",
    )
    prm: str | None = option(
        None, f"who scores the steps: {SCORER_NAMES} [default: {TINY_PRM_NAME}]"
    )
    prm_format: str | None = option(None, "token-cls | step-tag | qwen-prm [default: detected]")
    prm_batch_size: int = option(32, "steps the PRM scores in one forward pass", min=1)
    threshold: float = option(
        0.5, "a step scoring below this is the predicted earliest error", min=0, max=1
    )
    model: str | None = option(
        None,
        "policy that writes the solutions for arith data [default: the bundled tiny policy]",
    )
    temperature: float = option(1.0, "sampling temperature for arith data", min=0)
    seed: int = option(0, "sampling seed for arith data")
    write_data: str | None = option(
        None, "also save the arith solutions as a ProcessBench-layout file"
    )
    out: str | None = option(None, "write the report (JSON) here too")

    def __post_init__(self) -> None:
        for name in ("data", "write_data", "out"):
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        validate(self)


def run_steps(config: StepsConfig, *, notify: Callable[[str], None] | None = None) -> dict:
    """Step-level F1 of a scorer (:func:`amcs.stepeval.step_report`) on ``config.data``, plus
    data, prm, n and, for labelled paths, the reference they give; written to ``config.out``
    when given. Checks the outputs first (OutputPathError); StepDataError for a bad data file,
    ScorerError when ``prm`` names nothing loadable. notify(message) hears notes on the data."""
    from amcs.outputs import check_distinct, check_output
    from amcs.prm import load_scorer
    from amcs.stepeval import (
        MC_REFERENCE,
        PATHS,
        StepDataError,
        read_step_file,
        score_examples,
        step_report,
        write_step_examples,
    )

    data, model = config.data, config.model
    domain = source_domain(data) if is_domain_source(data) else None
    for option_name, path in (("--write-data", config.write_data), ("--out", config.out)):
        if path is not None:
            check_output(
                option_name,
                path,
                inputs=[scorer_location(config.prm), model],
                runs=[None if domain else data],
            )
    check_distinct([("--write-data", config.write_data), ("--out", config.out)])
    say = notify or (lambda message: None)
    reference = None
    if domain is not None:
        if not domain.has_step_truth:
            raise StepDataError(
                f"--data {data}: the {domain.name} domain has no exact step truth to label with"
            )
        examples = asyncio.run(
            _exact_examples(data, domain, model, config.temperature, config.seed)
        )
        if config.write_data:
            write_step_examples(config.write_data, examples)
    else:
        step_file = read_step_file(data)
        examples = step_file.examples
        if step_file.layout == PATHS:
            reference = MC_REFERENCE
            say(
                f"{data}: labelled paths, one example each (label = first '-' step, -1 when all "
                f"'+'); {MC_REFERENCE}"
            )
            if step_file.prefixes:
                say(
                    f"left out {step_file.prefixes:,} all-'+' path(s) that stop before a final "
                    "answer (prefixes, not full solutions)"
                )
    if not examples:
        raise StepDataError(f"no solutions in {data}")
    scorer = load_scorer(
        config.prm,
        prm_format=config.prm_format,
        policy=model,
        max_batch_size=config.prm_batch_size,
    )

    async def score_all() -> list[list[float]]:
        try:  # concurrent calls: the PRM scores them in batches
            return await score_examples(scorer, examples)
        finally:
            await scorer.aclose()

    scores = asyncio.run(score_all())
    result = step_report(scores, [e.label for e in examples], config.threshold)
    result |= {"data": data, "prm": str(config.prm or "amcs/tiny-arith-prm"), "n": len(examples)}
    if reference:
        result["reference"] = reference
    if config.out:
        out = Path(config.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with naming(out):
            out.write_text(json.dumps(result, indent=2) + "\n")
    return result


async def _exact_examples(spec: str, domain, model: str | None, temperature: float, seed: int):
    from amcs.assets import TINY_POLICY
    from amcs.backends.hf import HFBackend
    from amcs.problems import load_problems
    from amcs.stepeval import exact_step_examples

    problems = load_problems(spec)
    backend = HFBackend(model or TINY_POLICY)
    try:
        return await exact_step_examples(
            backend,
            problems,
            domain=domain,
            temperature=temperature,
            seed=seed,
            generator=Path(str(model)).name if model else "tiny-arith-policy",
        )
    finally:
        await backend.aclose()
