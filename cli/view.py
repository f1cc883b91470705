"""`amcs view`: one self-contained HTML page for a generate run or an eval folder."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import check_output, err, fail


def _default_out(path: Path, is_eval: bool) -> Path:
    if is_eval:
        return path / "view.html"
    name = path.name
    for suffix in (".meta.jsonl", ".jsonl"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".view.html")


def view_command(
    path: Path = typer.Argument(
        ..., help="A `generate` data file (or its .meta.jsonl) or an `eval --out` folder."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Where to write the page. [default: DATA.view.html beside a run, "
        "EVAL_DIR/view.html for an eval folder]",
    ),
    serve: bool = typer.Option(
        False,
        "--serve",
        help="Serve the page on 127.0.0.1 instead of writing it; a run's problems are read "
        "lazily from the meta file, so large runs open in seconds. Ctrl-C stops it.",
    ),
    port: int = typer.Option(0, help="Port for --serve. [default: any free port]"),
    limit: int = typer.Option(
        2000,
        help="Problems embedded in a written page (totals always count all); 0 for all. "
        "Larger runs: use --serve.",
    ),
) -> None:
    """Look at a run or an evaluation in a browser: a generate run's fingerprint, totals, a
    filterable problem table and each problem's search tree (MC values, rollouts, early exits,
    clusters, labels, the first error, and exact truth for arithmetic problems); an eval folder's
    accuracy vs tokens and each strategy's candidates with their PRM step scores.

    Writes one HTML file with no network access needed and prints its path.

    Examples:

      amcs view amcs-data.jsonl

      amcs view amcs-eval --out eval.html

      amcs view big-run.jsonl --serve --port 8765
    """
    from amcs.view.evaldir import is_eval_dir
    from amcs.view.page import write_eval_page, write_run_page
    from amcs.view.run import ViewError

    if limit < 0:
        fail("--limit must be >= 0 (0 embeds every problem)")
    if port < 0 or port > 65535:
        fail(f"--port must be between 0 and 65535, got {port}")
    if not path.exists():
        fail(f"{path}: no such file or directory")
    eval_file = path.name in ("records.jsonl", "results.json") and is_eval_dir(path.parent)
    if path.is_file() and eval_file:
        path = path.parent  # a file of an eval folder: show the folder
    is_eval = is_eval_dir(path)
    if path.is_dir() and not is_eval:
        fail(f"{path} is not an amcs eval folder: it has no records.jsonl or results.json")
    if serve:
        _serve(path, is_eval, port)
        return
    target = out or _default_out(path, is_eval)
    from amcs.outputs import EVAL_FILES

    if is_eval:
        check_output("--out", target, inputs=[path / name for name in EVAL_FILES])
    else:
        check_output("--out", target, runs=[path])
    if not target.parent.exists():
        fail(f"--out {target}: the folder {target.parent} does not exist")
    try:
        if is_eval:
            written, data = write_eval_page(path, target, limit or None)
            shown, total = len(data["problems"]), data["total_problems"]
        else:
            written, data = write_run_page(path, target, limit or None)
            shown, total = len(data["rows"]), data["total_problems"]
    except ViewError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")
    if shown < total:
        err.print(
            f"the page holds the first {shown:,} of {total:,} problems (--limit); "
            "use --serve to browse them all"
        )
    typer.echo(str(written))


def _serve(path: Path, is_eval: bool, port: int) -> None:
    from amcs.view.page import eval_page_data
    from amcs.view.run import RunIndex, ViewError
    from amcs.view.server import RunSource, serve_page

    title = f"amcs view: {path.name}"
    try:
        if is_eval:
            server = serve_page(eval_page_data(path, None), title, None, port)
        else:
            index = RunIndex(path)
            source = RunSource(index, str(path))
            server = serve_page({"kind": "run", "mode": "serve"}, title, source, port)
    except ViewError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}")
    host, bound = server.server_address[:2]
    typer.echo(f"serving {path} at http://{host}:{bound}/ (Ctrl-C stops)")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
