"""`amcs eval`: PRM-guided verification with accuracy next to compute, and `amcs eval steps`:
ProcessBench's step-level F1."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from amcs import evaluation
from amcs.evaluation import EvalConfig, StepsConfig
from amcs.fields import ConfigError
from amcs.outputs import OutputPathError
from amcs.prm.names import ScorerError
from amcs.problems import ProblemError
from amcs.redaction import redact_logging
from amcs.stepeval import StepDataError
from amcs.verification.config import VerifyConfig
from cli.common import (
    check_backend_options,
    config_defaults,
    config_flag,
    config_sets,
    err,
    fail,
    interrupted,
    make_command_config,
    merge_options,
    open_backend,
    parse_sets,
    say,
)

app = typer.Typer(
    help="Verify solutions with a PRM: accuracy vs generated tokens; `steps` for step-level F1.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)

FLAGS = {
    "problems", "limit", "strategies", "n", "prm", "prm_format", "baseline", "backend", "model",
    "url", "prompt_format", "out", "concurrency", "seed",
}  # fmt: skip
STEPS_FLAGS = {
    "data", "prm", "prm_format", "threshold", "model", "temperature", "seed", "write_data", "out",
}  # fmt: skip


def _flag(name: str, *param_decls: str) -> Any:
    return config_flag(EvalConfig, name, *param_decls)


def _steps_flag(name: str, *param_decls: str) -> Any:
    return config_flag(StepsConfig, name, *param_decls)


def strategy_parameters_help() -> str:
    """The --set keys with their help, allowed values and defaults, from VerifyConfig's fields."""
    from amcs.fields import field_help
    from amcs.verification.config import VerifyConfig

    rows = [
        f"  {name:<19} {text} [default: {default!r}]"
        for name, text, default in field_help(VerifyConfig)
        if name != "n"
    ]
    return "Strategy parameters (--set KEY=VALUE, or a recipe's verify: section):\n\n\b\n" + (
        "\n".join(rows)
    )


@app.callback(epilog=strategy_parameters_help())
def eval_command(
    ctx: typer.Context,
    recipe: Path | None = typer.Option(
        None, "--recipe", "-r", help="YAML recipe with any of these options; the command line wins."
    ),
    problems: str | None = _flag("problems"),
    limit: int | None = _flag("limit"),
    strategies: str | None = _flag("strategies"),
    n: str | None = _flag("n"),
    prm: str | None = _flag("prm"),
    prm_format: str | None = _flag("prm_format"),
    aggregation: str | None = config_flag(VerifyConfig, "aggregation"),
    baseline: bool | None = _flag("baseline", "--baseline/--no-baseline"),
    backend: str | None = _flag("backend"),
    model: str | None = _flag("model"),
    url: list[str] | None = _flag("url", "--url"),
    prompt_format: str | None = _flag("prompt_format"),
    out: Path | None = _flag("out"),
    concurrency: int | None = _flag("concurrency"),
    seed: int | None = _flag("seed"),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Strategy parameter KEY=VALUE, repeatable (the keys are listed below).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log lines instead of a live bar."),
) -> None:
    """Compare verification strategies at equal compute: greedy, majority vote, PRM best-of-N,
    PRM-weighted vote, step-level beam search and MCTS, each graded against the reference
    answers, with generated tokens and PRM calls per problem.

    Writes OUT/records.jsonl (one line per strategy, N and problem; an interrupted run resumes
    from it), OUT/results.json, OUT/results.md (also printed) and OUT/accuracy_vs_tokens.png.
    results.json is written last: an evaluation stopped by Ctrl-C (exit 130) or SIGTERM (143)
    has none, and the same command resumes it from records.jsonl.

    Examples:

      amcs eval --recipe recipes/tiny-arith/eval.yaml

      amcs eval --strategies majority,best-of-n --n 4,16 --prm my-prm --out eval-mine

      amcs eval steps --prm my-prm
    """
    if ctx.invoked_subcommand is not None:
        return
    params = locals()
    given = {name: params[name] for name in FLAGS}
    given["url"] = list(url or []) or None
    given["out"] = str(out) if out is not None else None
    opts, verify = merge_options(recipe, config_defaults(EvalConfig, "verify"), given, "verify")
    verify |= parse_sets(set_)
    if aggregation is not None:
        verify["aggregation"] = aggregation
    check_backend_options(opts)
    config = make_command_config(EvalConfig, opts | {"verify": verify}, FLAGS)
    try:
        run = evaluation.plan(config, inputs=(recipe,), notify=say)
    except (ConfigError, OutputPathError, ProblemError) as exc:
        fail(str(exc))
    logging.basicConfig(
        level=logging.INFO if quiet else logging.WARNING, format="%(asctime)s %(message)s"
    )
    redact_logging()  # a warning may quote a server's error body
    _run_eval(opts, run, quiet)


def _run_eval(opts: dict, run: evaluation.EvalPlan, quiet: bool) -> None:
    total = len(run.cells) * len(run.problems)
    progress = Progress(
        TextColumn("eval"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
        disable=quiet,
    )
    task = progress.add_task("eval", total=total, status="")
    tallies = {"runs": 0, "tokens": 0}
    log = logging.getLogger("amcs")
    reporting = []  # set when every run is done and the report is being written

    def on_record(record: dict) -> None:
        tallies["runs"] += 1
        tallies["tokens"] += record["tokens"]
        status = f"{record['strategy']}@{record['n']} · {tallies['tokens']:,} tokens"
        progress.update(task, advance=1, status=status)
        if quiet and tallies["runs"] % 100 == 0:
            log.info("runs %d · %s", tallies["runs"], status)

    records = run.out / "records.jsonl"
    try:
        result = evaluation.run(
            run,
            backend=lambda: open_backend(opts, run.config.model_path),
            on_record=on_record,
            display=lambda: progress,
            on_report=lambda: reporting.append(True),
        )
    except ScorerError as exc:
        fail(f"--prm: {exc}")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.common.install_sigterm_as_ctrl_c)
        if reporting:
            interrupted(
                f"every run is in {records}, but the report was cut short (no results.json); "
                "run the same command again to write it"
            )
        interrupted(
            f"finished runs are in {records}, no report was written; "
            "run the same command again to resume"
        )
    if result.grading.get("unresolved"):
        err.print(
            f"grading timeouts: {result.grading['unresolved']} answer(s) got no verdict after the "
            "retries and count as wrong"
        )
    console = Console()
    console.print(Markdown(result.paths["markdown"].read_text()))
    err.print(f"report: {', '.join(str(p) for p in result.paths.values())}")
    if "plot" not in result.paths:
        say("no plot: matplotlib is not installed (pip install 'amcs-prm[plots]')")


@app.command("steps")
def steps_command(
    data: str | None = _steps_flag("data"),
    prm: str | None = _steps_flag("prm"),
    prm_format: str | None = _steps_flag("prm_format"),
    threshold: float | None = _steps_flag("threshold"),
    model: str | None = _steps_flag("model"),
    temperature: float | None = _steps_flag("temperature"),
    seed: int | None = _steps_flag("seed"),
    write_data: Path | None = _steps_flag("write_data"),
    out: Path | None = _steps_flag("out"),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Any option above as KEY=VALUE (also prm_batch_size), repeatable; the flags win.",
    ),
) -> None:
    """Step-level F1 as ProcessBench computes it: a1 = accuracy of the predicted earliest error
    on erroneous solutions, a2 = accuracy on correct ones, F1 = 2 a1 a2 / (a1 + a2). Also shows
    F1 over a threshold sweep (its best point is chosen on the same data: optimistic).

    Examples:

      amcs eval steps --prm tiny-arith-prm

      amcs eval steps --data processbench_gsm8k.jsonl --prm Qwen/Qwen2.5-Math-PRM-7B
    """
    params = locals()
    given = {name: params[name] for name in STEPS_FLAGS if params[name] is not None}
    for name in ("write_data", "out"):
        if name in given:
            given[name] = str(given[name])
    settings = config_sets(StepsConfig, set_)
    # A bad value is named as the user gave it: --set threshold=2, or --threshold 2.
    config = make_command_config(StepsConfig, settings | given, STEPS_FLAGS - set(settings))
    try:
        report = evaluation.run_steps(config, notify=say)
    except ScorerError as exc:
        fail(f"--prm: {exc}")
    except (StepDataError, OutputPathError) as exc:
        fail(str(exc))
    best = report["best_threshold"]
    console = Console()
    console.print(
        f"step-level F1 {report['f1']:.3f} at threshold {config.threshold} "
        f"(a1 erroneous {report['a1_erroneous']:.3f} on {report['n_erroneous']}, "
        f"a2 correct {report['a2_correct']:.3f} on {report['n_correct']})"
    )
    console.print(
        f"best over the sweep: F1 {best['f1']:.3f} at threshold {best['threshold']} "
        "(chosen on this data)"
    )
