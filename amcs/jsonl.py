"""Reading JSON Lines input so that every failure names the file and the line.

A text-mode ``open()`` raises ``UnicodeDecodeError`` from inside the loop with neither the file nor
the line in its message, and ``json.loads`` knows only the column. ``read_json_lines`` reads bytes,
decodes and parses one line at a time, and turns each failure into a ``JSONLinesError`` whose
message starts with ``FILE:LINE:``. Blank lines are skipped (they carry no record); line numbers
count them, so they match what an editor shows.

Valid JSON can still hold text that is not Unicode: the escape ``"\ud800"`` (half of a UTF-16
surrogate pair, with no other half) parses into a string that no UTF-8 file can hold, and the
failure would come much later, far from its cause (writing the output, tokenizing). Such a line is
refused where it is read (:func:`check_surrogates`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JSONLinesError(ValueError):
    """A line that is not UTF-8, not JSON or not Unicode text (a lone surrogate escape); the
    message starts with ``FILE:LINE:``."""


# A \uXXXX escape of a surrogate code point: only a text holding one needs the closer look.
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")
# Any escape, read left to right, so that "\\\\ud800" (an escaped backslash, then the text
# "ud800") is not taken for a \u escape.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def lone_surrogate(text: str) -> int | None:
    """The offset in the JSON text ``text`` of the first ``\\uXXXX`` escape of a surrogate that
    is not part of a high + low pair (json.loads keeps it as is: a string no UTF-8 file can
    hold), or None."""
    if not _SURROGATE_HINT.search(text):
        return None
    escapes = [(m.start(), m.end(), int(m.group(1), 16)) for m in _ESCAPE.finditer(text) if m[1]]
    paired = False
    for i, (start, end, code) in enumerate(escapes):
        if paired:
            paired = False
            continue
        if 0xD800 <= code <= 0xDBFF and i + 1 < len(escapes):
            next_start, _, next_code = escapes[i + 1]
            if next_start == end and 0xDC00 <= next_code <= 0xDFFF:
                paired = True
                continue
        if 0xD800 <= code <= 0xDFFF:
            return start
    return None


def check_surrogates(text: str, path: str | Path, first_line: int = 1) -> None:
    """Raise JSONLinesError naming the file, line and column of a lone surrogate escape in the
    JSON text ``text`` (the text of ``path`` from line ``first_line`` on)."""
    at = lone_surrogate(text)
    if at is None:
        return
    line = first_line + text.count("\n", 0, at)
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    raise JSONLinesError(
        f"{path}:{line}: lone surrogate {text[at : at + 6]} at column {column} (half of a UTF-16 "
        "pair, not a character); fix or remove the escape"
    )


def decode_utf8(raw: bytes, path: str | Path, first_line: int = 1) -> str:
    """``raw`` (the bytes of ``path`` from line ``first_line`` on) as text.

    Raises JSONLinesError naming the file, the line and the column of the first byte that is not
    UTF-8.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise JSONLinesError(
            f"{path}:{line}: not UTF-8 text (byte 0x{bad} at column {column}); "
            "save the file as UTF-8"
        ) from None


def read_json_lines(path: str | Path, end: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line of ``path``, 1-based; with ``end``,
    only the lines in its first ``end`` bytes.

    Raises JSONLinesError for a line that is not UTF-8, not valid JSON or holds a lone surrogate
    escape (:func:`check_surrogates`), OSError when the file cannot be opened (a directory, no
    permission).
    """
    path = Path(path)
    with open(path, "rb") as f:
        pos = 0
        for line_no, raw in enumerate(f, 1):
            if end is not None:
                if pos >= end:
                    break
                raw = raw[: end - pos]  # a line that ``end`` cuts is read as cut
                pos += len(raw)
            text = decode_utf8(raw, path, line_no)
            if line_no == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
            if not text.strip():
                continue
            try:
                value = json.loads(text.rstrip("\r\n"))  # columns then stay on this line
            except json.JSONDecodeError as exc:
                raise JSONLinesError(
                    f"{path}:{line_no}: malformed JSON ({exc.msg} at column {exc.colno})"
                ) from None
            check_surrogates(text, path, line_no)
            yield line_no, value
