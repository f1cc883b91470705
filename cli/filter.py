"""`amcs filter`: keep the paths where the MC labels and a judge agree on the first wrong step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from amcs import filter as consensus
from amcs.filter import INSTRUCT, FilterConfig, FilterError
from amcs.prm.names import ScorerError
from amcs.shards import ShardError
from cli.common import (
    check_backend_options,
    config_flag,
    config_sets,
    fail,
    make_command_config,
    open_backend,
    say,
)

FLAGS = {
    "data", "out", "judge", "judge_model", "backend", "url", "served_model_name",
    "max_new_tokens", "mode", "threshold", "prm_format", "batch_size", "resume",
}  # fmt: skip


def _flag(name: str, *param_decls: str) -> Any:
    return config_flag(FilterConfig, name, *param_decls)


def filter_command(
    data: Path = typer.Argument(
        ..., help=FilterConfig.__dataclass_fields__["data"].metadata["help"]
    ),
    judge: str | None = _flag("judge", "--judge", "-j"),
    judge_model: str | None = _flag("judge_model"),
    backend: str | None = _flag("backend"),
    url: list[str] | None = _flag("url", "--url"),
    served_model_name: str | None = _flag("served_model_name"),
    max_new_tokens: int | None = _flag("max_new_tokens"),
    out: Path = typer.Option(
        ..., "--out", "-o", help=FilterConfig.__dataclass_fields__["out"].metadata["help"]
    ),
    mode: str | None = _flag("mode"),
    threshold: float | None = _flag("threshold"),
    prm_format: str | None = _flag("prm_format"),
    batch_size: int | None = _flag("batch_size"),
    resume: bool | None = _flag("resume", "--resume/--no-resume"),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Any option above as KEY=VALUE (e.g. --set threshold=0.4), repeatable; the flags win.",
    ),
) -> None:
    """Consensus filtering ("The Lessons of Developing PRMs", arXiv 2501.07301): a path is kept
    when its first "-" label and the judge's first low-scored step are the same step (or neither
    has one). The output is written beside --out and renamed into place when complete; an
    interrupted run resumes. Counts, and why paths were dropped, go to OUT.summary.json.

    Examples:

      amcs filter amcs-data.jsonl --judge tiny-prm --out amcs-consensus.jsonl

      amcs filter data.jsonl --out consensus.jsonl --judge instruct --judge-model Qwen/Qwen2.5-Math-7B-Instruct --backend openai --url http://127.0.0.1:8000
    """
    params = locals()
    settings = config_sets(FilterConfig, set_)
    given = {name: params[name] for name in FLAGS if params[name] is not None}
    given |= {"data": str(data), "out": str(out), "url": list(url or []) or None}
    # A bad value is named as the user gave it: --set batch_size=0, or --batch-size 0.
    config = make_command_config(FilterConfig, settings | given, FLAGS - set(settings))
    backend_opts = {
        "backend": config.backend,
        "url": config.url,
        "served_model_name": config.served_model_name,
        "max_batch_size": 128,
        "backend_options": None,
        "prompt_format": "auto",
    }
    if config.judge == INSTRUCT:
        check_backend_options(backend_opts)

    def progress(stats) -> None:
        say(f"filter: {stats.paths:,} paths judged, {stats.kept:,} kept")

    try:
        stats = consensus.run(
            config,
            backend=lambda: open_backend(backend_opts, config.judge_model),
            on_batch=progress,
        )
    except ScorerError as exc:
        fail(f"cannot load the judge {config.judge}: {exc}")
    except (FilterError, ShardError) as exc:
        fail(str(exc))
    s = stats.to_dict()
    share = f" ({s['kept_fraction']:.1%})" if s["paths"] else ""
    say(f"kept {s['kept']:,} of {s['paths']:,} paths{share}; written to {config.out}")
    for why, n in s["reasons"].items():
        say(f"  {why}: {n:,}")
