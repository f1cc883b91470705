"""`amcs filter`: keep the paths where the MC labels and a judge agree on the first wrong step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from amcs.prm.names import SCORER_NAMES, scorer_location
from cli.common import check_backend_options, check_number, fail, open_backend, say

INSTRUCT = "instruct"


def _judge(judge: str, prm_format: str | None, batch_size: int):
    """The step scorer --judge names (:func:`amcs.prm.load_scorer`), or a one-line error."""
    from amcs.prm import load_scorer
    from amcs.prm.names import ScorerError

    try:
        return load_scorer(judge, prm_format=prm_format, max_batch_size=batch_size)
    except ScorerError as exc:
        fail(f"cannot load the judge {judge}: {exc}")


def filter_command(
    data: Path = typer.Argument(..., help="A data file of `amcs generate` (or TRL-format JSONL)."),
    judge: str = typer.Option(
        "tiny-prm",
        "--judge",
        "-j",
        help=f"Who judges the steps: {SCORER_NAMES}, or {INSTRUCT} (an instruct model asked "
        "for the earliest wrong step: --judge-model).",
    ),
    judge_model: str | None = typer.Option(
        None, help=f"--judge {INSTRUCT}: the model (path or hub id; for servers the tokenizer)."
    ),
    backend: str = typer.Option(
        "hf", help=f"--judge {INSTRUCT}: hf | sglang | sglang-http | openai, as for generate."
    ),
    url: list[str] = typer.Option([], "--url", help=f"--judge {INSTRUCT}: server URL(s)."),
    served_model_name: str | None = typer.Option(
        None, help=f"--judge {INSTRUCT} with openai: the name the server serves the model under."
    ),
    max_new_tokens: int = typer.Option(
        1024, help=f"--judge {INSTRUCT}: the most tokens of one critique."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the kept paths (JSONL)."),
    mode: str = typer.Option(
        "keep",
        help="keep: write only the paths where both agree; mark: write every path with "
        "'consensus', 'mc_first_error' and 'judge_first_error' added.",
    ),
    threshold: float = typer.Option(
        0.5, help="A step the judge scores below this is its first error."
    ),
    prm_format: str | None = typer.Option(None, help="token-cls, step-tag or qwen-prm (detected)."),
    batch_size: int = typer.Option(32, help="Steps the PRM scores in one forward pass."),
    resume: bool = typer.Option(True, help="Continue an interrupted run on the same input."),
) -> None:
    """Consensus filtering ("The Lessons of Developing PRMs", arXiv 2501.07301): a path is kept
    when its first "-" label and the judge's first low-scored step are the same step (or neither
    has one). The output is written beside --out and renamed into place when complete; an
    interrupted run resumes. Counts, and why paths were dropped, go to OUT.summary.json.

    Examples:

      amcs filter amcs-data.jsonl --judge tiny-prm --out amcs-consensus.jsonl

      amcs filter data.jsonl --out consensus.jsonl --judge instruct --judge-model Qwen/Qwen2.5-Math-7B-Instruct --backend openai --url http://127.0.0.1:8000
    """
    from amcs.filter import MODES, FilterError, check_paths, filter_file

    opts = {"threshold": threshold, "batch_size": batch_size, "max_new_tokens": max_new_tokens}
    check_number(opts, "threshold", float, min=0, max=1)
    check_number(opts, "batch_size", int, min=1)
    check_number(opts, "max_new_tokens", int, min=1)
    backend_opts = {
        "backend": backend,
        "url": list(url) or None,
        "served_model_name": served_model_name,
        "max_batch_size": 128,
        "backend_options": None,
        "prompt_format": "auto",
    }
    if judge == INSTRUCT:
        if not judge_model:
            fail(f"--judge {INSTRUCT} needs --judge-model (the instruct model that judges)")
        check_backend_options(backend_opts)
    elif judge_model:
        fail(f"--judge-model is for --judge {INSTRUCT}")
    if mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    from amcs.shards import check_combinable

    try:
        check_paths(data, out, judge_model if judge == INSTRUCT else scorer_location(judge))
        check_combinable([data])  # a concatenated file may name two questions by one id
    except ValueError as exc:  # FilterError, ShardError
        fail(str(exc))
    scorer = None if judge == INSTRUCT else _judge(judge, prm_format, opts["batch_size"])

    def progress(stats) -> None:
        say(f"filter: {stats.paths:,} paths judged, {stats.kept:,} kept")

    async def main():
        nonlocal scorer
        if scorer is None:
            from amcs.critic import CriticJudge

            scorer = CriticJudge(
                await open_backend(backend_opts, judge_model),
                max_new_tokens=opts["max_new_tokens"],
            )
        try:
            return await filter_file(
                data,
                out,
                scorer,
                judge_name=f"{judge}:{judge_model}" if judge == INSTRUCT else judge,
                mode=mode,
                threshold=opts["threshold"],
                resume=resume,
                on_batch=progress,
            )
        finally:
            await scorer.aclose()

    try:
        stats = asyncio.run(main())
    except FilterError as exc:
        fail(str(exc))
    s = stats.to_dict()
    share = f" ({s['kept_fraction']:.1%})" if s["paths"] else ""
    say(f"kept {s['kept']:,} of {s['paths']:,} paths{share}; written to {out}")
    for why, n in s["reasons"].items():
        say(f"  {why}: {n:,}")
