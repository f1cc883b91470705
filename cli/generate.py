"""`amcs generate`: problems + policy model -> labelled steps, streamed to JSONL, resumable."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from amcs import generation
from amcs.backends.base import BackendConfigError
from amcs.fields import ConfigError
from amcs.generation import GenerateConfig
from amcs.outputs import OutputPathError
from amcs.problems import ProblemError
from amcs.records import OutputError, RecordFormatError
from amcs.redaction import redact_logging
from amcs.scheduler import RunCounters, ServerGoneError
from cli.common import (
    check_backend_options,
    config_defaults,
    config_flag,
    fail,
    interrupted,
    make_command_config,
    merge_options,
    open_backend,
    parse_sets,
    say,
)
from cli.progress import RunDisplay, run_warnings, summary_table

FLAGS = {
    "problems", "limit", "method", "backend", "model", "prompt_format", "system_prompt",
    "served_model_name", "url", "out", "concurrency", "max_inflight", "max_batch_size", "seed",
    "shard", "threshold", "resume", "overwrite", "retry_failed", "patience", "retries",
    "request_timeout", "keep_rollouts", "deterministic",
}  # fmt: skip


def _flag(name: str, *param_decls: str) -> Any:
    return config_flag(GenerateConfig, name, *param_decls)


def generate_command(
    recipe: Path | None = typer.Option(
        None, "--recipe", "-r", help="YAML recipe with any of these options; the command line wins."
    ),
    problems: str | None = _flag("problems"),
    limit: int | None = _flag("limit"),
    method: str | None = _flag("method"),
    backend: str | None = _flag("backend"),
    model: str | None = _flag("model"),
    prompt_format: str | None = _flag("prompt_format"),
    system_prompt: str | None = _flag("system_prompt"),
    served_model_name: str | None = _flag("served_model_name"),
    url: list[str] | None = _flag("url", "--url"),
    out: Path | None = _flag("out"),
    concurrency: int | None = _flag("concurrency"),
    max_inflight: int | None = _flag("max_inflight"),
    max_batch_size: int | None = _flag("max_batch_size"),
    seed: int | None = _flag("seed"),
    shard: str | None = _flag("shard"),
    threshold: float | None = _flag("threshold"),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Search parameter KEY=VALUE, repeatable (e.g. --set k0=8 --set eps_node=0.1).",
    ),
    resume: bool | None = _flag("resume", "--resume/--no-resume"),
    overwrite: bool | None = _flag("overwrite", "--overwrite"),
    retry_failed: bool | None = _flag("retry_failed", "--retry-failed/--keep-failed"),
    patience: float | None = _flag("patience"),
    retries: int | None = _flag("retries"),
    request_timeout: float | None = _flag("request_timeout"),
    keep_rollouts: bool | None = _flag("keep_rollouts", "--keep-rollouts/--no-keep-rollouts"),
    deterministic: bool | None = _flag("deterministic", "--deterministic/--no-deterministic"),
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
    params = locals()
    given = {name: params[name] for name in FLAGS}
    given["overwrite"] = overwrite or None  # a flag: not given is no "false" over a recipe
    given["url"] = list(url or []) or None
    given["out"] = str(out) if out is not None else None
    opts, search = merge_options(recipe, config_defaults(GenerateConfig, "search"), given, "search")
    search |= parse_sets(set_)

    # Everything that can be wrong with the input is checked before any model is loaded.
    check_backend_options(opts)
    config = make_command_config(GenerateConfig, opts | {"search": search}, FLAGS)
    try:
        run = generation.plan(config, inputs=(recipe,))
    except ConfigError as exc:
        fail(f"{exc} (in --set or the recipe's search:)" if search else str(exc))
    except (OutputPathError, ProblemError) as exc:
        fail(str(exc))

    logging.basicConfig(
        level=logging.INFO if quiet else logging.WARNING, format="%(asctime)s %(message)s"
    )
    redact_logging()  # a warning may quote a server's error body
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    counters = RunCounters()

    def on_start(writer, backend) -> None:
        note = resume_note(writer, bool(getattr(backend, "deterministic", False)))
        if note:
            say(note)

    try:
        result = generation.run(
            run,
            backend=lambda: open_backend(opts, config.model_path),
            counters=counters,
            on_start=on_start,
            display=lambda: RunDisplay(counters, quiet=quiet),
        )
    except (OutputError, RecordFormatError) as exc:  # the output cannot be resumed: nothing ran
        fail(str(exc))
    except BackendConfigError as exc:
        fail(f"{exc} (nothing recorded as failed; committed problems are kept)")
    except ServerGoneError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.common.install_sigterm_as_ctrl_c)
        interrupted(
            f"{counters.done + counters.failed} problem(s) committed to {run.out}; "
            "run the same command again to resume"
        )
    if result.note:
        say(result.note)
        return
    console = Console(stderr=True)
    console.print()
    console.print(summary_table(counters, config.out))
    last = {m["problem_id"]: m for m in result.completed}  # a retried problem: its last record
    for warning in run_warnings(last.values(), run.search, run.out):
        say(f"warning: {warning}", style="yellow")
    if counters.failed:
        reasons = ", ".join(f"{n} {kind}" for kind, n in counters.failure_reasons.items())
        fail(
            f"{counters.failed} problem(s) failed ({reasons}; reasons in {result.meta_path}); "
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
