"""The `amcs` command line: parses options, loads recipes, calls the library, shows progress."""

from __future__ import annotations

import typer

from cli.eval import app as eval_app
from cli.export import export_command
from cli.generate import generate_command
from cli.problems import problems_command
from cli.train import train_command
from cli.view import view_command

app = typer.Typer(
    name="amcs",
    help=(
        "Adaptive Monte Carlo Search for process supervision: label solution steps with a policy "
        "model, train process reward models on the labels, and verify solutions with them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts contain brackets ("[default: 64]", "\\boxed{}") that are not markup.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"amcs-prm {version('amcs-prm')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


app.command("generate")(generate_command)
app.command("train")(train_command)
app.add_typer(eval_app, name="eval")
app.command("export")(export_command)
app.command("problems")(problems_command)
app.command("view")(view_command)
