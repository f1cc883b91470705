"""The viewer's HTML: one self-contained page (inline CSS and JS from this package, data as an
inline JSON block), for a run or an eval folder, static or backed by `--serve`."""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path

from amcs.view.evaldir import load_eval
from amcs.view.run import ROW_COLUMNS, RunIndex, Totals, problem_detail, problem_row

DEFAULT_LIMIT = 2000  # problems embedded in a static page; larger runs want --serve


def _asset(name: str) -> str:
    return files("amcs.view").joinpath("assets", name).read_text(encoding="utf-8")


# Characters the HTML parser acts on inside a <script> element, as JSON escapes. Escaping "</"
# alone is not enough: "<!--" followed by "<script" puts the parser in its "double-escaped" state,
# where the block's own "</script>" no longer ends it and the page never leaves "loading…". With
# no "<" at all the data cannot change the parser's state; ">" and "&" go too so the block is
# inert in any context, and U+2028 / U+2029 because older JavaScript parsers end a line there.
# The characters only ever occur inside JSON strings, where "\u003c" means "<" to JSON.parse.
_SCRIPT_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _json_block(data: dict) -> str:
    """``data`` as JSON that is safe between ``<script type="application/json">`` tags."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False).translate(_SCRIPT_SAFE)


def render(data: dict, title: str) -> str:
    """The page for `data` ({"kind": "run" | "eval", "mode": "static" | "serve", ...})."""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_asset('view.css')}</style></head>"
        "<body><div id=app><p class=muted id=loading>loading…</p></div>"
        f'<script type="application/json" id=amcs-data>{_json_block(data)}</script>'
        f"<script>{_asset('view.js')}</script></body></html>\n"
    )


def run_info(index: RunIndex, source: str) -> dict:
    return {
        "kind": "run",
        "source": source,
        "fingerprint": index.fingerprint(),
        "columns": list(ROW_COLUMNS),
        "total_problems": len(index),
        "meta_lines": index.meta_lines,
    }


def run_page_data(index: RunIndex, source: str, limit: int | None = DEFAULT_LIMIT) -> dict:
    """A static run page's data: totals over every problem; rows and details of the first
    `limit` problems (None: all)."""
    totals = Totals()
    rows, details = [], {}
    for i, record in enumerate(index.records()):
        totals.add(record)
        if limit is None or i < limit:
            rows.append(problem_row(i, record))
            details[str(i)] = problem_detail(record, index.paths(i, record))
    return run_info(index, source) | {
        "mode": "static",
        "totals": totals.to_dict(),
        "rows": rows,
        "details": details,
    }


def write_run_page(
    path: str | Path, out: str | Path, limit: int | None = DEFAULT_LIMIT
) -> tuple[Path, dict]:
    with RunIndex(path) as index:
        data = run_page_data(index, str(path), limit)
    out = Path(out)
    out.write_text(render(data, f"amcs view: {Path(path).name}"), encoding="utf-8")
    return out, data


def eval_page_data(path: str | Path, limit: int | None = DEFAULT_LIMIT) -> dict:
    return {"kind": "eval", "mode": "static", "source": str(path)} | load_eval(path, limit)


def write_eval_page(
    path: str | Path, out: str | Path, limit: int | None = DEFAULT_LIMIT
) -> tuple[Path, dict]:
    data = eval_page_data(path, limit)
    out = Path(out)
    out.write_text(render(data, f"amcs view: {Path(path).name}"), encoding="utf-8")
    return out, data
