"""`amcs filter`: keep the paths where the MC labels and a judge agree on the first wrong step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from cli.common import check_number, fail, say

ORACLE = "arith-oracle"


def _judge(judge: str, prm_format: str | None, batch_size: int):
    """The step scorer `judge` names: the exact arithmetic oracle, or a PRM checkpoint."""
    if judge == ORACLE:
        from amcs.verification import ArithOracleScorer

        return ArithOracleScorer()
    from amcs.assets import TINY_PRM
    from amcs.prm import load_prm

    path = TINY_PRM if judge == "tiny-prm" else judge
    try:
        return load_prm(path, prm_format, max_batch_size=batch_size)
    except (OSError, ValueError) as exc:
        fail(
            f"cannot load the judge {judge}: {exc} (a PRM directory or hub id, tiny-prm, {ORACLE})"
        )


def filter_command(
    data: Path = typer.Argument(..., help="A data file of `amcs generate` (or TRL-format JSONL)."),
    judge: str = typer.Option(
        "tiny-prm",
        "--judge",
        "-j",
        help=f"Who judges the steps: a PRM directory or hub id, 'tiny-prm' (bundled), or {ORACLE}.",
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

    Example: amcs filter amcs-data.jsonl --judge tiny-prm --out amcs-consensus.jsonl
    """
    from amcs.filter import MODES, FilterError, check_paths, filter_file

    opts = {"threshold": threshold, "batch_size": batch_size}
    check_number(opts, "threshold", float, min=0, max=1)
    check_number(opts, "batch_size", int, min=1)
    if mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    try:
        check_paths(data, out)
    except FilterError as exc:
        fail(str(exc))
    scorer = _judge(judge, prm_format, opts["batch_size"])

    def progress(stats) -> None:
        say(f"filter: {stats.paths:,} paths judged, {stats.kept:,} kept")

    async def main():
        try:
            return await filter_file(
                data,
                out,
                scorer,
                judge_name=judge,
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
