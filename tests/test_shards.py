"""Shards of one run, written on several machines, combine into one data set for export and
training, and so do runs over the same problems; overlapping shards of one run, and an id that
names two questions, are refused."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import amcs.records
from amcs.records import RecordWriter
from amcs.shards import (
    ShardError,
    check_combinable,
    expand_sources,
    parse_shard,
    shard_of,
    shard_problems,
)
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


def _write_shards(folder, n_problems=12, count=3, method="amcs", name="part"):
    """The files of one run sharded ``count`` ways (the fingerprint is what `amcs generate`
    stores: the same for every shard but for the shard itself)."""
    problems = [P(i) for i in range(n_problems)]
    files = []
    for index in range(count):
        out = folder / f"{name}{index}.jsonl"
        fingerprint = {"method": method, "seed": 0, "shard": f"{index}/{count}"}
        with RecordWriter(out, fingerprint=fingerprint) as w:
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
    # The same run sharded 2 ways as well: problem p0 is in part0.jsonl and in again0/1.
    _, again = _write_shards(tmp_path, count=2, name="again")
    owner = next(f for f in again if '"p0"' in f.read_text())
    out = tmp_path / "exports" / "all.jsonl"
    out.parent.mkdir()
    out.write_text("an older export\n")
    r = runner.invoke(app, ["export", *map(str, files), str(owner), "-f", "trl", "-o", str(out)])
    assert r.exit_code == 2
    first = next(f for f in files if '"p0"' in f.read_text())
    assert f"problem 'p0' is in both {first}:1 and {owner}:" in r.output
    assert "written by the same run: shards must not overlap" in r.output
    assert out.read_text() == "an older export\n"  # untouched
    r = runner.invoke(
        app, ["train", "--data", str(tmp_path / "*.jsonl"), "--out", str(tmp_path / "prm")]
    )
    assert r.exit_code == 2 and "is in both" in r.output and "by the same run" in r.output
    assert not (tmp_path / "prm").exists()


def test_runs_of_two_methods_combine_but_not_two_questions_under_one_id(tmp_path):
    _, amcs_files = _write_shards(tmp_path, count=2)
    _, other = _write_shards(tmp_path, count=1, method="shepherd", name="shepherd")
    check_combinable([*amcs_files, *other])  # the same problems, another method: one data set
    out = tmp_path / "all.jsonl"
    r = runner.invoke(
        app, ["export", *map(str, amcs_files), *map(str, other), "-f", "trl", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 24  # 12 problems, each from both runs
    renamed = tmp_path / "renamed.jsonl"
    with RecordWriter(renamed) as w:  # an older run: p3 was the 4th line of another problem file
        w.write_problem("p3", "What is 7 + 7?", "14", [_path(["7 + 7 = 14", "The answer"])])
    first = next(f for f in amcs_files if '"p3"' in f.read_text())
    line = 1 + [json.loads(x)["problem_id"] for x in first.open()].index("p3")
    try:
        check_combinable([*amcs_files, renamed])
        raise AssertionError("one id naming two questions must be refused")
    except ShardError as exc:
        assert str(exc) == (
            f"problem 'p3' names two questions: {first}:{line} and {renamed}:1 (ids from positions "
            "in a problem file, or problem files concatenated?); an id must name one question "
            "wherever runs are combined"
        )


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
    check_combinable([retried, *files])  # one file, one problem x: no overlap


def test_shards_partition_stably():
    problems = [SimpleNamespace(id=f"problem-{i}") for i in range(200)]
    shards = [shard_problems(problems, i, 4) for i in range(4)]
    ids = [[p.id for p in shard] for shard in shards]
    assert sorted(sum(ids, [])) == sorted(p.id for p in problems)
    assert all(len(shard) > 20 for shard in ids)  # and none is empty or nearly so
    assert ids == [[p.id for p in shard_problems(problems, i, 4)] for i in range(4)]
    order = [p.id for p in problems]
    assert all(shard == sorted(shard, key=order.index) for shard in ids)


def test_shard_is_independent_of_the_process():
    # Python's hash() of a str changes per process; the sha1-based shard must not.
    # Importing amcs.shards first (not through amcs.records) must work too: the two import each other.
    code = (
        "from types import SimpleNamespace as S; from amcs.shards import shard_problems;"
        "print([p.id for p in shard_problems([S(id=str(i)) for i in range(50)], 1, 3)])"
    )
    problems = [SimpleNamespace(id=str(i)) for i in range(50)]
    expected = str([p.id for p in shard_problems(problems, 1, 3)]) + "\n"
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        child = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env
        )
        assert child.stdout == expected, child.stderr


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ("4/4", "1/0", "-1/4", "1", "a/b", "1/2/3", ""):
        with pytest.raises(ValueError, match="bad shard"):
            parse_shard(bad)


def test_records_re_exports_the_shard_functions():
    # Code that imports them from amcs.records (as before sharding moved here) gets these ones.
    assert amcs.records.parse_shard is parse_shard
    assert amcs.records.shard_problems is shard_problems
    assert amcs.records.shard_of is shard_of
