"""The consensus filter: MC labels vs a judge (the exact arithmetic oracle, the bundled tiny PRM)."""

import asyncio
import json
import subprocess
import sys

import pytest

from amcs.domains.arith import generate_problems
from amcs.filter import (
    AGREE,
    JUDGE_EARLIER,
    JUDGE_LATER,
    JUDGE_NONE,
    MC_NONE,
    FilterError,
    filter_file,
    judge_first_error,
    mc_first_error,
    partial_paths,
    verdict,
)
from amcs.verification import ArithOracleScorer

# 3 + 4 * (5 - 2) - 7 = 8, written the way the arith domain asks.
QUESTION = "What is 3 + 4 * (5 - 2) - 7?"
RIGHT = ["5 - 2 = 3", "4 * 3 = 12", "3 + 12 = 15", "15 - 7 = 8", "The answer is \\boxed{8}."]
WRONG2 = ["5 - 2 = 3", "4 * 3 = 12", "3 + 12 = 16"]


def row(steps, labels, **extra):
    return {"prompt": QUESTION, "completions": steps, "labels": labels} | extra


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_first_errors_and_verdicts():
    assert mc_first_error([True, True, False]) == 2
    assert mc_first_error([True, True]) == -1
    assert judge_first_error([0.9, 0.4, 0.1], 0.5) == 1
    assert judge_first_error([0.9, 0.6], 0.5) == -1
    assert verdict(2, 2) == verdict(-1, -1) == AGREE
    assert verdict(2, 1) == JUDGE_EARLIER
    assert verdict(1, 2) == JUDGE_LATER
    assert verdict(2, -1) == JUDGE_NONE
    assert verdict(-1, 0) == MC_NONE


CASES = [
    (row(RIGHT, [True] * 5), AGREE),  # all correct, labelled so
    (row(WRONG2, [True, True, False]), AGREE),  # the error found at the right step
    (row(WRONG2[:2], [True, False]), JUDGE_NONE),  # a false "-" on a valid step
    (row(WRONG2, [True, True, True]), MC_NONE),  # MC missed the error
    (row(["5 - 2 = 4", "4 * 4 = 16"], [True, False]), JUDGE_EARLIER),
]


def test_oracle_judge_keeps_exactly_the_agreeing_paths(tmp_path):
    data, out = tmp_path / "data.jsonl", tmp_path / "kept.jsonl"
    write(data, [r for r, _ in CASES])
    stats = asyncio.run(filter_file(data, out, ArithOracleScorer(), judge_name="arith-oracle"))
    kept = read(out)
    assert kept == [r for r, why in CASES if why == AGREE]
    assert (stats.paths, stats.kept, stats.dropped) == (5, 2, 3)
    assert stats.reasons == {AGREE: 2, JUDGE_NONE: 1, MC_NONE: 1, JUDGE_EARLIER: 1}
    summary = json.loads((tmp_path / "kept.jsonl.summary.json").read_text())
    assert summary["kept"] == 2 and summary["kept_fraction"] == pytest.approx(0.4)
    assert not any(p.exists() for p in partial_paths(out))  # nothing left behind


def test_mark_mode_writes_every_path_with_the_verdict(tmp_path):
    data, out = tmp_path / "data.jsonl", tmp_path / "marked.jsonl"
    write(data, [r for r, _ in CASES])
    asyncio.run(filter_file(data, out, ArithOracleScorer(), judge_name="o", mode="mark"))
    marked = read(out)
    assert [m["consensus"] for m in marked] == [why == AGREE for _, why in CASES]
    assert [m["mc_first_error"] for m in marked] == [-1, 2, 1, -1, 1]
    assert [m["judge_first_error"] for m in marked] == [-1, 2, -1, 2, 0]


class CountingOracle(ArithOracleScorer):
    """The oracle, failing after `fail_after` scores (an interrupted run)."""

    def __init__(self, fail_after=None):
        super().__init__()
        self.fail_after = fail_after

    async def score(self, question, steps):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        return await super().score(question, steps)


def arith_rows(n):
    """Real arithmetic problems: the reference solution, half of them with a planted error."""
    rows = []
    for i, p in enumerate(generate_problems(n, seed=4)):
        steps = list(p.solution_steps)
        labels = [True] * len(steps)
        if i % 2:
            lhs, rhs = steps[0].rsplit(" = ", 1)
            steps, labels = [f"{lhs} = {int(rhs) + 1}"], [False]
        rows.append({"prompt": p.question, "completions": steps, "labels": labels, "id": i})
    return rows


def test_an_interrupted_run_resumes_without_judging_twice(tmp_path):
    data, out = tmp_path / "data.jsonl", tmp_path / "kept.jsonl"
    rows = arith_rows(20)
    write(data, rows)
    judge = CountingOracle(fail_after=12)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(filter_file(data, out, judge, judge_name="o", batch=5))
    assert not out.exists()  # only complete outputs appear
    partial, progress = partial_paths(out)
    assert json.loads(progress.read_text())["lines"] == 10  # two batches of 5 committed
    judge = CountingOracle()
    stats = asyncio.run(filter_file(data, out, judge, judge_name="o", batch=5))
    assert judge.calls == 10 and stats.resumed_from == 10
    assert [r["id"] for r in read(out)] == list(range(20))  # all agree, once each, in order
    assert stats.paths == 20 and stats.kept == 20
    # Another judge name is another run: it starts over.
    write(data, rows)
    judge = CountingOracle()
    asyncio.run(filter_file(data, out.with_name("other.jsonl"), judge, judge_name="x", batch=5))
    assert judge.calls == 20


def test_output_is_never_the_input(tmp_path):
    data = tmp_path / "data.jsonl"
    write(data, [CASES[0][0]])
    with pytest.raises(FilterError, match="input"):
        asyncio.run(filter_file(data, data, ArithOracleScorer(), judge_name="o"))
    with pytest.raises(FilterError, match="directory"):
        asyncio.run(filter_file(data, tmp_path, ArithOracleScorer(), judge_name="o"))
    assert read(data) == [CASES[0][0]]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(FilterError, match="bad.jsonl:1"):
        asyncio.run(
            filter_file(
                tmp_path / "bad.jsonl", tmp_path / "o.jsonl", ArithOracleScorer(), judge_name="o"
            )
        )


def amcs(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_cli_with_the_tiny_prm_and_the_oracle(tmp_path):
    data = tmp_path / "data.jsonl"
    write(data, arith_rows(8))
    proc = amcs("filter", str(data), "--judge", "arith-oracle", "--out", "k.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "kept 8 of 8 paths" in proc.stderr
    assert len(read(tmp_path / "k.jsonl")) == 8
    # The bundled tiny PRM as the judge: it runs and reports; what it keeps is its own opinion.
    proc = amcs("filter", str(data), "--out", "p.jsonl", "--mode", "mark", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    marked = read(tmp_path / "p.jsonl")
    assert len(marked) == 8 and all("judge_first_error" in m for m in marked)
    kept = sum(m["consensus"] for m in marked)
    assert f"kept {kept} of 8 paths" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "2"], "--threshold must be a number in [0, 1]"),
        (["--mode", "drop"], "--mode must be one of keep, mark"),
        (["--out", "data.jsonl"], "is the input file"),
        (["--judge", "no-such-prm"], "cannot load the judge no-such-prm"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    write(tmp_path / "data.jsonl", arith_rows(2))
    base = ["filter", "data.jsonl", "--judge", "arith-oracle", "--out", "k.jsonl"]
    # A later option wins over the base one.
    proc = amcs(*base, *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert read(tmp_path / "data.jsonl") == arith_rows(2)
