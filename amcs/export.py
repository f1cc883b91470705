"""Exporters: a generate run's output in other PRM data formats.

trl: prompt/completions/labels. shepherd: Math-Shepherd's "ки"-tagged input and +/- label.
tree: one OpenR math-aps-tree line per ok problem with a tree, read from the meta file.
processbench: one ProcessBench line per labelled path (id, problem, steps, label = first "-" or
-1, final_answer_correct when known, generator = the run's model), by ``amcs.stepeval``'s rule:
all-"+" paths that stop before a final answer are prefixes, left out and counted; ``amcs eval
steps`` reads the file back.
hub: a folder for the Hugging Face Hub (``export_hub``): the rows as Parquet shards under
``data/`` and a ``README.md`` dataset card (``amcs.cards.dataset_card``) whose metadata names the
shards, so ``datasets.load_dataset(folder)`` and the Hub's viewer find them.

Nothing is trusted: data rows are read through ``amcs.prm_data``, the same loader and row checks
``amcs train`` applies (labels booleans or 0/1, completions strings, equal lengths; so any file
train reads exports too), and every bad row stops the export with an error naming its file and
line. The output is written to a temporary file beside ``out_path`` and renamed over it only when
complete, so a failed or interrupted export leaves the previous output byte for byte as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from amcs.outputs import check_output
from amcs.prm_data import SHEPHERD_TAG, iter_prm_rows
from amcs.records import meta_path_for, read_meta_numbered
from amcs.shards import check_combinable

log = logging.getLogger(__name__)
EXPORT_FORMATS = ("trl", "shepherd", "tree", "processbench", "hub")
# The columns of a hub export, in order: TRL's stepwise PRM format, then what amcs adds.
HUB_COLUMNS = (
    "prompt",
    "completions",
    "labels",
    "values",
    "rollouts",
    "problem_id",
    "answer",
    "method",
    "model",
)
HUB_SHARD_ROWS = 100_000
# The shard names export_hub writes: the only files of an earlier export's data/ it replaces.
HUB_SHARD_NAME = re.compile(r"^train-\d{5}-of-\d{5}\.parquet$")
HUB_DATA = "data"


class ExportError(ValueError):
    """An export that cannot be done; the message names the file (and line) or the option."""


def _dump(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def export_records(
    data_path: str | Path | Sequence[str | Path], fmt: str, out_path: str | Path
) -> int:
    """Write ``data_path`` (one file, or several: shards of a run, runs over the same problems;
    ``amcs.shards.check_combinable`` refuses an id with two questions and overlapping shards) in
    format ``fmt`` to ``out_path``; return the number of lines written. The formats are in the
    module docstring.

    Raises ExportError (or PRMDataError / RecordFormatError / ShardError for bad input, all
    ValueErrors) with one line naming the file; ``out_path`` is then as it was before.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(
            f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}"
        )
    paths = [Path(data_path)] if isinstance(data_path, str | Path) else [Path(p) for p in data_path]
    if not paths:
        raise ExportError("nothing to export: name at least one data file")
    out_path = Path(out_path)
    for path in paths:
        _check_inputs(path, meta_path_for(path), fmt)
    if fmt == "hub":
        from amcs.cards import CARD_FILE

        check_output(
            "--out",
            out_path,
            runs=paths,
            beside=[("dataset card", out_path / CARD_FILE)],
            folder=True,
        )
        check_combinable(paths)
        return export_hub(paths, out_path)
    check_output("--out", out_path, runs=paths)
    check_combinable(paths)
    if fmt == "tree":
        lines: Iterable[dict] = (
            line for path in paths for line in _tree_lines(meta_path_for(path))
        )
    elif fmt == "processbench":
        lines = (line for path in paths for line in _processbench_lines(path))
    else:
        convert = _trl_line if fmt == "trl" else _shepherd_line
        lines = (convert(row) for path in paths for _, row in iter_prm_rows(path))
    return write_jsonl_atomically(out_path, lines)


def _check_inputs(data_path: Path, meta_path: Path, fmt: str) -> None:
    for path in (data_path, meta_path) if fmt == "tree" else (data_path,):
        if path.is_dir():
            raise ExportError(f"{path}: is a directory, not a data file")
        if not path.exists():
            hint = " (a tree export reads the run's meta file)" if path == meta_path else ""
            raise ExportError(f"{path}: no such file{hint}")


def write_jsonl_atomically(out_path: str | Path, lines: Iterable[dict]) -> int:
    """Write ``lines`` as JSONL to ``out_path`` all or nothing; return how many were written.

    The lines go to a temporary file in the same directory, which is fsynced and renamed over
    ``out_path`` only after the last line; on any error (a bad input row, a full disk, Ctrl-C) the
    temporary file is removed and ``out_path`` keeps its old content. A symlink is followed, and a
    replaced file keeps its permissions.
    """
    out_path = Path(os.path.realpath(out_path))
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise ExportError(f"--out {out_path}: cannot write ({exc.strerror or exc})") from None
    try:
        count = 0
        with os.fdopen(fd, "wb") as f:
            for line in lines:
                f.write(_dump(line))
                count += 1
            f.flush()
            os.fsync(f.fileno())
        if out_path.exists():
            shutil.copymode(out_path, tmp)
        os.replace(tmp, out_path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ExportError(f"--out {out_path}: cannot write ({exc.strerror or exc})") from None
        raise
    _fsync_dir(out_path.parent)
    return count


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _trl_line(row: dict) -> dict:
    return {k: row[k] for k in ("prompt", "completions", "labels")}


def _processbench_lines(path: Path) -> Iterator[dict]:
    """ProcessBench lines of one data file (``amcs.stepeval.path_examples``); the count of
    prefixes left out goes to the log. A field that is not known (None) is left out."""
    from amcs.stepeval import path_examples

    rows = iter_prm_rows(path, keep=("problem_id", "answer", "model"))
    examples, prefixes = path_examples(rows)
    if prefixes:
        log.warning(
            "%s: left out %d all-'+' path(s) that stop before a final answer (prefixes, not "
            "full solutions)",
            path,
            prefixes,
        )
    for example in examples:
        yield {k: v for k, v in asdict(example).items() if v is not None}


def _shepherd_line(row: dict) -> dict:
    # Math-Shepherd: "<question> Step 1: <step> ки\nStep 2: <step> ки"; the label swaps each
    # tag for + or -. Steps are stripped so the tag is always one space after the text.
    steps = [f"Step {i}: {step.strip()}" for i, step in enumerate(row["completions"], 1)]
    tags = ["+" if label else "-" for label in row["labels"]]
    text = row["prompt"] + " "
    return {
        "input": text + "\n".join(f"{step} {SHEPHERD_TAG}" for step in steps),
        "label": text + "\n".join(f"{step} {tag}" for step, tag in zip(steps, tags, strict=True)),
        "task": "amcs",
    }


def _tree_lines(meta_path: Path) -> Iterator[dict]:
    """One OpenR line per problem that finished ok with a search tree, in the meta file's order.

    Records without a problem id (a run header) and failed attempts are skipped; a problem that
    failed and was retried ok has its ok record exported.
    """
    try:
        metas = read_meta_numbered(meta_path)
    except OSError as exc:
        raise ExportError(f"{meta_path}: cannot read ({exc.strerror or exc})") from None
    for line_no, meta in metas:
        if meta.get("status") == "ok" and meta.get("tree") and "problem_id" in meta:
            yield _tree_line(meta, f"{meta_path}:{line_no}")


def _tree_line(meta: dict, at: str) -> dict:
    where = f"{at}: problem {meta['problem_id']!r}"
    if not isinstance(meta.get("question"), str):
        raise ExportError(f"{where}: question missing or not a string")
    if not isinstance(meta["tree"], dict):
        raise ExportError(f"{where}: the search tree is not a JSON object")
    root = dict(meta["tree"], text=meta["question"])  # our root holds no step text
    return {
        "question": meta["question"],
        "final_answer": meta.get("answer"),
        "reasoning_steps": _openr_node(root, where),
        "question_id": meta["problem_id"],
    }


def _openr_node(node: object, where: str) -> dict:
    if not isinstance(node, dict) or not isinstance(node.get("text"), str):
        raise ExportError(f"{where}: a search tree node is not an object with a text")
    mc, children = node.get("mc"), node.get("children", [])
    # An MC value is a fraction of rollouts: NaN, infinities and numbers outside [0, 1] are
    # refused (json parses NaN and Infinity), never exported as values a trainer would believe.
    if mc is not None and (
        isinstance(mc, bool) or not isinstance(mc, int | float) or not 0 <= mc <= 1
    ):
        raise ExportError(
            f"{where}: a search tree node's mc is {json.dumps(mc)[:40]}, not an MC value in "
            "[0, 1] or null"
        )
    if not isinstance(children, list):
        raise ExportError(f"{where}: a search tree node's children are not a list")
    return {
        "text": node["text"],
        "mc_value": mc,
        "children": [_openr_node(child, where) for child in children],
    }


def _hub_schema():
    import pyarrow as pa

    text, strings = pa.string(), pa.list_(pa.string())
    return pa.schema(
        [
            ("prompt", text),
            ("completions", strings),
            ("labels", pa.list_(pa.bool_())),
            ("values", pa.list_(pa.float64())),
            ("rollouts", pa.list_(pa.int64())),
            ("problem_id", text),
            ("answer", text),
            ("method", text),
            ("model", text),
        ]
    )


def _hub_row(row: dict) -> dict:
    """A data row with every hub column (None where the row has none); the answer as text, as
    a Parquet column holds one type."""
    out = {column: row.get(column) for column in HUB_COLUMNS}
    for key in ("answer", "problem_id", "method", "model"):
        if out[key] is not None and not isinstance(out[key], str):
            out[key] = json.dumps(out[key], ensure_ascii=False)
    return out


def export_hub(paths: Sequence[Path], out_dir: str | Path, shard_rows: int = HUB_SHARD_ROWS) -> int:
    """Write the rows of ``paths`` to ``out_dir``/data/train-XXXXX-of-YYYYY.parquet (at most
    ``shard_rows`` rows each, columns :data:`HUB_COLUMNS`) and the dataset card ``README.md``;
    return the number of rows.

    Everything is written to a folder beside ``out_dir`` first; only when it is complete does
    it replace ``out_dir``'s ``data/`` and ``README.md`` (other files there, e.g. a clone's
    ``.git``, stay), so a failed export leaves ``out_dir`` as it was."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from amcs.cards import CARD_FILE, DataCounts, dataset_card, run_summary

    out_dir = Path(os.path.realpath(out_dir))
    _check_hub_folder(out_dir)
    schema = _hub_schema()
    counts = DataCounts()
    keep = tuple(c for c in HUB_COLUMNS if c not in ("prompt", "completions", "labels"))
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = out_dir.with_name(f".{out_dir.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        staging.mkdir()
    except OSError as exc:
        raise ExportError(f"--out {out_dir}: cannot write ({exc.strerror or exc})") from None
    try:
        (staging / HUB_DATA).mkdir()
        shards: list[Path] = []
        batch: list[dict] = []

        def flush() -> None:
            shard = staging / HUB_DATA / f"part-{len(shards):05d}.parquet"
            pq.write_table(pa.Table.from_pylist(batch, schema=schema), shard)
            shards.append(shard)
            batch.clear()

        for path in paths:
            for _, row in iter_prm_rows(path, keep=keep):
                counts.add(row)
                batch.append(_hub_row(row))
                if len(batch) >= shard_rows:
                    flush()
        if batch or not shards:
            flush()
        names = []
        for i, shard in enumerate(shards):
            name = f"train-{i:05d}-of-{len(shards):05d}.parquet"
            shard.rename(shard.with_name(name))
            names.append(f"{HUB_DATA}/{name}")
        card = dataset_card(counts, run_summary(paths), names, HUB_COLUMNS, paths)
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        _move_hub_export(staging, out_dir)
    except OSError as exc:
        raise ExportError(f"--out {out_dir}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts.paths


def _check_hub_folder(out_dir: Path) -> None:
    """Refuse an existing ``out_dir`` whose ``data/`` or ``README.md`` amcs did not write: an
    export replaces both, so anything else there (a run's files, a project's README) would be
    lost. A ``data/`` of earlier shards (:data:`HUB_SHARD_NAME`) and a card of ours may go."""
    from amcs.cards import CARD_FILE, HUB_CARD_MARK

    data, card = out_dir / HUB_DATA, out_dir / CARD_FILE
    if data.is_symlink() or (data.exists() and not data.is_dir()):
        raise ExportError(
            f"--out {out_dir}: {data} is not a folder of an earlier hub export; choose another "
            "--out (an export replaces data/)"
        )
    if data.is_dir():
        others = sorted(p.name for p in data.iterdir() if not HUB_SHARD_NAME.match(p.name))
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if others[3:] else "")
            raise ExportError(
                f"--out {out_dir}: {data} holds files an export did not write ({shown}) and "
                "would lose them; choose another --out"
            )
    if card.is_symlink() or card.exists():
        try:
            ours = card.is_file() and HUB_CARD_MARK in card.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise ExportError(
                f"--out {out_dir}: {card} is not a dataset card amcs wrote and an export would "
                "replace it; choose another --out"
            )


def _move_hub_export(staging: Path, out_dir: Path) -> None:
    """Put a complete hub export in place: a new ``out_dir`` is one rename; in an existing one
    the old ``data/`` is moved aside before the new one takes its name (no shard of an earlier
    export stays beside the new ones), and the card replaces the old card last."""
    from amcs.cards import CARD_FILE

    if not out_dir.exists():
        os.rename(staging, out_dir)
        staging.mkdir()  # the caller removes it
        return
    old = out_dir / HUB_DATA
    aside = staging / "old-data"
    if old.is_dir():  # _check_hub_folder: only earlier shards, never a link or a file
        os.rename(old, aside)
    try:
        os.rename(staging / HUB_DATA, old)
    except OSError:
        if aside.exists():
            os.rename(aside, old)  # the earlier export stays whole
        raise
    os.replace(staging / CARD_FILE, out_dir / CARD_FILE)
    _fsync_dir(out_dir)
