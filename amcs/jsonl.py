"""Reading JSON Lines input so that every failure names the file and the line.

A text-mode ``open()`` raises ``UnicodeDecodeError`` from inside the loop with neither the file nor
the line in its message, and ``json.loads`` knows only the column. ``read_json_lines`` reads bytes,
decodes and parses one line at a time, and turns each failure into a ``JSONLinesError`` whose
message starts with ``FILE:LINE:``. Blank lines are skipped (they carry no record); line numbers
count them, so they match what an editor shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JSONLinesError(ValueError):
    """A line that is not UTF-8 or not JSON; the message starts with ``FILE:LINE:``."""


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

    Raises JSONLinesError for a line that is not UTF-8 or not valid JSON, OSError when the file
    cannot be opened (a directory, no permission).
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
            yield line_no, value
