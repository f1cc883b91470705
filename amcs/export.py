"""Exporters: a generate run's output in other PRM data formats.

trl: prompt/completions/labels. shepherd: Math-Shepherd's "ки"-tagged input and +/- label.
tree: one OpenR math-aps-tree line per ok problem with a tree, read from the meta file.
"""

from __future__ import annotations

import json
from pathlib import Path

from amcs.records import meta_path_for, read_data, read_meta

EXPORT_FORMATS = ("trl", "shepherd", "tree")
SHEPHERD_TAG = "ки"


def _dump(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def export_records(data_path: str | Path, fmt: str, out_path: str | Path) -> int:
    """Write ``data_path`` in format ``fmt`` to ``out_path``; return the number of lines written.

    trl: prompt/completions/labels. shepherd: Math-Shepherd's "ки"-tagged input and +/- label.
    tree: one OpenR math-aps-tree line per ok problem with a tree, read from the meta file.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(
            f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}"
        )
    data_path, out_path = Path(data_path), Path(out_path)
    if out_path.resolve() in (data_path.resolve(), meta_path_for(data_path).resolve()):
        raise ValueError(f"export would overwrite its own input {out_path}")
    if fmt == "tree":
        metas = read_meta(meta_path_for(data_path))
        lines = (_tree_line(m) for m in metas if m["status"] == "ok" and m.get("tree"))
    else:
        convert = _trl_line if fmt == "trl" else _shepherd_line
        lines = (convert(r) for r in read_data(data_path))
    count = 0
    with open(out_path, "wb") as out:
        for line in lines:
            out.write(_dump(line))
            count += 1
    return count


def _trl_line(record: dict) -> dict:
    return {k: record[k] for k in ("prompt", "completions", "labels")}


def _shepherd_line(record: dict) -> dict:
    # Math-Shepherd: "<question> Step 1: <step> ки\nStep 2: <step> ки"; the label swaps each
    # tag for + or -. Steps are stripped so the tag is always one space after the text.
    steps = [f"Step {i}: {step.strip()}" for i, step in enumerate(record["completions"], 1)]
    tags = ["+" if label else "-" for label in record["labels"]]
    text = record["prompt"] + " "
    return {
        "input": text + "\n".join(f"{step} {SHEPHERD_TAG}" for step in steps),
        "label": text + "\n".join(f"{step} {tag}" for step, tag in zip(steps, tags, strict=True)),
        "task": "amcs",
    }


def _tree_line(meta: dict) -> dict:
    root = dict(meta["tree"], text=meta["question"])  # our root holds no step text
    return {
        "question": meta["question"],
        "final_answer": meta["answer"],
        "reasoning_steps": _openr_node(root),
        "question_id": meta["problem_id"],
    }


def _openr_node(node: dict) -> dict:
    return {
        "text": node["text"],
        "mc_value": node.get("mc"),
        "children": [_openr_node(child) for child in node.get("children", [])],
    }
