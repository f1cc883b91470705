"""`amcs problems`: load a problem set the way every other command will, and show it."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from amcs.problems import ProblemError, load_problems
from cli.common import fail


def problems_command(
    source: str = typer.Argument(
        "arith",
        help="A .jsonl/.json/.parquet file, a Hugging Face dataset (name, name:split or name:config:split, e.g. openai/gsm8k:main:test), "
        "or the bundled arithmetic domain: 'arith' (200 problems) or 'arith:N'.",
    ),
    limit: int | None = typer.Option(
        None, "--limit", help="Keep only the first N problems (JSONL and Parquet: read no further)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for generated (arith) problems."),
    show: int = typer.Option(5, "--show", help="How many problems to print."),
    question_field: str | None = typer.Option(
        None,
        "--question-field",
        help="Field holding the question (default: question|problem|query|prompt).",
    ),
    answer_field: str | None = typer.Option(
        None, "--answer-field", help="Field holding the answer (default: answer|final_answer|...)."
    ),
) -> None:
    """Check a problem set and preview it: the same loader and field mapping as `generate`.

    Bad input (malformed JSON, a missing question or answer, a duplicate id) is reported with the
    file and line, and the exit status is 2.

    Examples: amcs problems gsm8k_test.jsonl --show 3;  amcs problems openai/gsm8k:main:test --limit 20
    """
    try:
        problems = load_problems(
            source, limit=limit, seed=seed, question_field=question_field, answer_field=answer_field
        )
    except ProblemError as exc:
        fail(str(exc))
    # Text, not str: questions hold brackets and colons that Rich would read as markup or emoji.
    table = Table(title=Text(f"{len(problems)} problems from {source}"))
    table.add_column("id")
    table.add_column("question", overflow="fold", max_width=80)
    table.add_column("answer")
    for p in problems[:show]:
        table.add_row(Text(p.id), Text(p.question), Text(p.answer))
    Console().print(table)
