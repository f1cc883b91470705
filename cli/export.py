"""`amcs export`: convert a generate run's output to other PRM data formats."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from amcs.export import EXPORT_FORMATS, export_records
from amcs.records import RecordFormatError

err = Console(stderr=True, highlight=False, soft_wrap=True)


def export_command(
    data: Path = typer.Argument(..., help="A data file written by `amcs generate`."),
    fmt: str = typer.Option(..., "--format", "-f", help=f"One of: {', '.join(EXPORT_FORMATS)}."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the converted JSONL."),
) -> None:
    """Export labelled steps: trl (prompt/completions/labels, TRL's stepwise format), shepherd
    (Math-Shepherd's "ки"-tagged text with +/- labels) or tree (OpenR's math-aps-tree layout,
    from the run's meta file).

    Example: amcs export amcs-data.jsonl --format shepherd --out shepherd.jsonl
    """
    if not data.exists():
        err.print(f"[red]error:[/red] {data}: no such file")
        raise typer.Exit(2)
    try:
        count = export_records(data, fmt, out)
    except (ValueError, RecordFormatError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    err.print(f"wrote {count:,} lines to {out}")
