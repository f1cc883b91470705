"""`amcs export`: convert a generate run's output to other PRM data formats."""

from __future__ import annotations

from pathlib import Path

import typer

from amcs.export import EXPORT_FORMATS, export_records
from cli.common import fail


def export_command(
    data: list[str] = typer.Argument(
        ...,
        help="Data file(s) written by `amcs generate`: several files or a quoted glob "
        "('part*.jsonl') export as one (shards, or runs over the same problems; an id must "
        "name one question).",
    ),
    fmt: str = typer.Option(..., "--format", "-f", help=f"One of: {', '.join(EXPORT_FORMATS)}."),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Where to write the converted JSONL (for hub: the folder to write into).",
    ),
) -> None:
    """Export labelled steps: trl (prompt/completions/labels, TRL's stepwise format), shepherd
    (Math-Shepherd's "ки"-tagged text with +/- labels), tree (OpenR's math-aps-tree layout,
    from the run's meta file) or processbench (one line per path: problem, steps, label = first
    "-" step or -1; all-"+" paths that stop before a final answer are left out; `amcs eval
    steps --data` reads it) or hub (a folder for the Hugging Face Hub: the rows as Parquet
    shards under data/ and a README.md dataset card with the run's counts and config;
    `datasets.load_dataset(OUT)` loads it, `amcs push OUT REPO_ID` uploads it).

    The data rows get the same checks as in `amcs train` (any file it reads can be exported);
    a bad row stops the export naming its file and line. The output appears only when complete:
    a failed export leaves an existing --out file as it was.

    Examples:

      amcs export amcs-data.jsonl --format shepherd --out shepherd.jsonl

      amcs export 'part*.jsonl' --format trl --out all.jsonl

      amcs export amcs-data.jsonl --format processbench --out steps.jsonl

      amcs export amcs-data.jsonl --format hub --out my-prm-data
    """
    from amcs.shards import expand_sources

    try:
        count = export_records(expand_sources(data), fmt, out)
    except ValueError as exc:  # ExportError, PRMDataError, RecordFormatError: one line each
        fail(str(exc))
    unit = "rows (Parquet) and a dataset card" if fmt == "hub" else "lines"
    typer.echo(f"wrote {count:,} {unit} to {out}", err=True)
