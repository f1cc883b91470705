"""What the commands share: error output, option checks, --set parsing, and opening a backend."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.text import Text

from amcs.recipes import RecipeError, load_recipe
from amcs.redaction import redact

# Messages hold user text (file names, "arith:-1:", "[default]"): never markup, never emoji.
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def say(message: str, style: str | None = None) -> None:
    """One line on stderr, printed as it is (no markup or emoji parsing), secrets redacted."""
    err.print(Text(redact(message), style=style or ""))


# --- interruption: SIGTERM is Ctrl-C --------------------------------------------------------------

# How an interrupted command exits: 128 + the signal's number, as a shell reports a process that
# the signal killed (Ctrl-C 130, SIGTERM 143), so a supervisor that sent SIGTERM sees its own.
INTERRUPT_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_interrupts: dict[str, int | None] = {"pid": None, "signal": None}


def install_sigterm_as_ctrl_c() -> None:
    """Make SIGTERM (kill, a batch scheduler, a container stopping) stop this process the way
    Ctrl-C does: every command's Ctrl-C handling (generate commits what finished and removes its
    lock, eval keeps its records, train leaves no half-saved PRM) then covers it too, with one
    line and exit code 143 instead of a silent death.

    The handler calls whatever handles SIGINT at that moment: inside ``asyncio.run`` that is
    asyncio's, which cancels the main task (so no write is cut in half) and raises
    KeyboardInterrupt once it has unwound; elsewhere Python's, which raises KeyboardInterrupt.
    Where SIGINT is ignored (a background job), SIGTERM raises KeyboardInterrupt itself. Only
    this process handles it so: a child forked with the handler gets SIGTERM's default back."""
    _interrupts["pid"] = os.getpid()
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    if os.getpid() != _interrupts["pid"]:  # a forked child: die as SIGTERM's default does
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if _interrupts["signal"] is None:
        _interrupts["signal"] = signal.SIGTERM
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def interrupted(message: str | None) -> NoReturn:
    """End an interrupted command: ``interrupted: message`` (``interrupted by SIGTERM: ...``
    when SIGTERM stopped it), one line after a blank one (Ctrl-C's ``^C`` or a progress display
    ends the terminal's line), and the exit code of the signal (INTERRUPT_EXIT_CODES). None
    prints nothing (the processes of a distributed run but the first)."""
    by = _interrupts["signal"] or signal.SIGINT
    if message is not None:
        how = "interrupted by SIGTERM" if by == signal.SIGTERM else "interrupted"
        err.print()
        err.print(Text(f"{how}: {message}"))
    raise typer.Exit(INTERRUPT_EXIT_CODES.get(by, 128 + by))


def debugging() -> bool:
    """`amcs --debug ...` or AMCS_DEBUG=1: errors show their traceback."""
    return "--debug" in sys.argv or os.environ.get("AMCS_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` (one line, as it is, secrets redacted: it may quote a server)
    and exit with ``code``; when debugging, the traceback of the exception being handled comes
    first."""
    if debugging() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    err.print(Text("error: ", style="red") + Text(redact(message)))
    raise typer.Exit(code)


def check_number(
    opts: dict,
    key: str,
    kind: type = int,
    *,
    min: float | None = None,  # noqa: A002
    above: float | None = None,
    max: float | None = None,  # noqa: A002
    below: float | None = None,
) -> None:
    """Convert opts[key] (from the command line or a recipe) to ``kind`` and check its range;
    None stays None (not given). The message names the option and what it allows."""
    from dataclasses import field as make_field

    from amcs.fields import ConfigError, check, convert

    value = opts.get(key)
    if value is None:
        return
    f = make_field(metadata={"min": min, "above": above, "max": max, "below": below})
    f.name = "--" + key.replace("_", "-")
    try:
        opts[key] = convert(f, value, kind)
        check(f, opts[key], kind)
    except ConfigError as exc:
        fail(str(exc))


def parse_set_value(key: str, value: str) -> Any:
    """One ``--set`` value: YAML for numbers, booleans, null and lists (``k0=8``,
    ``top_k=null``, ``lora_target_modules=[q,v]``, a quoted ``'"text"'``); any other text is
    kept exactly as typed, since YAML would strip or fold its whitespace (a real newline would
    become null, i.e. "not given"). Escapes such as ``\\n`` are for the key's own field to decode
    (:func:`amcs.steps.parse_separator`). An empty value is an error."""
    if value == "":
        fail(
            f"--set {key}= has no value (write {key}=null for null, {key}='\"\"' for an empty text)"
        )
    if not value.strip():
        return value
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not valid YAML"
        fail(f"--set {key}={value!r}: cannot read the value ({problem})")
    if isinstance(loaded, str) and not value.lstrip().startswith(("'", '"')):
        return value
    return loaded


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a mapping (``-`` in keys read as ``_``); values as
    :func:`parse_set_value` reads them."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set expects KEY=VALUE, got {item!r}")
        key = key.strip().replace("-", "_")
        out[key] = parse_set_value(key, value)
    return out


def merge_options(
    recipe, defaults: dict[str, Any], given: dict[str, Any], section: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options from defaults < the recipe < the command line (``given``; None = not given).
    The recipe's nested ``section`` (e.g. ``search:``) comes back apart; any other key the
    defaults do not know is an error naming the recipe."""
    try:
        base = load_recipe(recipe)
    except RecipeError as exc:
        fail(str(exc))
    nested = dict(base.pop(section, None) or {}) if section else {}
    unknown = set(base) - set(defaults)
    if unknown:
        fail(f"{recipe}: unknown option(s) {', '.join(sorted(unknown))}")
    return defaults | base | {k: v for k, v in given.items() if v is not None}, nested


def flag_help(config_class: type, name: str) -> str:
    """A flag's help from its config field (the one description, shared with recipes, --set and
    the library): the field's help text, what it allows when it has a range or choices, and its
    default (a field whose default is None says in its text what not giving it means)."""
    from amcs.fields import allowed, field_types

    f = config_class.__dataclass_fields__[name]
    text, bracket, said_default = f.metadata["help"].partition(" [default:")
    m = f.metadata
    if m.get("choices") or any(m.get(k) is not None for k in ("min", "max", "above", "below")):
        what = allowed(f, field_types(config_class)[name]).removesuffix(" or null")
        text += f" ({what})"
    if bracket:
        return f"{text}{bracket}{said_default}"
    if isinstance(f.default, bool):
        return f"{text} [default: {'on' if f.default else 'off'}]"
    return text if f.default is None else f"{text} [default: {f.default}]"


def config_flag(config_class: type, name: str, *param_decls: str) -> Any:
    """A typer option for the field ``name`` of a config dataclass: default None (not given: the
    recipe's value or the field's default applies), help from the field (:func:`flag_help`)."""
    return typer.Option(None, *param_decls, help=flag_help(config_class, name))


def config_defaults(config_class: type, section: str | None = None) -> dict[str, Any]:
    """Every option of a config dataclass with its default (the keys a recipe may hold; the
    nested ``section``, e.g. ``search``, apart)."""
    import dataclasses

    return {f.name: f.default for f in dataclasses.fields(config_class) if f.name != section}


def config_sets(config_class: type, items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items for a command whose options are all fields of one config: an
    unknown key is a one-line error listing the known ones."""
    settings = parse_sets(items)
    known = config_defaults(config_class)
    unknown = sorted(set(settings) - set(known))
    if unknown:
        fail(f"unknown --set key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return settings


def make_command_config(config_class: type, opts: dict[str, Any], flags: set[str]) -> Any:
    """``config_class(**opts)``, or a one-line error (exit 2): a bad value of a field that is a
    flag is named as the flag (``--limit must be an integer >= 1``), any other as its key."""
    import re

    from amcs.fields import ConfigError

    try:
        return config_class(**opts)
    except ConfigError as exc:
        message = str(exc)
        match = re.match(r"(\w+) must ", message)
        if match and match[1] in flags:
            rest = message[len(match[1]) :].replace(" or null, got ", ", got ", 1)
            message = "--" + match[1].replace("_", "-") + rest  # null is for recipes
        fail(message)


def check_output(option: str, path, **how) -> None:
    """:func:`amcs.outputs.check_output` as a one-line error (exit 2): run it before anything is
    read, written or loaded."""
    from amcs.outputs import OutputPathError
    from amcs.outputs import check_output as check

    try:
        check(option, path, **how)
    except OutputPathError as exc:
        fail(str(exc))


CHAT_CHOICE = {"auto": None, "chat": True, "plain": False}


def check_backend_options(opts: dict) -> None:
    """Fail early, before any model loads, on backend options that cannot work (the backend's
    traits: amcs.backends.registry)."""
    from amcs.backends import BACKENDS

    spec = BACKENDS.get(opts["backend"])
    if spec is None:
        fail(str(BACKENDS.unknown(opts["backend"], "--backend")))
    check_number(opts, "max_batch_size", int, min=1)
    if opts["prompt_format"] not in CHAT_CHOICE:
        fail(f"--prompt-format must be auto, chat or plain, not {opts['prompt_format']!r}")
    if spec.needs_url and not opts["url"]:
        fail(f"the {opts['backend']} backend needs a server URL: pass --url")
    if opts["backend_options"] is not None and not isinstance(opts["backend_options"], dict):
        fail("backend_options must be a mapping of option names to values")
    missing = spec.missing_package()
    if missing:
        fail(missing)


async def open_backend(opts: dict, model_name: str):
    """The backend named by opts["backend"], started (servers checked), or a clear failure."""
    from amcs.backends import BACKENDS, make_backend
    from amcs.hub import looks_like_local_path
    from amcs.prompts import uses_chat_template

    spec = BACKENDS.entry(opts["backend"])
    if looks_like_local_path(model_name):
        given, model_name = model_name, str(Path(model_name).expanduser())  # "~/models/x" too
        if spec.in_process and not Path(model_name).exists():
            fail(f"--model {given}: no such model directory (nor a hub id like org/name)")
    try:
        options: dict[str, Any] = {}
        if spec.needs_url:
            urls = opts["url"]
            options["urls"] = [urls] if isinstance(urls, str) else list(urls or [])
        for option, keyword in spec.options.items():  # the command options it takes
            if opts.get(option) is not None and opts[option] != "":
                options[keyword] = opts[option]
        options |= opts["backend_options"] or {}
        backend = make_backend(opts["backend"], model_name, **options)
    except ImportError as exc:  # an optional engine (sglang) is not installed
        fail(str(exc))
    except (OSError, ValueError, TypeError) as exc:
        fail(f"cannot load {opts['backend']} backend with model {model_name}: {exc}")
    start = getattr(backend, "start", None)
    if start is not None:
        from amcs.backends.base import BackendConfigError

        try:
            await start()
        except (OSError, ValueError, BackendConfigError) as exc:
            await backend.aclose()
            fail(str(exc))
    if opts["prompt_format"] == "chat" and not uses_chat_template(backend.tokenizer):
        await backend.aclose()
        fail(f"--prompt-format chat: the tokenizer of {model_name} has no chat template")
    return backend


def prompt_function(opts: dict):
    """prompt(tokenizer, question) -> ids, as the options ask (chat template or plain)."""
    from amcs.prompts import prompt_ids

    chat = CHAT_CHOICE[opts["prompt_format"]]

    def prompt(tokenizer, question: str) -> list[int]:
        return prompt_ids(tokenizer, question, system_prompt=opts["system_prompt"], chat=chat)

    return prompt
