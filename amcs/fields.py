"""Configuration fields that carry their help text and allowed range.

A config is a dataclass whose fields are made with ``option(...)``; recipes, ``--set KEY=VALUE``
and ``--help`` all read the same field, so a value is converted by the field's type and checked
against its range in one place, and every message names the key and what it allows.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


def option(
    default: Any,
    help: str,  # noqa: A002 - the name TRL's configs use
    *,
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    above: float | None = None,
    below: float | None = None,
    choices: tuple | None = None,
) -> Any:
    """A dataclass field with help text and a range: ``min``/``max`` are inclusive bounds,
    ``above``/``below`` exclusive ones, ``choices`` the allowed values."""
    meta = {"help": help, "min": min, "max": max, "above": above, "below": below}
    meta["choices"] = choices
    return dataclasses.field(default=default, metadata=meta)


def allowed(f: dataclasses.Field, kind: Any = None) -> str:
    """The allowed values of a field in words: 'an integer >= 1', 'a number in (0, 1]', ..."""
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    what = words.get(kind, "a value")
    low = (m.get("min"), "[") if m.get("min") is not None else (m.get("above"), "(")
    high = (m.get("max"), "]") if m.get("max") is not None else (m.get("below"), ")")
    if low[0] is not None and high[0] is not None:
        return f"{what} in {low[1]}{low[0]:g}, {high[0]:g}{high[1]}"
    if low[0] is not None:
        return f"{what} {'>=' if low[1] == '[' else '>'} {low[0]:g}"
    if high[0] is not None:
        return f"{what} {'<=' if high[1] == ']' else '<'} {high[0]:g}"
    return what


_TYPES: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> type of a dataclass (its annotations resolved once)."""
    if cls not in _TYPES:
        _TYPES[cls] = typing.get_type_hints(cls)
    return _TYPES[cls]


def convert(f: dataclasses.Field, value: Any, kind: Any) -> Any:
    """``value`` as type ``kind``, or ConfigError. Strings from the command line are parsed;
    a float with no fraction is accepted for an int ('8.0'), a fraction is not."""
    bad = ConfigError(f"{f.name} must be {allowed(f, kind)}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if kind is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise bad from None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise bad
    if kind is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        raise bad
    if kind is str:
        if isinstance(value, str):
            return value
        raise bad
    return value


def check(f: dataclasses.Field, value: Any, kind: Any = None) -> None:
    """Raise ConfigError when ``value`` is outside the field's range or choices."""
    m = f.metadata
    ok = True
    if m.get("choices") and value not in m["choices"]:
        ok = False
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ok = (
            (m.get("min") is None or value >= m["min"])
            and (m.get("max") is None or value <= m["max"])
            and (m.get("above") is None or value > m["above"])
            and (m.get("below") is None or value < m["below"])
        )
    if not ok:
        raise ConfigError(f"{f.name} must be {allowed(f, kind)}, got {value!r}")


def validate(config: Any) -> None:
    """Convert (in place, for frozen dataclasses too) and range-check every field."""
    types = field_types(type(config))
    for f in dataclasses.fields(config):
        kind = types[f.name]
        value = convert(f, getattr(config, f.name), kind)
        check(f, value, kind)
        object.__setattr__(config, f.name, value)


def field_help(cls: type) -> list[tuple[str, str, Any]]:
    """(name, 'help (allowed)', default) for every field of a config class, for --help."""
    types = field_types(cls)
    return [
        (f.name, f"{f.metadata.get('help', '')} ({allowed(f, types[f.name])})", f.default)
        for f in dataclasses.fields(cls)
    ]
