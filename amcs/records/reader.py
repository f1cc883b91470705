"""Reading the files of ``amcs generate``: the committed meta records, the run header, the data
lines (each checked), and where the committed part of a data file ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from amcs.jsonl import JSONLinesError, check_surrogates, read_json_lines
from amcs.records.format import (
    META_VERSION,
    RecordFormatError,
    check_meta,
    data_row_problem,
    is_header,
    meta_path_for,
)


def scan_meta(path: Path, with_header: bool = False):
    """The committed meta records and the byte offset where they end (and, with
    ``with_header``, the header first: (header or None, records, end)).

    A last line without a newline or with broken JSON was torn by a crash: it is not counted.
    Any other bad line is a RecordFormatError. A problem id may appear again only after a failed
    record of it (a retry).
    """
    header: dict | None = None
    records: list[dict] = []
    pos = 0
    if path.exists():
        raw = path.read_bytes()
        last_status: dict[str, str] = {}
        line_no = 0
        while pos < len(raw):
            line_no += 1
            newline = raw.find(b"\n", pos)
            if newline == -1:
                break
            is_last = newline == len(raw) - 1
            try:
                record = json.loads(raw[pos:newline])
                if b"\\u" in raw[pos:newline]:  # a hand-edited line: "\ud800" is no text
                    check_surrogates(raw[pos:newline].decode(), path, line_no)
            except JSONLinesError as e:
                raise RecordFormatError(str(e)) from None
            except ValueError as e:
                if is_last:
                    break
                raise RecordFormatError(f"{path}:{line_no}: invalid JSON ({e})") from None
            if line_no == 1 and is_header(record):
                if record.get("version") != META_VERSION:
                    raise RecordFormatError(
                        f"{path}:1: meta format version {record.get('version')!r}; this amcs "
                        f"reads version {META_VERSION}"
                    )
                header = record
                pos = newline + 1
                continue
            problem = check_meta(record)
            if problem is None and last_status.get(record["problem_id"], "failed") != "failed":
                problem = f"problem {record['problem_id']!r} appears twice"
            if problem is None and records and record["data_end"] < records[-1]["data_end"]:
                problem = "data_end is smaller than on the line before"
            if problem is not None:
                raise RecordFormatError(f"{path}:{line_no}: {problem}")
            records.append(record)
            last_status[record["problem_id"]] = record["status"]
            pos = newline + 1
    if with_header:
        return header, records, pos
    return records, pos


def read_meta(path: str | Path) -> list[dict]:
    """The committed problem records of a meta file, header left out (a line torn by a crash is
    left out too). A retried problem appears once per attempt; the last record wins."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return scan_meta(path)[0]


def read_meta_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for each committed problem record of a meta file, as ``read_meta``
    reads them: for messages that point at the line. Every line before the committed end is the
    header (line 1) or a record, so numbering follows from the header's presence."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    header, records, _ = scan_meta(path, with_header=True)
    first = 2 if header is not None else 1
    return list(enumerate(records, first))


def read_run_header(path: str | Path) -> dict | None:
    """The header of a meta file (``format``, ``version``, ``fingerprint``), or None."""
    return scan_meta(Path(path), with_header=True)[0]


def recorded_search(data_path: str | Path) -> dict | None:
    """The search settings (``SearchConfig.to_dict()``: separator, step rules, ...) that the run
    which wrote ``data_path`` recorded in its meta file's header; None when there is no meta file
    or its header has none. Reads the first line only (meta lines carry whole search trees)."""
    meta = meta_path_for(data_path)
    if not meta.is_file():
        return None
    with meta.open("rb") as f:
        line = f.readline()
    try:
        header = json.loads(line)
    except ValueError as e:
        if not line.endswith(b"\n"):  # torn by a crash before the first commit finished
            return None
        raise RecordFormatError(f"{meta}:1: invalid JSON ({e})") from None
    if not is_header(header) or not isinstance(header.get("fingerprint"), dict):
        return None
    search = header["fingerprint"].get("search")
    return search if isinstance(search, dict) else None


def committed_end(data_path: str | Path) -> int | None:
    """Where the committed part of a data file ends: the last ``data_end`` of its meta file, or
    None when it has no meta file (read it all). What lies after it belongs to a problem not
    finished (a run in progress, or killed mid-problem; resume cuts it), possibly a torn line.
    A data file shorter than its meta file says is a RecordFormatError."""
    data_path = Path(data_path)
    meta = meta_path_for(data_path)
    if not meta.is_file():
        return None
    records = read_meta(meta)
    end = records[-1]["data_end"] if records else 0  # non-decreasing: scan_meta checks
    size = data_path.stat().st_size
    if size < end:
        raise RecordFormatError(
            f"{data_path} has {size} bytes but {meta} says {end} were written: the two files do "
            "not belong together"
        )
    return end


def read_data(path: str | Path) -> Iterator[dict]:
    """The lines of a data file, each checked with ``data_row_problem``; a line that is not
    UTF-8, not JSON or not such a record (NaN values included) is a RecordFormatError naming
    file and line."""
    path = Path(path)
    try:
        for line_no, record in read_json_lines(path):
            problem = data_row_problem(record)
            if problem is not None:
                raise RecordFormatError(f"{path}:{line_no}: {problem}")
            yield record
    except JSONLinesError as exc:
        raise RecordFormatError(str(exc)) from None
