"""The generate stage: ``run(GenerateConfig(...))`` labels problems into a resumable data file.

``amcs generate`` builds a :class:`GenerateConfig` from its flags, a recipe and ``--set`` and calls
:func:`run`; a Python caller does the same, and both write the same run fingerprint
(:func:`fingerprint`), so a run started from Python resumes from the command line and vice versa.

Everything that can be wrong with the input is found by :func:`plan` before a model loads: the
option values (each field's type and range), the search parameters, the output (never one of the
inputs), the problems and the shard.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amcs.backends.base import Backend
from amcs.domains import is_domain_source
from amcs.fields import ConfigError, option, validate
from amcs.policy_config import BackendSource, PolicyConfig, open_given
from amcs.problems import Problem, load_problems
from amcs.records import RecordWriter, parse_shard, run_fingerprint, shard_problems
from amcs.scheduler import RunCounters, generate
from amcs.search import SearchConfig, make_config


@dataclass(frozen=True)
class GenerateConfig(PolicyConfig):
    """Every option of `amcs generate`: a recipe's keys, the flags and the library's arguments
    (``search`` is a recipe's ``search:`` section and ``--set``: :class:`amcs.search.SearchConfig`
    fields over the ``method``'s preset)."""

    problems: str = option("arith", "problems: .jsonl/.json/.parquet, a HF dataset, or 'arith[:N]'")
    limit: int | None = option(
        None, "only the first N problems (before sharding) [default: all]", min=1
    )
    method: str = option("amcs", "search method: amcs | omegaprm | shepherd")
    out: str = option("amcs-data.jsonl", "data file; meta goes to *.meta.jsonl")
    concurrency: int = option(64, "searches running at once", min=1)
    max_inflight: int = option(128, "backend requests in flight", min=1)
    seed: int = option(0, "run seed; per-problem seeds derive from it")
    shard: str | None = option(None, "i/n: this machine's share of the problems (0-based)")
    threshold: float | None = option(
        None,
        "hard label = MC > threshold (the search parameter threshold) [default: 0]",
        min=0,
        below=1,
    )
    resume: bool = option(
        True,
        "continue an existing output file (only if it was written with the same options; it is "
        "checked first)",
    )
    overwrite: bool = option(
        False, "only with --no-resume: delete an existing output and start over"
    )
    retry_failed: bool = option(
        True, "on resume, search the problems that failed before again, or keep them as failed"
    )
    patience: float = option(
        600.0,
        "seconds to wait for a server that stops answering before the run stops (resumable)",
        min=0,
    )
    retries: int = option(3, "retries of a request that failed for another reason", min=0)
    request_timeout: float | None = option(
        None, "seconds one backend request may take [default: no limit]", above=0
    )
    keep_rollouts: bool = option(
        False,
        "keep every estimated node's rollouts (text, grade, tokens, finish reason, mean NLL) in "
        "the meta file's search tree, for amcs view; changes no label, may be toggled on resume; "
        "makes the meta file larger",
    )
    search: dict | None = option(
        None, "search parameters over the method's preset (a recipe's search:, --set KEY=VALUE)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.out, os.PathLike):
            object.__setattr__(self, "out", os.fspath(self.out))
        validate(self)
        from amcs.backends import BACKENDS

        spec = BACKENDS.get(self.backend)
        if self.deterministic and spec is not None and not spec.takes("deterministic"):
            takers = " or ".join(n for n, each in BACKENDS.items() if each.takes("deterministic"))
            raise ConfigError(
                f"--deterministic needs the {takers} backend: {self.backend} batches as the "
                "server pleases (a resumed run is a valid continuation, not byte-identical)"
            )
        if self.shard is not None:
            try:
                parse_shard(self.shard)
            except ValueError as exc:
                raise ConfigError(f"--shard: {exc}") from None

    def search_config(self) -> SearchConfig:
        """The search parameters: the method's preset, then ``search``, then ``threshold``
        (ConfigError names a bad key)."""
        overrides = dict(self.search or {})
        if self.threshold is not None:
            overrides["threshold"] = self.threshold
        return make_config(self.method, **overrides)


def problem_source(spec: str) -> str:
    """The problem source as the run fingerprint records it: without a count for a problem
    domain (arith:100 and arith:200 share their first 100 problems), a file as its absolute
    path, a dataset by its name."""
    text = str(spec)
    if is_domain_source(text):
        return text.split(":", 1)[0]
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def fingerprint(config: GenerateConfig, search: SearchConfig | None = None) -> dict[str, Any]:
    """What makes two runs the same run (:func:`amcs.records.run_fingerprint`): the same for
    ``amcs generate`` and for :func:`run` with the same options."""
    search = search or config.search_config()
    return run_fingerprint(
        method=search.method,
        model=config.model_name,
        seed=config.seed,
        search=search.to_dict(),
        problems=problem_source(config.problems),
        shard=config.shard,
        prompt={"format": config.prompt_format, "system_prompt": config.system_prompt},
    )


@dataclass
class GenerationPlan:
    """A checked run, before any model loads: the search parameters, this machine's problems
    (``total`` before sharding) and the fingerprint its output is written under."""

    config: GenerateConfig
    search: SearchConfig
    problems: list[Problem]
    total: int
    fingerprint: dict[str, Any]

    @property
    def out(self) -> Path:
        return Path(self.config.out)


def plan(config: GenerateConfig, *, inputs: tuple = ()) -> GenerationPlan:
    """Check everything before a model loads: the search parameters (ConfigError), the output
    (OutputPathError: it must not be an input; ``inputs`` are more files the caller read, e.g.
    a recipe), the problems (ProblemError) and the shard. A shard may hold none of the
    problems: the plan's ``problems`` is then empty."""
    from amcs.outputs import check_output, companions

    search = config.search_config()
    out = Path(config.out)
    check_output("--out", out, inputs=[config.problems, *inputs], beside=companions(out))
    problems = load_problems(config.problems, limit=config.limit, seed=config.seed)
    if not problems:
        from amcs.problems import ProblemError

        raise ProblemError(f"no problems in {config.problems}")
    total = len(problems)
    if config.shard:
        problems = shard_problems(problems, *parse_shard(config.shard))
    return GenerationPlan(config, search, problems, total, fingerprint(config, search))


def open_writer(run: GenerationPlan) -> RecordWriter:
    """The output's writer (locked, resume checked against the fingerprint and the problems
    before a byte is cut: OutputError, RecordFormatError)."""
    config = run.config
    return RecordWriter(
        run.out,
        resume=config.resume,
        overwrite=config.overwrite,
        fingerprint=run.fingerprint,
        retry_failed=config.retry_failed,
        problems=run.problems,
    )


@dataclass
class GenerationResult:
    """What a run did: its totals, the output's last record per problem, and ``note`` when
    there was nothing to do (the reason)."""

    counters: RunCounters
    completed: list[dict] = field(default_factory=list)
    note: str | None = None
    meta_path: Path | None = None


async def run_async(
    config: GenerateConfig | GenerationPlan,
    *,
    backend: BackendSource = None,
    counters: RunCounters | None = None,
    on_start: Callable[[RecordWriter, Backend], None] | None = None,
    display: Callable[[], Any] | None = None,
    inputs: tuple = (),
) -> GenerationResult:
    """Label the problems of ``config`` (or of a checked :func:`plan`) into ``config.out``,
    resuming it when it exists and was written with the same fingerprint.

    backend: an open backend (left open), an async function that opens one (closed at the end),
    or None: the one ``config.backend`` names (:meth:`PolicyConfig.open_backend`). on_start(writer,
    backend) is called once the backend is open, before the first search; display() is a
    context manager entered around the search (a progress display reading ``counters``).
    Ctrl-C (KeyboardInterrupt) leaves every committed problem in the file, resumable."""
    from amcs.grading import Grader

    run = config if isinstance(config, GenerationPlan) else plan(config, inputs=inputs)
    config = run.config
    counters = counters or RunCounters()
    if not run.problems:
        return GenerationResult(
            counters,
            note=f"nothing to do: shard {config.shard} holds none of the {run.total} problems",
        )
    with open_writer(run) as writer:
        result = GenerationResult(counters, meta_path=writer.meta_path)
        if all(p.id in writer.done_ids for p in run.problems):
            result.note = (
                f"all {len(run.problems)} problems are already done in {run.out}; nothing to do"
            )
            return result
        opened = await open_given(backend, config)
        try:
            prompt = config.prompt_function()
            if on_start is not None:
                on_start(writer, opened)
            async with Grader(max_workers=min(2, os.cpu_count() or 1)) as grader:
                with display() if display is not None else nullcontext():
                    await generate(
                        run.problems,
                        opened,
                        grader,
                        run.search,
                        writer,
                        prompt_ids=lambda p: prompt(opened.tokenizer, p.question),
                        model_name=config.model_name,
                        seed=config.seed,
                        concurrency=config.concurrency,
                        max_inflight=config.max_inflight,
                        retries=config.retries,
                        request_timeout=config.request_timeout,
                        patience=config.patience,
                        counters=counters,
                        keep_rollouts=config.keep_rollouts,
                    )
        finally:
            if opened is not backend:  # we opened it: we close it
                await opened.aclose()
    result.completed = writer.completed
    return result


def run(config: GenerateConfig | GenerationPlan, **hooks: Any) -> GenerationResult:
    """:func:`run_async` in an event loop of its own: label ``config``'s problems into its
    output."""
    return asyncio.run(run_async(config, **hooks))
