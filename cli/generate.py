"""`amcs generate`: problems + policy model -> labelled steps, streamed to JSONL, resumable."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from amcs.problems import ProblemError, load_problems
from amcs.prompts import DEFAULT_SYSTEM_PROMPT
from cli.common import (
    check_backend_options,
    err,
    fail,
    merge_options,
    open_backend,
    parse_sets,
    prompt_function,
)
from cli.progress import RunDisplay, summary_table

DEFAULTS: dict[str, Any] = {
    "problems": "arith",
    "limit": None,
    "method": "amcs",
    "backend": "hf",
    "model": None,  # the bundled tiny policy
    "url": None,  # server URL(s) for sglang-http / openai
    "prompt_format": "auto",  # auto: the chat template when the tokenizer has one
    "system_prompt": DEFAULT_SYSTEM_PROMPT,
    "backend_options": None,  # recipe only: a mapping passed to the backend's constructor
    "out": "amcs-data.jsonl",
    "concurrency": 64,
    "max_inflight": 128,
    "seed": 0,
    "shard": None,
    "threshold": None,
    "resume": True,
    "overwrite": False,
    "request_timeout": None,
    "retries": 3,
    "max_batch_size": 128,
}


def generate_command(
    recipe: Path | None = typer.Option(
        None, "--recipe", "-r", help="YAML recipe with any of these options; the command line wins."
    ),
    problems: str | None = typer.Option(
        None, help="Problems: .jsonl/.json/.parquet, a HF dataset, or 'arith[:N]'. [default: arith]"
    ),
    limit: int | None = typer.Option(None, help="Only the first N problems (before sharding)."),
    method: str | None = typer.Option(None, help="amcs | omegaprm | shepherd. [default: amcs]"),
    backend: str | None = typer.Option(
        None,
        help="hf (transformers in process), sglang (SGLang's engine in process; CUDA, "
        "pip install 'amcs-prm[sglang]'), sglang-http (SGLang /generate) or openai "
        "(/v1/completions). [default: hf]",
    ),
    model: str | None = typer.Option(
        None,
        help="Policy model path or hub id; for sglang-http/openai the tokenizer path, and for "
        "openai also the served model name. [default: the bundled tiny arithmetic policy]",
    ),
    prompt_format: str | None = typer.Option(
        None,
        help="auto | chat | plain: chat uses the tokenizer's chat template (instruct models), "
        "plain the question and a blank line (base models). [default: auto]",
    ),
    system_prompt: str | None = typer.Option(
        None, help="System prompt for chat prompts. [default: reason step by step, \\boxed{}]"
    ),
    url: list[str] = typer.Option(
        [],
        "--url",
        help="Server URL for sglang-http/openai, e.g. http://127.0.0.1:30000; repeat it for "
        "several SGLang servers (round robin).",
    ),
    out: Path | None = typer.Option(
        None, help="Data file; meta goes to *.meta.jsonl. [default: amcs-data.jsonl]"
    ),
    concurrency: int | None = typer.Option(None, help="Searches running at once. [default: 64]"),
    max_inflight: int | None = typer.Option(
        None, help="Backend requests in flight. [default: 128]"
    ),
    max_batch_size: int | None = typer.Option(
        None, help="hf backend: sequences decoded together. [default: 128]"
    ),
    seed: int | None = typer.Option(
        None, help="Run seed; per-problem seeds derive from it. [default: 0]"
    ),
    shard: str | None = typer.Option(
        None, help="i/n: this machine's share of the problems (0-based)."
    ),
    threshold: float | None = typer.Option(None, help="Hard label = MC > threshold. [default: 0]"),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Search parameter KEY=VALUE, repeatable (e.g. --set k0=8 --set eps_node=0.1).",
    ),
    resume: bool | None = typer.Option(
        None, "--resume/--no-resume", help="Continue an existing output file. [default: resume]"
    ),
    overwrite: bool = typer.Option(False, help="With --no-resume: replace an existing output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log lines instead of a live display."),
) -> None:
    """Label solution steps with Monte Carlo search and stream them to a JSONL file.

    With no options: the bundled tiny policy labels 200 generated arithmetic problems with AMCS
    and writes amcs-data.jsonl (and amcs-data.meta.jsonl). Interrupt it at any time; the same
    command resumes where it stopped.

    Examples:

      amcs generate

      amcs generate --method shepherd --set k=16 --out shepherd.jsonl

      amcs generate --recipe recipes/tiny-arith/generate.yaml --shard 0/4
    """
    given = {
        "problems": problems,
        "limit": limit,
        "method": method,
        "backend": backend,
        "model": model,
        "url": list(url) or None,
        "prompt_format": prompt_format,
        "system_prompt": system_prompt,
        "out": out,
        "concurrency": concurrency,
        "max_inflight": max_inflight,
        "max_batch_size": max_batch_size,
        "seed": seed,
        "shard": shard,
        "threshold": threshold,
        "resume": resume,
        "overwrite": overwrite or None,
    }
    opts, search_overrides = merge_options(recipe, DEFAULTS, given, "search")
    search_overrides |= parse_sets(set_)
    if opts["threshold"] is not None:
        search_overrides["threshold"] = opts["threshold"]

    # Everything that can be wrong with the input is checked before any model is loaded.
    from amcs.records import (
        OutputExistsError,
        OutputLockedError,
        RecordWriter,
        parse_shard,
        shard_problems,
    )
    from amcs.search import make_config

    check_backend_options(opts)
    try:
        config = make_config(opts["method"], **search_overrides)
    except (TypeError, ValueError) as exc:
        fail(str(exc))
    try:
        todo = load_problems(opts["problems"], limit=opts["limit"], seed=opts["seed"])
    except ProblemError as exc:
        fail(str(exc))
    if opts["shard"]:
        try:
            index, count = parse_shard(str(opts["shard"]))
        except ValueError as exc:
            fail(str(exc))
        todo = shard_problems(todo, index, count)
    try:
        writer = RecordWriter(Path(opts["out"]), resume=opts["resume"], overwrite=opts["overwrite"])
    except (OutputExistsError, OutputLockedError) as exc:
        fail(str(exc))

    logging.basicConfig(
        level=logging.INFO if quiet else logging.WARNING, format="%(asctime)s %(message)s"
    )
    with writer:
        counters = _run(opts, config, todo, writer, quiet)
    console = Console(stderr=True)
    console.print()
    console.print(summary_table(counters, opts["out"]))
    if counters.failed:
        err.print(f"[yellow]{counters.failed} problem(s) failed; see {writer.meta_path}[/yellow]")


def _run(opts: dict, config, todo, writer, quiet: bool):
    from amcs.assets import TINY_POLICY
    from amcs.engine import RunCounters, generate
    from amcs.grading import Grader

    model_name = str(opts["model"] or TINY_POLICY)
    counters = RunCounters()
    prompt = prompt_function(opts)

    async def main() -> None:
        backend = await open_backend(opts, model_name)
        display = RunDisplay(counters, quiet=quiet)
        async with Grader(max_workers=min(2, os.cpu_count() or 1)) as grader:
            try:
                with display:
                    await generate(
                        todo,
                        backend,
                        grader,
                        config,
                        writer,
                        prompt_ids=lambda p: prompt(backend.tokenizer, p.question),
                        model_name=model_name if opts["model"] else "amcs/tiny-arith-policy",
                        seed=int(opts["seed"]),
                        concurrency=int(opts["concurrency"]),
                        max_inflight=int(opts["max_inflight"]),
                        retries=int(opts["retries"]),
                        request_timeout=opts["request_timeout"],
                        counters=counters,
                    )
            finally:
                await backend.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        err.print(
            f"\ninterrupted: {counters.done + counters.failed} problem(s) committed to {writer.path}; "
            "run the same command again to resume"
        )
        raise typer.Exit(130) from None
    return counters
