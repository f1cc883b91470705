"""The `amcs` command line: parses options, loads recipes, calls the library, shows progress."""

from __future__ import annotations

import functools
import importlib
import sys

import click
import typer
from typer.core import TyperGroup

from cli.eval import app as eval_app
from cli.export import export_command
from cli.filter import filter_command
from cli.generate import generate_command, search_parameters_help
from cli.problems import problems_command
from cli.push import push_command
from cli.view import view_command


class LazyCommand(click.Command):
    """A command whose module is imported only when the command runs or shows its help.

    `amcs train` builds its options from ``PRMTrainingConfig``, a
    ``transformers.TrainingArguments``, and importing transformers takes seconds: every other
    command (and `amcs --help`, which shows only ``short_help``) would pay for it if the command
    were built with the others."""

    def __init__(self, name: str, module: str, factory: str, short_help: str) -> None:
        super().__init__(name, short_help=short_help)
        self.module = module
        self.factory = factory

    @functools.cached_property
    def command(self) -> click.Command:
        return getattr(importlib.import_module(self.module), self.factory)()

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        return self.command.make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        return self.command.invoke(ctx)


# name -> (module, factory of the click command, short help), listed after the command named.
LAZY_COMMANDS = {
    "train": (
        "cli.train",
        "command",
        "Train a process reward model on labelled steps (LoRA or full fine-tuning).",
        "generate",
    ),
}


class AmcsGroup(TyperGroup):
    """The `amcs` group: the typer commands plus the lazily built ones (:class:`LazyCommand`),
    in the order of the listing."""

    def __init__(self, *, commands: dict[str, click.Command] | None = None, **kwargs) -> None:
        ordered: dict[str, click.Command] = {}
        for name, command in (commands or {}).items():
            ordered[name] = command
            for lazy, (module, factory, short_help, after) in LAZY_COMMANDS.items():
                if after == name:
                    ordered[lazy] = LazyCommand(lazy, module, factory, short_help)
        super().__init__(commands=ordered, **kwargs)

    def invoke(self, ctx: click.Context):
        """Run the command; Ctrl-C or SIGTERM that the command does not handle itself (it did
        not get far enough to have anything to keep) ends in one line and exit code 130 or 143,
        not click's "Aborted!" with exit code 1."""
        from cli.common import interrupted

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            name = f"amcs {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "amcs"
            interrupted(f"{name} stopped before it finished; its output is not complete")


app = typer.Typer(
    name="amcs",
    cls=AmcsGroup,
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
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of an error (also AMCS_DEBUG=1)."
    ),
) -> None:
    pass


def run(argv: list[str] | None = None) -> None:
    """The `amcs` program: every error a user can cause is one line and exit code 2 (an
    internal error: one line and exit code 1); `--debug` or AMCS_DEBUG=1 shows the traceback.
    SIGTERM stops a command as Ctrl-C does (``cli.common.install_sigterm_as_ctrl_c``): one line,
    exit code 143 (Ctrl-C: 130)."""

    argv = sys.argv[1:] if argv is None else argv
    from cli.common import install_sigterm_as_ctrl_c

    install_sigterm_as_ctrl_c()
    try:
        _guarded(argv)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


def _guarded(argv: list[str]) -> None:
    from cli.common import debugging

    try:
        app(args=argv, prog_name="amcs")
    except Exception as exc:  # noqa: BLE001 - each kind is reported in _report
        if debugging():
            raise
        _report(exc)


def _first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: an asyncio TaskGroup wraps what one
    task raised (a full disk while writing records) in a group; the user sees that error."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _report(exc: Exception) -> None:
    """One line for an error, exit code 2 for what the user can fix, 1 for a bug."""
    from amcs.backends.base import BackendConfigError, PromptTooLongError
    from amcs.fields import ConfigError
    from amcs.jsonl import JSONLinesError
    from amcs.outputs import OutputPathError
    from amcs.problems import ProblemError
    from amcs.recipes import RecipeError
    from amcs.records import OutputError, RecordFormatError
    from cli.common import fail

    exc = _first_leaf(exc)
    if isinstance(
        exc,
        ProblemError
        | RecordFormatError
        | OutputError
        | OutputPathError
        | JSONLinesError
        | ConfigError
        | RecipeError
        | BackendConfigError
        | PromptTooLongError
        | UnicodeDecodeError,
    ):
        fail(str(exc))
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
    fail(
        f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback "
        "and please report it",
        code=1,
    )


app.command("generate", epilog=search_parameters_help())(generate_command)
app.add_typer(eval_app, name="eval")
app.command("export")(export_command)
app.command("push")(push_command)
app.command("filter")(filter_command)
app.command("problems")(problems_command)
app.command("view")(view_command)
