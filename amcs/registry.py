"""Named entries with traits: the one way amcs knows its backends, search methods, verification
strategies and problem domains.

A registry maps a name to an entry (a small frozen dataclass of traits, or a domain object), so
code asks ``BACKENDS[name].needs_url`` instead of testing names. Adding an entry is one module
plus one ``register(...)`` call; ``docs/extending.md`` shows one of each kind.

Entries defined outside amcs are registered by the code that defines them, before it runs a
command. For a command started as a program (``amcs generate ...``) that code must be imported
first; two ways, read once, at the first lookup in any registry:

- ``AMCS_PLUGINS``: a comma-separated list of modules (``mypkg.domains``) or Python files
  (``tests/domains/counting.py``), imported in order;
- the entry-point group ``amcs.plugins`` of installed packages, e.g. in a pyproject.toml::

      [project.entry-points."amcs.plugins"]
      counting = "mypkg.counting"

A plugin that cannot be imported does not stop the program (its help, the commands that do not
need it): one ``warning:`` line on stderr names it and why, and the same words end the message
of a name no registry knows (:meth:`Registry.unknown`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

PLUGINS_ENV = "AMCS_PLUGINS"
PLUGIN_GROUP = "amcs.plugins"

Entry = TypeVar("Entry")


class Registry(Mapping[str, Entry], Generic[Entry]):
    """Name -> entry, in registration order. As a mapping it iterates over names, so
    ``name in registry`` and ``", ".join(registry)`` read the live set (a field's ``choices``
    may be a registry). The first read loads the plugins (module docstring)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what an entry is, for messages: "backend", "strategy", ...
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Entry, *, replace: bool = False) -> Entry:
        """Add ``entry`` under ``name``; a name already taken is a ValueError unless ``replace``
        (a test that registers again, a plugin that overrides a built-in on purpose)."""
        if not replace and name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def registered(self) -> dict[str, Entry]:
        """The entries registered so far, without loading the plugins (for registration's own
        checks)."""
        return dict(self._entries)

    def unknown(self, name: object, what: str | None = None) -> ValueError:
        """The error for a name that is not registered: "unknown backend 'x'; choose one of
        hf, ..." (``what`` replaces the kind, e.g. "--backend"), and why a plugin did not load
        when one did not."""
        message = f"unknown {what or self.kind} {name!r}; choose one of {', '.join(self)}"
        return ValueError("; ".join([message, *_plugins["errors"]]))

    def __getitem__(self, name: str) -> Entry:
        load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise KeyError(name) from None

    def entry(self, name: str) -> Entry:
        """The entry for ``name``, or :meth:`unknown`'s ValueError."""
        try:
            return self[name]
        except KeyError:
            raise self.unknown(name) from None

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        load_plugins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self._entries)})"


_plugins: dict = {"loaded": False, "errors": []}


def load_plugins() -> list[str]:
    """Import the plugins of AMCS_PLUGINS and of the ``amcs.plugins`` entry points, once;
    returns why any of them did not load (module docstring)."""
    if _plugins["loaded"]:
        return _plugins["errors"]
    _plugins["loaded"] = True  # first: a plugin's own registry calls must not come back here
    for spec in [s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(",") if s.strip()]:
        try:
            _import_plugin(spec)
        except Exception as exc:  # noqa: BLE001 - any failure of foreign code, named
            _plugin_failed(f"{PLUGINS_ENV}: cannot import the plugin {spec}", exc)
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - any failure of foreign code, named
            _plugin_failed(f"entry point {point.name} = {point.value} ({PLUGIN_GROUP})", exc)
    return _plugins["errors"]


def _plugin_failed(what: str, exc: Exception) -> None:
    message = f"{what} ({type(exc).__name__}: {' '.join(str(exc).split())})"
    _plugins["errors"].append(message)
    print(f"warning: {message}", file=sys.stderr)


def _import_plugin(spec: str) -> None:
    """Import a module by name, or a ``.py`` file by path (as module ``amcs_plugin_<stem>``)."""
    if not (spec.endswith(".py") or os.sep in spec):
        importlib.import_module(spec)
        return
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    name = f"amcs_plugin_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
