"""Every command reads every other command's output: runs over two problem files without id
fields (ids are the questions' hashes) train, export and evaluate together; one id naming two
questions is refused wherever runs are combined; a run written with positional ids is not resumed
under new ones."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amcs.problems import question_id
from amcs.records import RecordWriter, meta_path_for, read_meta
from amcs.training.trainer import split_features
from cli.main import app

runner = CliRunner()
SMALL = ["-q", "--set=max_new_tokens=120", "--set=rollout_budget=30", "--set=max_search_count=2"]
# The tiny policy solves these arithmetic questions (and errs on the first): the runs have paths.
FIRST = ("What is 19 * 18 - 5 * 12?", "282")
SHARED = ("What is 14 + (13 + 19 + 15 - 5 + 12)?", "68")
LAST = ("What is 1 + 3 - 6 - 19 * 2 * 10?", "-382")


def write_problems(path, problems, ids=None):
    records = [{"question": q, "answer": a} for q, a in problems]
    if ids:
        records = [{"id": i, **r} for i, r in zip(ids, records, strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """`amcs generate` on two problem files without id fields that share one question (the
    second run with another seed, as two experiments would be)."""
    folder = tmp_path_factory.mktemp("runs")
    a = write_problems(folder / "a.jsonl", [FIRST, SHARED])
    b = write_problems(folder / "b.jsonl", [SHARED, LAST])
    runs = []
    for problems, seed in ((a, "0"), (b, "1")):
        out = folder / f"{problems.stem}-run.jsonl"
        r = runner.invoke(
            app,
            ["generate", "--problems", str(problems), "--out", str(out), "--seed", seed, *SMALL],
        )
        assert r.exit_code == 0, r.output
        runs.append(out)
    return a, runs[0], runs[1]


def test_runs_over_two_problem_files_train_together(two_runs, tmp_path):
    _, a_run, b_run = two_runs
    a_lines, b_lines = lines(a_run), lines(b_run)
    shared = question_id(SHARED[0])
    assert {x["problem_id"] for x in a_lines} <= {question_id(FIRST[0]), shared}
    assert {x["problem_id"] for x in b_lines} <= {shared, question_id(LAST[0])}
    # The shared question has one id in both runs, and paths in both: what used to be refused.
    assert shared in {x["problem_id"] for x in a_lines} & {x["problem_id"] for x in b_lines}
    out = tmp_path / "prm"
    r = runner.invoke(
        app,
        ["train", "--data", str(a_run), "--data", str(b_run), "--out", str(out),
         "--set", "max_steps=1", "--batch-size", "4"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"training on {len(a_lines) + len(b_lines)} labelled paths" in r.output
    prm = json.loads((out / "amcs_prm.json").read_text())
    assert (prm["separator"], prm["labels"]) == ("\n\n", "hard")  # as both runs record


def test_one_id_naming_two_questions_is_refused_naming_both_files(two_runs, tmp_path):
    """Runs over two problem files numbered by position: p0 is a different question in each."""
    _, a_run, b_run = two_runs
    old = []
    for run in (a_run, b_run):
        first = lines(run)[0]["problem_id"]
        renamed = tmp_path / run.name
        renamed.write_text(
            "".join(
                json.dumps(x | {"problem_id": "p0"}) + "\n"
                for x in lines(run)
                if x["problem_id"] == first
            )
        )
        old.append(renamed)
    message = (
        f"error: problem 'p0' names two questions: {old[0]}:1 and {old[1]}:1 (ids from "
        "positions in a problem file, or problem files concatenated?); an id must name one "
        "question wherever runs are combined\n"
    )
    r = runner.invoke(
        app, ["train", "--data", str(old[0]), "--data", str(old[1]), "--out", str(tmp_path / "prm")]
    )
    assert (r.exit_code, r.stderr) == (2, message)
    assert not (tmp_path / "prm").exists()
    out = tmp_path / "export.jsonl"
    out.write_text("an older export\n")
    r = runner.invoke(
        app, ["export", str(old[0]), str(old[1]), "-f", "processbench", "-o", str(out)]
    )
    assert (r.exit_code, r.stderr) == (2, message)
    assert out.read_text() == "an older export\n"
    # One file made by concatenating the two: filter refuses it before any judge loads.
    both = tmp_path / "both.jsonl"
    both.write_text(old[0].read_text() + old[1].read_text())
    second = len(old[0].read_text().splitlines()) + 1
    r = runner.invoke(
        app, ["filter", str(both), "--judge", "arith-oracle", "--out", str(tmp_path / "f.jsonl")]
    )
    assert r.exit_code == 2
    assert r.stderr.startswith(
        f"error: problem 'p0' names two questions: {both}:1 and {both}:{second} "
    )


def test_eval_steps_reads_a_run_and_its_processbench_export_alike(two_runs, tmp_path):
    _, a_run, b_run = two_runs
    exported = tmp_path / "pb.jsonl"
    r = runner.invoke(
        app, ["export", str(a_run), str(b_run), "-f", "processbench", "-o", str(exported)]
    )
    assert r.exit_code == 0, r.output
    pb = lines(exported)
    paths = lines(a_run) + lines(b_run)
    assert pb and len(pb) <= len(paths)
    for x in pb:  # every exported label is the first "-" of its path in the run
        pid, k = x["id"].rsplit("-", 1)
        path = [p for p in paths if p["problem_id"] == pid][int(k)]
        assert x["steps"] == path["completions"] and x["problem"] == path["prompt"]
        assert x["label"] == next((i for i, ok in enumerate(path["labels"]) if not ok), -1)
        assert x["generator"] == path["model"]
    # The round trip: eval steps on a run and on its export score the same examples alike.
    alone = tmp_path / "a-pb.jsonl"
    assert (
        runner.invoke(app, ["export", str(a_run), "-f", "processbench", "-o", str(alone)]).exit_code
        == 0
    )
    reports = []
    for data in (a_run, alone):
        report = tmp_path / f"{data.stem}-f1.json"
        r = runner.invoke(
            app,
            ["eval", "steps", "--data", str(data), "--prm", "arith-oracle", "--out", str(report)],
        )
        assert r.exit_code == 0, r.output
        reports.append(json.loads(report.read_text()))
    from_run, from_export = reports
    assert from_run["reference"] == "reference = the run's Monte Carlo labels, not human labels"
    assert "reference" not in from_export  # read as a ProcessBench file
    keys = ("n", "n_erroneous", "n_correct", "a1_erroneous", "a2_correct", "f1")
    assert from_run["n"] == len(lines(alone)) > 0
    assert {k: from_run[k] for k in keys} == {k: from_export[k] for k in keys}


def test_resume_of_a_run_with_positional_ids_is_refused_with_a_way_on(two_runs, tmp_path):
    """An older amcs named problems without ids p0, p1, ...: its run's files, resumed now, would
    have every problem searched again under its hashed id."""
    a, a_run, _ = two_runs
    problems = Path(shutil.copy(a, tmp_path / "a.jsonl"))
    out = tmp_path / "old.jsonl"
    position = {question_id(FIRST[0]): "p0", question_id(SHARED[0]): "p1"}
    header, *metas = lines(meta_path_for(a_run))
    fingerprint = header["fingerprint"] | {"problems": str(problems.resolve())}
    with RecordWriter(out, fingerprint=fingerprint) as w:  # the same run, as it was written then
        for m in metas:
            paths = [x for x in lines(a_run) if x["problem_id"] == m["problem_id"]]
            w.write_problem(
                position[m["problem_id"]], m["question"], m["answer"], paths, m["status"],
                stats=m["stats"], tree=m["tree"],
            )  # fmt: skip
    before = out.read_bytes(), meta_path_for(out).read_bytes()
    args = ["generate", "--problems", str(problems), "--out", str(out), *SMALL]
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert r.stderr.startswith(
        f"error: {meta_path_for(out)} has this run's problem {question_id(FIRST[0])!r} as 'p0': "
    )
    assert "named by position (p0, p1, ...)" in r.stderr and "--no-resume --overwrite" in r.stderr
    assert r.stderr.count("\n") == 1
    assert (out.read_bytes(), meta_path_for(out).read_bytes()) == before
    # The way on: the problem file names each problem as the old run did.
    write_problems(problems, [FIRST, SHARED], ids=["p0", "p1"])
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "all 2 problems are already done" in r.output
    assert [m["problem_id"] for m in read_meta(meta_path_for(out))] == ["p0", "p1"]


def test_the_train_eval_split_keeps_each_problem_on_one_side():
    # Two runs over the same 10 problems (2 rows per problem and run, 40 rows): the held-out
    # side is whole problems, 4 rows for eval_fraction 0.1.
    features = [
        {"problem": f"question {i}", "run": run}
        for run in "ab"
        for i in range(10)
        for _ in range(2)
    ]
    for seed in range(5):
        train, held = split_features(features, 0.1, seed)
        assert len(held) == 4 and len(train) == 36
        held_problems = {f["problem"] for f in held}
        assert len(held_problems) == 1 and not held_problems & {f["problem"] for f in train}
    single = [{"problem": "only one"}] * 3  # never every problem: nothing to hold out
    assert split_features(single, 0.5, 0) == (single, [])
    assert [len(side) for side in split_features([{}, {}, {}, {}], 0.5, 0)] == [2, 2]
