"""Shards of one run, written on several machines, combine into one data set for export and
training; overlapping shards are refused."""

import json

from typer.testing import CliRunner

from amcs.records import RecordWriter, shard_problems
from amcs.shards import ShardError, check_disjoint, expand_sources
from cli.main import app

runner = CliRunner()


def _path(steps):
    return {
        "completions": steps,
        "labels": [True] * (len(steps) - 1) + [False],
        "values": [1.0] * (len(steps) - 1) + [0.0],
        "rollouts": [6] * len(steps),
        "method": "amcs",
        "model": "tiny",
    }


class P:
    def __init__(self, i):
        self.id, self.question = f"p{i}", f"What is {i} + {i}?"


def _write_shards(folder, n_problems=12, count=3):
    problems = [P(i) for i in range(n_problems)]
    files = []
    for index in range(count):
        out = folder / f"part{index}.jsonl"
        with RecordWriter(out) as w:
            for p in shard_problems(problems, index, count):
                w.write_problem(p.id, p.question, "2", [_path([f"{p.id} step", "The answer"])])
        files.append(out)
    return problems, files


def test_shards_export_as_one_file_from_a_glob(tmp_path):
    problems, files = _write_shards(tmp_path)
    out = tmp_path / "all.jsonl"
    r = runner.invoke(app, ["export", str(tmp_path / "part*.jsonl"), "-f", "trl", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["prompt"] for row in rows) == sorted(p.question for p in problems)
    assert [row["completions"][0].split()[0] for row in rows] == [
        pid for f in files for pid in (json.loads(x)["problem_id"] for x in f.open())
    ]  # file by file, in the order the glob sorts them


def test_overlapping_shards_are_refused_naming_both_files(tmp_path):
    _, files = _write_shards(tmp_path)
    with RecordWriter(tmp_path / "again.jsonl") as w:  # p0 written a second time elsewhere
        w.write_problem("p0", "What is 0 + 0?", "0", [_path(["p0 step", "The answer"])])
    out = tmp_path / "all.jsonl"
    out.write_text("an older export\n")
    r = runner.invoke(
        app,
        ["export", *map(str, files), str(tmp_path / "again.jsonl"), "-f", "trl", "-o", str(out)],
    )
    assert r.exit_code == 2
    assert "problem 'p0' is in both" in r.output and "again.jsonl" in r.output
    assert out.read_text() == "an older export\n"  # untouched
    r = runner.invoke(
        app, ["train", "--data", str(tmp_path / "*.jsonl"), "--out", str(tmp_path / "prm")]
    )
    assert r.exit_code == 2 and "problem 'p0' is in both" in r.output
    assert not (tmp_path / "prm").exists()


def test_sources_expand_and_a_retried_problem_counts_once(tmp_path):
    _, files = _write_shards(tmp_path, n_problems=6, count=2)
    assert expand_sources([str(tmp_path / "part*.jsonl")]) == [str(f) for f in files]
    try:
        expand_sources([str(tmp_path / "nothing*.jsonl")])
        raise AssertionError("a glob matching nothing must be refused")
    except ShardError as exc:
        assert "no file matches" in str(exc)
    try:
        expand_sources([str(files[0]), str(files[0])])
        raise AssertionError("a file named twice must be refused")
    except ShardError as exc:
        assert "named twice" in str(exc)
    retried = tmp_path / "retried.jsonl"
    with RecordWriter(retried) as w:
        w.write_problem("x", "q", "1", [], status="failed", reason="RuntimeError: down")
    with RecordWriter(retried) as w:
        w.write_problem("x", "q", "1", [_path(["s", "t"])])
    check_disjoint([retried, *files])  # one file, one problem x: no overlap
