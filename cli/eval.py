"""`amcs eval`: PRM-guided verification with accuracy next to compute, and `amcs eval steps`:
ProcessBench's step-level F1."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from amcs.domains import is_domain_source, oracle_domain, source_domain
from amcs.prm.names import (
    POLICY_CONFIDENCE,
    SCORER_NAMES,
    TINY_PRM_NAME,
    is_policy_confidence,
    scorer_location,
)
from amcs.problems import ProblemError, load_problems
from amcs.prompts import DEFAULT_SYSTEM_PROMPT
from amcs.redaction import redact_logging
from amcs.verification import STRATEGIES
from cli.common import (
    check_backend_options,
    check_number,
    check_output,
    err,
    fail,
    interrupted,
    merge_options,
    open_backend,
    parse_sets,
    prompt_function,
    say,
)

ALL_STRATEGIES = ",".join(STRATEGIES)

DEFAULTS: dict[str, Any] = {
    "problems": "arith-heldout:300",
    "limit": None,
    "backend": "hf",
    "model": None,  # the bundled tiny policy
    "url": None,
    "prompt_format": "auto",
    "system_prompt": DEFAULT_SYSTEM_PROMPT,
    "backend_options": None,
    "max_batch_size": 128,
    "prm": None,  # the bundled tiny PRM
    "prm_format": None,  # read from the checkpoint
    "prm_batch_size": 32,
    "baseline": None,  # on with the hf backend (the policy is a local transformers model)
    "strategies": ALL_STRATEGIES,
    "n": "1,4,16",
    "out": "amcs-eval",
    "concurrency": 64,
    "seed": 0,
    "title": None,
}

app = typer.Typer(
    help="Verify solutions with a PRM: accuracy vs generated tokens; `steps` for step-level F1.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


def _split_list(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _scorer(
    prm: str | None,
    prm_format: str | None,
    batch_size: int,
    policy: str | None = None,
    separator: str | None = None,
):
    """The scorer --prm names (:func:`amcs.prm.load_scorer`: a PRM directory or hub id,
    tiny-prm, arith-oracle, policy-confidence[:MODEL] read from ``policy``), or a one-line
    error."""
    from amcs.prm import load_scorer
    from amcs.prm.names import ScorerError

    try:
        return load_scorer(
            prm,
            prm_format=prm_format,
            policy=policy,
            separator=separator,
            max_batch_size=batch_size,
        )
    except ScorerError as exc:
        fail(f"--prm: {exc}")


def prm_separator(prm: str | None) -> tuple[str, Path] | None:
    """The separator a PRM directory was trained with (its ``amcs_prm.json``, written by
    ``amcs train``) and that file; None for the oracle, policy-confidence, a hub id or a PRM
    without the file. A file that cannot be read is left to the PRM loader to report."""
    from amcs.assets import TINY_PRM
    from amcs.prm.checkpoint import PRM_CONFIG_FILE, load_prm_config

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
    from amcs.fields import ConfigError
    from amcs.steps import check_separator

    try:
        return check_separator(separator, f"{path}: separator"), path
    except ConfigError as exc:
        fail(str(exc))


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
    problems: str | None = typer.Option(
        None,
        help="Problems: .jsonl/.json/.parquet, a HF dataset, 'arith[:N]' or 'arith-heldout[:N]'."
        " [default: arith-heldout:300]",
    ),
    limit: int | None = typer.Option(None, help="Only the first N problems."),
    strategies: str | None = typer.Option(
        None, help=f"Comma-separated, from {ALL_STRATEGIES}. [default: all]"
    ),
    n: str | None = typer.Option(
        None,
        help="Budgets, comma-separated: samples (majority, best-of-n, weighted-vote), candidate "
        "steps per depth (beam) or iterations (mcts). [default: 1,4,16]",
    ),
    prm: str | None = typer.Option(
        None,
        help=f"Who scores the steps: {SCORER_NAMES}. A directory may hold a PRM of `amcs train`, "
        "TRL, Math-Shepherd or Qwen2.5-Math-PRM; policy-confidence reads --model unless it names "
        f"its own. [default: {TINY_PRM_NAME}]",
    ),
    prm_format: str | None = typer.Option(
        None, help="token-cls | step-tag | qwen-prm. [default: read from the checkpoint]"
    ),
    aggregation: str | None = typer.Option(
        None, help="Step scores -> solution score: last | min | prod | mean. [default: last]"
    ),
    baseline: bool | None = typer.Option(
        None,
        "--baseline/--no-baseline",
        help="Also run best-of-n and weighted-vote scored by policy-confidence (the policy's own "
        "lowest token probability per step, no training) on the same samples, so the table "
        "shows what the trained PRM adds; no extra generation. The policy must load with "
        "transformers. [default: on with the hf backend]",
    ),
    backend: str | None = typer.Option(
        None, help="hf | sglang | sglang-http | openai, as for generate. [default: hf]"
    ),
    model: str | None = typer.Option(
        None, help="Policy model (or tokenizer for servers). [default: the bundled tiny policy]"
    ),
    url: list[str] = typer.Option([], "--url", help="Server URL for sglang-http/openai."),
    prompt_format: str | None = typer.Option(None, help="auto | chat | plain. [default: auto]"),
    out: Path | None = typer.Option(
        None, help="Report directory: records.jsonl, results.json/.md, PNG. [default: amcs-eval]"
    ),
    concurrency: int | None = typer.Option(
        None, help="Problem runs in flight at once. [default: 64]"
    ),
    seed: int | None = typer.Option(None, help="[default: 0]"),
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
    given = {
        "problems": problems,
        "limit": limit,
        "strategies": strategies,
        "n": n,
        "prm": prm,
        "prm_format": prm_format,
        "baseline": baseline,
        "backend": backend,
        "model": model,
        "url": list(url) or None,
        "prompt_format": prompt_format,
        "out": out,
        "concurrency": concurrency,
        "seed": seed,
    }
    opts, verify = merge_options(recipe, DEFAULTS, given, "verify")
    check_number(opts, "limit", int, min=1)
    check_number(opts, "concurrency", int, min=1)
    check_number(opts, "prm_batch_size", int, min=1)
    check_number(opts, "seed", int)
    verify |= parse_sets(set_)
    if aggregation is not None:
        verify["aggregation"] = aggregation
    verify["seed"] = int(opts["seed"])

    from amcs.evaluation import Cell, make_cells
    from amcs.steps import DEFAULT_SEPARATOR
    from amcs.verification import make_verify_config

    check_backend_options(opts)
    from amcs.outputs import EVAL_FILES

    out_dir = Path(str(opts["out"])).expanduser()
    check_output(
        "--out",
        out_dir,
        inputs=[opts["problems"], recipe, scorer_location(opts["prm"]), opts["model"]],
        beside=[(name, out_dir / name) for name in EVAL_FILES],
        folder=True,
    )
    if verify.get("separator") is None:
        verify.pop("separator", None)
        recorded = prm_separator(opts["prm"])
        if recorded is not None:
            verify["separator"] = recorded[0]
            if recorded[0] != DEFAULT_SEPARATOR:
                say(f"steps end with separator {recorded[0]!r}, as {recorded[1]} records")
    try:
        config = make_verify_config(**verify)
        ns = [int(x) for x in _split_list(opts["n"])]
        if not ns or min(ns) < 1:
            raise ValueError(f"--n must list budgets >= 1, got {opts['n']!r}")
        cells = make_cells(_split_list(opts["strategies"]), ns)
    except (TypeError, ValueError) as exc:
        fail(str(exc))
    try:
        todo = load_problems(opts["problems"], limit=opts["limit"], seed=int(opts["seed"]))
    except ProblemError as exc:
        fail(str(exc))
    if not todo:
        fail(f"no problems in {opts['problems']}")
    needs_prm = any(STRATEGIES[c.strategy].needs_prm for c in cells)
    if opts["baseline"] is None:
        opts["baseline"] = opts["backend"] == "hf"
    if opts["baseline"] and not is_policy_confidence(opts["prm"]):
        cells += [
            Cell(c.strategy, c.n, POLICY_CONFIDENCE)
            for c in cells
            if STRATEGIES[c.strategy].rescoring
        ]
    oracle = oracle_domain(opts["prm"])
    if oracle is not None and not all(oracle.owns(p.question) for p in todo):
        sources = ", ".join(oracle.sources)
        fail(f"--prm {opts['prm']} scores {oracle.title} problems only ({sources})")
    logging.basicConfig(
        level=logging.INFO if quiet else logging.WARNING, format="%(asctime)s %(message)s"
    )
    redact_logging()  # a warning may quote a server's error body
    _run_eval(opts, config, cells, todo, needs_prm, quiet)


def _run_eval(opts, config, cells, todo, needs_prm: bool, quiet: bool) -> None:
    from amcs.assets import TINY_POLICY
    from amcs.evaluation import SharedSamples, evaluate
    from amcs.grading import Grader
    from amcs.verification import VerifyContext

    out_dir = Path(opts["out"])
    model_name = str(opts["model"] or TINY_POLICY)
    scorer = (
        _scorer(
            opts["prm"],
            opts["prm_format"],
            int(opts["prm_batch_size"]),
            opts["model"],
            config.separator,
        )
        if needs_prm
        else None
    )

    other_scorers = {}
    if any(c.scorer == POLICY_CONFIDENCE for c in cells):
        other_scorers[POLICY_CONFIDENCE] = _scorer(
            POLICY_CONFIDENCE, None, int(opts["prm_batch_size"]), opts["model"], config.separator
        )
    total = len(cells) * len(todo)
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
    grading: dict[str, int] = {}  # this invocation's Grader counts (checks, timeouts)
    log = logging.getLogger("amcs")

    def on_record(record: dict) -> None:
        tallies["runs"] += 1
        tallies["tokens"] += record["tokens"]
        status = f"{record['strategy']}@{record['n']} · {tallies['tokens']:,} tokens"
        progress.update(task, advance=1, status=status)
        if quiet and tallies["runs"] % 100 == 0:
            log.info("runs %d · %s", tallies["runs"], status)

    async def main() -> list[dict]:
        backend = await open_backend(opts, model_name)
        # majority, best-of-n and weighted vote ask for the same seeded samples: draw them once
        samples = SharedSamples(backend)
        ctx = VerifyContext(samples, scorer, config, prompt_function(opts))
        others = {
            name: VerifyContext(samples, other, config, prompt_function(opts))
            for name, other in other_scorers.items()
        }
        try:
            async with Grader(max_workers=min(2, os.cpu_count() or 1)) as grader:
                try:
                    with progress:
                        return await evaluate(
                            todo,
                            ctx,
                            cells,
                            grader,
                            out_dir / "records.jsonl",
                            concurrency=int(opts["concurrency"]),
                            on_record=on_record,
                            other_scorers=others,
                        )
                finally:
                    grading.update(grader.counts())
        finally:
            await backend.aclose()
            for each in [scorer, *other_scorers.values()]:
                if each is not None:
                    await each.aclose()

    try:
        records = asyncio.run(main())
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.common.install_sigterm_as_ctrl_c)
        interrupted(
            f"finished runs are in {out_dir / 'records.jsonl'}, no report was written; "
            "run the same command again to resume"
        )
    try:
        _report(opts, config, cells, todo, needs_prm, records, grading, out_dir, model_name)
    except KeyboardInterrupt:
        interrupted(
            f"every run is in {out_dir / 'records.jsonl'}, but the report was cut short (no "
            "results.json); run the same command again to write it"
        )


def _report(opts, config, cells, todo, needs_prm, records, grading, out_dir, model_name) -> None:
    """Summarize the records, write results.json/.md and the plot, and print the table."""
    from amcs.assets import TINY_POLICY_NAME
    from amcs.evaluation import summarize, write_report

    rows = summarize(records, cells, [p.id for p in todo])
    settings = {
        "problems": str(opts["problems"]),
        "n_problems": len(todo),
        "model": model_name if opts["model"] else TINY_POLICY_NAME,
        "backend": opts["backend"],
        "prm": str(opts["prm"] or "amcs/tiny-arith-prm") if needs_prm else None,
        "verify": config.to_dict(),
        "grading": grading,
    }
    if grading.get("unresolved"):
        err.print(
            f"grading timeouts: {grading['unresolved']} answer(s) got no verdict after the "
            "retries and count as wrong"
        )
    title = opts["title"] or f"amcs eval: {opts['problems']}"
    paths = write_report(out_dir, rows, settings, title)
    console = Console()
    console.print(Markdown(paths["markdown"].read_text()))
    err.print(f"report: {', '.join(str(p) for p in paths.values())}")
    if "plot" not in paths:
        say("no plot: matplotlib is not installed (pip install 'amcs-prm[plots]')")


@app.command("steps")
def steps_command(
    data: str = typer.Option(
        "arith-heldout:500",
        help="A ProcessBench-layout JSONL file (problem, steps, label = earliest wrong step or "
        "-1); an amcs run or TRL PRM rows (prompt, completions, labels: label = first '-' "
        "step, the run's Monte Carlo labels); or arith-heldout[:N] / arith[:N]: sample the "
        "policy and label with exact truth.",
    ),
    prm: str | None = typer.Option(
        None,
        help=f"Who scores the steps: {SCORER_NAMES}. [default: {TINY_PRM_NAME}]",
    ),
    prm_format: str | None = typer.Option(None, help="token-cls | step-tag | qwen-prm."),
    threshold: float = typer.Option(
        0.5, help="A step scoring below this is the predicted earliest error."
    ),
    model: str | None = typer.Option(
        None, help="Policy that writes the solutions for arith data. [default: the tiny policy]"
    ),
    temperature: float = typer.Option(1.0, help="Sampling temperature for arith data."),
    seed: int = typer.Option(0, help="Sampling seed for arith data."),
    write_data: Path | None = typer.Option(
        None, help="Also save the arith solutions as a ProcessBench-layout file."
    ),
    out: Path | None = typer.Option(None, help="Write the report (JSON) here too."),
) -> None:
    """Step-level F1 as ProcessBench computes it: a1 = accuracy of the predicted earliest error
    on erroneous solutions, a2 = accuracy on correct ones, F1 = 2 a1 a2 / (a1 + a2). Also shows
    F1 over a threshold sweep (its best point is chosen on the same data: optimistic).

    Examples:

      amcs eval steps --prm tiny-arith-prm

      amcs eval steps --data processbench_gsm8k.jsonl --prm Qwen/Qwen2.5-Math-PRM-7B
    """
    import json

    from amcs.outputs import OutputPathError, check_distinct
    from amcs.stepeval import (
        MC_REFERENCE,
        PATHS,
        StepDataError,
        read_step_file,
        score_examples,
        step_report,
        write_step_examples,
    )

    domain = source_domain(data) if is_domain_source(data) else None
    source = None if domain else data
    for option, path in (("--write-data", write_data), ("--out", out)):
        if path is not None:
            check_output(option, path, inputs=[scorer_location(prm), model], runs=[source])
    try:
        check_distinct([("--write-data", write_data), ("--out", out)])
    except OutputPathError as exc:
        fail(str(exc))
    reference = None
    if domain is not None:
        if not domain.has_step_truth:
            fail(f"--data {data}: the {domain.name} domain has no exact step truth to label with")
        examples = asyncio.run(_exact_examples(data, domain, model, temperature, seed))
        if write_data:
            write_step_examples(write_data, examples)
    else:
        try:
            step_file = read_step_file(data)
        except StepDataError as exc:
            fail(str(exc))
        examples = step_file.examples
        if step_file.layout == PATHS:
            reference = MC_REFERENCE
            err.print(
                f"{data}: labelled paths, one example each (label = first '-' step, -1 when "
                f"all '+'); {MC_REFERENCE}",
                markup=False,
            )
            if step_file.prefixes:
                err.print(
                    f"left out {step_file.prefixes:,} all-'+' path(s) that stop before a final "
                    "answer (prefixes, not full solutions)",
                    markup=False,
                )
    if not examples:
        fail(f"no solutions in {data}")
    scorer = _scorer(prm, prm_format, 32, model)

    async def score_all() -> list[list[float]]:
        try:  # concurrent calls: the PRM scores them in batches
            return await score_examples(scorer, examples)
        finally:
            await scorer.aclose()

    scores = asyncio.run(score_all())
    report = step_report(scores, [e.label for e in examples], threshold)
    report |= {"data": data, "prm": str(prm or "amcs/tiny-arith-prm"), "n": len(examples)}
    if reference:
        report["reference"] = reference
    best = report["best_threshold"]
    console = Console()
    console.print(
        f"step-level F1 {report['f1']:.3f} at threshold {threshold} "
        f"(a1 erroneous {report['a1_erroneous']:.3f} on {report['n_erroneous']}, "
        f"a2 correct {report['a2_correct']:.3f} on {report['n_correct']})"
    )
    console.print(
        f"best over the sweep: F1 {best['f1']:.3f} at threshold {best['threshold']} "
        "(chosen on this data)"
    )
    if out:
        from amcs.outputs import naming

        out.parent.mkdir(parents=True, exist_ok=True)
        with naming(out):
            out.write_text(json.dumps(report, indent=2) + "\n")


async def _exact_examples(spec: str, domain, model: str | None, temperature: float, seed: int):
    from amcs.assets import TINY_POLICY
    from amcs.backends.hf import HFBackend
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
