"""Configuration fields that carry their help text and allowed range.

A config is a dataclass whose fields are made with ``option(...)``; recipes, ``--set KEY=VALUE``
and ``--help`` all read the same field, so a value is converted by the field's type and checked
against its range in one place, and every message names the key and what it allows.

A config may also inherit plain dataclass fields (``PRMTrainingConfig`` inherits
``transformers.TrainingArguments``): ``convert`` handles their types too (``X | None``, unions,
enums, lists, mappings), while ranges, ``validate`` and ``field_help`` apply to ``option()``
fields only, since only those carry a range.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from typing import Any

# Marks the metadata of a field made by option(): it carries a range and is validated.
OPTION_MARK = "amcs_option"


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
    meta[OPTION_MARK] = True
    return dataclasses.field(default=default, metadata=meta)


def is_option(f: dataclasses.Field) -> bool:
    """Whether ``f`` was made by :func:`option` (rather than inherited from a plain dataclass)."""
    return bool(f.metadata.get(OPTION_MARK))


def _members(kind: Any) -> tuple | None:
    """The member types of a union type (``int | None``, ``Union[a, b]``), else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return None


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, enum.Enum)


_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _kind_words(kind: Any) -> str:
    members = _members(kind)
    if members is not None:
        enums = [m for m in members if _is_enum(m)]
        if enums:  # transformers' `SchedulerType | str`: the string must name a member
            words = [_kind_words(enums[0])]
        else:
            words = [_kind_words(m) for m in members if m is not type(None)]
        if type(None) in members:
            words.append("null")
        return " or ".join(dict.fromkeys(words))
    if _is_enum(kind):
        return "one of " + ", ".join(str(m.value) for m in kind)
    origin = typing.get_origin(kind) or kind
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return _WORDS.get(kind, "a value")


def allowed(f: dataclasses.Field, kind: Any = None) -> str:
    """The allowed values of a field in words: 'an integer >= 1', 'a number in (0, 1]', ..."""
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    members = _members(kind)
    if members is not None and type(None) in members:
        rest = [k for k in members if k is not type(None)]
        inner = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
        return f"{allowed(f, inner)} or null"
    what = _kind_words(kind)
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
    members = _members(kind)
    if members is not None:
        if value is None:
            if type(None) in members:
                return None
            raise bad
        enums = [m for m in members if _is_enum(m)]
        if enums and isinstance(value, str) and not isinstance(value, enums[0]):
            return _enum_value(enums[0], value, bad)
        for member in members:
            if member is type(None):
                continue
            try:
                return convert(f, value, member)
            except ConfigError:
                continue
        raise bad
    if _is_enum(kind):
        return _enum_value(kind, value, bad)
    origin = typing.get_origin(kind) or kind
    if origin in (list, dict):
        if isinstance(value, origin):
            return value
        raise bad
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


def _enum_value(kind: type[enum.Enum], value: Any, bad: ConfigError) -> Any:
    """``value`` if it is a member of ``kind`` or one's value (kept as given), else ``bad``."""
    if isinstance(value, kind) or value in {m.value for m in kind}:
        return value
    raise bad


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
    """Convert (in place, for frozen dataclasses too) and range-check every ``option()`` field."""
    kinds = field_types(type(config))
    for f in dataclasses.fields(config):
        if not is_option(f):
            continue
        kind = kinds[f.name]
        value = convert(f, getattr(config, f.name), kind)
        check(f, value, kind)
        object.__setattr__(config, f.name, value)


def field_help(cls: type) -> list[tuple[str, str, Any]]:
    """(name, 'help (allowed)', default) for every ``option()`` field of a config class, for
    --help."""
    kinds = field_types(cls)
    return [
        (f.name, f"{f.metadata.get('help', '')} ({allowed(f, kinds[f.name])})", f.default)
        for f in dataclasses.fields(cls)
        if is_option(f)
    ]
