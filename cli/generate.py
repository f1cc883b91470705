"""`amcs generate`: problems + policy model -> labelled steps, streamed to JSONL, resumable."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from amcs.domains import is_domain_source
from amcs.problems import ProblemError, load_problems
from amcs.prompts import DEFAULT_SYSTEM_PROMPT
from amcs.records import RecordFormatError, run_fingerprint
from amcs.redaction import redact_logging
from cli.common import (
    check_backend_options,
    check_number,
    check_output,
    fail,
    interrupted,
    merge_options,
    open_backend,
    parse_sets,
    prompt_function,
    say,
)
from cli.progress import RunDisplay, run_warnings, summary_table

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
    "patience": 600.0,
    "retry_failed": True,
    "served_model_name": None,
    "max_batch_size": 128,
    "keep_rollouts": False,
    "deterministic": None,  # hf: on for CPU (see amcs.backends.hf), else off
}


def generate_command(
    recipe: Path | None = typer.Option(
        None, "--recipe", "-r", help="YAML recipe with any of these options; the command line wins."
    ),
    problems: str | None = typer.Option(
        None, help="Problems: .jsonl/.json/.parquet, a HF dataset, or 'arith[:N]'. [default: arith]"
    ),
    limit: int | None = typer.Option(
        None, help="Only the first N problems (before sharding); N >= 1."
    ),
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
    served_model_name: str | None = typer.Option(
        None,
        help="openai: the name the server serves the model under (vLLM's --served-model-name). "
        "[default: the only model the server serves, else --model]",
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
        None,
        "--resume/--no-resume",
        help="Continue an existing output file (only if it was written with the same options; "
        "it is checked first). [default: resume]",
    ),
    overwrite: bool = typer.Option(
        False, help="Only with --no-resume: delete an existing output and start over."
    ),
    retry_failed: bool | None = typer.Option(
        None,
        "--retry-failed/--keep-failed",
        help="On resume, search the problems that failed before again, or keep them as failed. "
        "[default: retry]",
    ),
    patience: float | None = typer.Option(
        None,
        help="Seconds to wait for a server that stops answering before the run stops "
        "(resumable). [default: 600]",
    ),
    retries: int | None = typer.Option(
        None, help="Retries of a request that failed for another reason. [default: 3]"
    ),
    request_timeout: float | None = typer.Option(
        None, help="Seconds one backend request may take. [default: no limit]"
    ),
    keep_rollouts: bool | None = typer.Option(
        None,
        "--keep-rollouts/--no-keep-rollouts",
        help="Keep every estimated node's rollouts (text, grade, tokens, finish reason, mean "
        "NLL) in the meta file's search tree, for amcs view; changes no label, may be toggled "
        "on resume; makes the meta file larger. [default: off]",
    ),
    deterministic: bool | None = typer.Option(
        None,
        "--deterministic/--no-deterministic",
        help="hf backend: decode so that a seeded rollout does not depend on which rollouts share "
        "its batch, so a resumed or sharded run writes the same bytes as an uninterrupted one "
        "(on CPU it costs little: see README). Off: plain batched kernels; a resumed run is then a "
        "valid continuation, not a byte-identical one. Server backends batch as they please. "
        "[default: on with hf on CPU]",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log lines instead of a live display."),
) -> None:
    """Label solution steps with Monte Carlo search and stream them to a JSONL file.

    With no options: the bundled tiny policy labels 200 generated arithmetic problems with AMCS
    and writes amcs-data.jsonl (and amcs-data.meta.jsonl). Interrupt it at any time (even kill
    -9); the same command resumes where it stopped, after checking the files belong to it.
    Failed problems are searched again on resume. Exit codes: 0 done, 1 some problems failed or
    the server stayed away, 2 bad input or options (nothing written), 130 interrupted by Ctrl-C,
    143 by SIGTERM (both: committed problems kept, lock removed, resumable).

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
        "retry_failed": retry_failed,
        "patience": patience,
        "retries": retries,
        "request_timeout": request_timeout,
        "served_model_name": served_model_name,
        "keep_rollouts": keep_rollouts,
        "deterministic": deterministic,
    }
    opts, search_overrides = merge_options(recipe, DEFAULTS, given, "search")
    search_overrides |= parse_sets(set_)
    if opts["threshold"] is not None:
        search_overrides["threshold"] = opts["threshold"]

    # Everything that can be wrong with the input is checked before any model is loaded.
    from amcs.fields import ConfigError
    from amcs.records import OutputError, RecordWriter, parse_shard, shard_problems
    from amcs.search import make_config

    check_number(opts, "limit", int, min=1)
    check_number(opts, "concurrency", int, min=1)
    check_number(opts, "max_inflight", int, min=1)
    check_number(opts, "seed", int)
    check_number(opts, "retries", int, min=0)
    check_number(opts, "patience", float, min=0)
    check_number(opts, "request_timeout", float, above=0)
    check_backend_options(opts)
    if not isinstance(opts["keep_rollouts"], bool):
        fail(f"keep_rollouts must be true or false, got {opts['keep_rollouts']!r}")
    if opts["deterministic"] is not None and not isinstance(opts["deterministic"], bool):
        fail(f"deterministic must be true or false, got {opts['deterministic']!r}")
    from amcs.backends import BACKENDS

    if opts["deterministic"] and not BACKENDS[opts["backend"]].takes("deterministic"):
        takers = " or ".join(n for n, spec in BACKENDS.items() if spec.takes("deterministic"))
        fail(
            f"--deterministic needs the {takers} backend: {opts['backend']} batches as the "
            "server pleases (a resumed run is a valid continuation, not byte-identical)"
        )
    try:
        config = make_config(opts["method"], **search_overrides)
    except ConfigError as exc:
        fail(f"{exc} (in --set or the recipe's search:)" if search_overrides else str(exc))
    out = Path(opts["out"])
    from amcs.outputs import companions

    check_output("--out", out, inputs=[opts["problems"], recipe], beside=companions(out))
    try:
        todo = load_problems(opts["problems"], limit=opts["limit"], seed=opts["seed"])
    except ProblemError as exc:
        fail(str(exc))
    if not todo:
        fail(f"no problems in {opts['problems']}")
    total = len(todo)
    if opts["shard"]:
        try:
            index, count = parse_shard(str(opts["shard"]))
        except ValueError as exc:
            fail(f"--shard: {exc}")
        todo = shard_problems(todo, index, count)
        if not todo:
            say(f"nothing to do: shard {opts['shard']} holds none of the {total} problems")
            return
    from amcs.assets import TINY_POLICY_NAME

    model_name = str(opts["model"]) if opts["model"] else TINY_POLICY_NAME
    fingerprint = run_fingerprint(
        method=config.method,
        model=model_name,
        seed=opts["seed"],
        search=config.to_dict(),
        problems=problem_source(opts["problems"]),
        shard=str(opts["shard"]) if opts["shard"] else None,
        prompt={"format": opts["prompt_format"], "system_prompt": opts["system_prompt"]},
    )
    try:
        writer = RecordWriter(
            out,
            resume=bool(opts["resume"]),
            overwrite=bool(opts["overwrite"]),
            fingerprint=fingerprint,
            retry_failed=bool(opts["retry_failed"]),
            problems=todo,  # checked against the committed ones before resume cuts a byte
        )
    except (OutputError, RecordFormatError) as exc:
        fail(str(exc))

    logging.basicConfig(
        level=logging.INFO if quiet else logging.WARNING, format="%(asctime)s %(message)s"
    )
    redact_logging()  # a warning may quote a server's error body
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    with writer:
        left = [p for p in todo if p.id not in writer.done_ids]
        if not left:
            say(f"all {len(todo)} problems are already done in {out}; nothing to do")
            return
        counters = _run(opts, config, todo, writer, quiet, model_name)
    console = Console(stderr=True)
    console.print()
    console.print(summary_table(counters, opts["out"]))
    last = {m["problem_id"]: m for m in writer.completed}  # a retried problem: its last record
    for warning in run_warnings(last.values(), config, out):
        say(f"warning: {warning}", style="yellow")
    if counters.failed:
        reasons = ", ".join(f"{n} {kind}" for kind, n in counters.failure_reasons.items())
        fail(
            f"{counters.failed} problem(s) failed ({reasons}; reasons in {writer.meta_path}); "
            "run the same command again to retry them",
            code=1,
        )


def resume_note(writer, deterministic: bool) -> str | None:
    """What resuming means for the bytes of the output, or None for a fresh run: byte-identical
    to an uninterrupted run only when every committed problem and this session decode
    deterministically (each meta line records its ``decoding``)."""
    committed = writer.completed
    if not committed:
        return None
    kinds = {m.get("decoding", "unrecorded") for m in committed}
    count = len({m["problem_id"] for m in committed})
    head = f"resuming {writer.path} after {count} committed problem(s): "
    if deterministic and kinds == {"deterministic"}:
        return head + (
            "deterministic decoding then and now, so the file will equal an uninterrupted "
            "run's byte for byte"
        )
    if not deterministic:
        why = "this session's backend batches rollouts as it pleases"
    elif "unrecorded" in kinds:
        why = "earlier sessions did not record how they decoded"
    else:
        why = "earlier sessions decoded in plain batches"
    return head + (
        f"a valid continuation of the same run, not byte-identical to an uninterrupted one ({why})"
    )


def search_parameters_help() -> str:
    """The --set keys with their help, allowed values and defaults, from SearchConfig's fields
    (the amcs preset's defaults; omegaprm and shepherd change a few, see amcs.search.METHODS)."""
    from amcs.fields import field_help
    from amcs.search import SearchConfig

    rows = [
        f"  {name:<17} {text} [default: {default!r}]"
        for name, text, default in field_help(SearchConfig)
    ]
    return "Search parameters (--set KEY=VALUE, or a recipe's search: section):\n\n\b\n" + (
        "\n".join(rows)
    )


def problem_source(spec: str) -> str:
    """The problem source as the run fingerprint records it: without a count for a problem
    domain (arith:100 and arith:200 share their first 100 problems), a file as its absolute
    path, a dataset by its name."""
    text = str(spec)
    if is_domain_source(text):
        return text.split(":", 1)[0]
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def _run(opts: dict, config, todo, writer, quiet: bool, model_name: str):
    from amcs.assets import TINY_POLICY
    from amcs.backends.base import BackendConfigError
    from amcs.engine import RunCounters, ServerGoneError, generate
    from amcs.grading import Grader

    counters = RunCounters()
    prompt = prompt_function(opts)

    async def main() -> None:
        backend = await open_backend(opts, str(opts["model"] or TINY_POLICY))
        note = resume_note(writer, bool(getattr(backend, "deterministic", False)))
        if note:
            say(note)
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
                        model_name=model_name,
                        seed=opts["seed"],
                        concurrency=opts["concurrency"],
                        max_inflight=opts["max_inflight"],
                        retries=opts["retries"],
                        request_timeout=opts["request_timeout"],
                        patience=opts["patience"],
                        counters=counters,
                        keep_rollouts=opts["keep_rollouts"],
                    )
            finally:
                await backend.aclose()

    try:
        asyncio.run(main())
    except BackendConfigError as exc:
        fail(f"{exc} (nothing recorded as failed; committed problems are kept)")
    except ServerGoneError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.common.install_sigterm_as_ctrl_c)
        interrupted(
            f"{counters.done + counters.failed} problem(s) committed to {writer.path}; "
            "run the same command again to resume"
        )
    return counters
