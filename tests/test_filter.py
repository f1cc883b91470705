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


def test_a_run_in_progress_is_read_only_as_far_as_it_committed(tmp_path):
    from amcs.records import RecordWriter

    data, out = tmp_path / "data.jsonl", tmp_path / "kept.jsonl"
    rows = arith_rows(4)
    with RecordWriter(data) as w:
        for i, r in enumerate(rows[:3]):
            path = {
                "completions": r["completions"],
                "labels": r["labels"],
                "values": [1.0] * len(r["labels"]),
                "rollouts": [6] * len(r["labels"]),
                "method": "amcs",
                "model": "m",
            }
            w.write_problem(f"p{i}", r["prompt"], "1", [path])
    with data.open("a") as f:  # the next problem's lines, its meta line not yet written
        f.write(json.dumps(rows[3] | {"problem_id": "p3"}) + "\n" + '{"prompt": "half a li')
    stats = asyncio.run(filter_file(data, out, ArithOracleScorer(), judge_name="arith-oracle"))
    assert stats.paths == 3 and [r["prompt"] for r in read(out)] == [r["prompt"] for r in rows[:3]]


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


@pytest.mark.slow
def test_cli_with_the_tiny_prm_and_the_oracle(tmp_path):
    data = tmp_path / "data.jsonl"
    write(data, arith_rows(8))
    proc = amcs("filter", str(data), "--judge", "arith-oracle", "--out", "k.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "kept 8 of 8 paths" in proc.stderr
    assert len(read(tmp_path / "k.jsonl")) == 8
    # The bundled tiny PRM as the judge (the default): it finds every planted first-step error
    # and never calls a right first step wrong (a constant score would do one or the other);
    # what it says of later steps of right solutions is its own opinion.
    proc = amcs("filter", str(data), "--out", "p.jsonl", "--mode", "mark", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    marked = read(tmp_path / "p.jsonl")
    assert [m["id"] for m in marked] == list(range(8))
    assert [m["mc_first_error"] for m in marked] == [-1, 0] * 4
    judged = [m["judge_first_error"] for m in marked]
    assert judged[1::2] == [0] * 4 and 0 not in judged[::2], judged
    assert all(m["consensus"] == (m["mc_first_error"] == m["judge_first_error"]) for m in marked)
    kept = sum(m["consensus"] for m in marked)
    assert f"kept {kept} of 8 paths" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "2"], "--threshold must be a number in [0, 1]"),
        (["--mode", "drop"], "--mode must be one of keep, mark"),
        (["--out", "data.jsonl"], "--out data.jsonl would overwrite the input data.jsonl"),
        (["--judge", "no-such-prm"], "cannot load the judge no-such-prm"),
    ],
)
@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path, args, message):
    write(tmp_path / "data.jsonl", arith_rows(2))
    base = ["filter", "data.jsonl", "--judge", "arith-oracle", "--out", "k.jsonl"]
    # A later option wins over the base one.
    proc = amcs(*base, *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert read(tmp_path / "data.jsonl") == arith_rows(2)


# --- an instruct model as the judge -----------------------------------------------------------


def test_critic_answers_become_first_errors():
    from amcs.critic import critic_question, index_scores, parse_index

    assert parse_index("The second paragraph is wrong. \\boxed{1}", 4) == 1
    assert parse_index("\\boxed{3} ... no, on reflection \\boxed{ -1 }", 4) == -1  # the last box
    assert parse_index("paragraph 2 is wrong", 4) is None  # no box
    assert parse_index("\\boxed{4}", 4) is None and parse_index("\\boxed{-2}", 4) is None
    assert parse_index("\\boxed{x}", 4) is None
    assert index_scores(2, 4) == [1.0, 1.0, 0.0, 0.0] and index_scores(-1, 2) == [1.0, 1.0]
    text = critic_question(QUESTION, WRONG2)
    assert QUESTION in text and "<paragraph_2>\n3 + 12 = 16\n</paragraph_2>" in text
    assert "\\boxed{}" in text


class ScriptedCritic:
    """A backend whose model answers each critique with the text scripted for its solution (the
    step where its third paragraph begins): the judge's parsing and the filter's verdicts are
    then unambiguous."""

    def __init__(self, answers):
        from amcs.assets import TINY_POLICY
        from amcs.backends.http import load_tokenizer

        self.tokenizer = load_tokenizer(TINY_POLICY)
        self.answers = answers
        self.prompts = []

    async def sample(self, prompt_ids, n, params):
        from amcs.backends.base import Rollout

        assert n == 1 and params.temperature == 0
        text = self.tokenizer.decode(prompt_ids)
        self.prompts.append(text)
        answer = next(a for key, a in self.answers.items() if key in text)
        return [Rollout(token_ids=[], text=answer, logprob_sum=0.0, finish_reason="stop")]

    async def aclose(self):
        pass


def test_an_instruct_judge_filters_by_its_earliest_wrong_step(tmp_path):
    from amcs.critic import CriticJudge
    from amcs.filter import NO_VERDICT, filter_file

    rows = [
        row(RIGHT, [True] * 5),  # critic: -1        -> agree
        row(WRONG2, [True, True, False]),  # critic: 2  -> agree
        row(
            ["5 - 2 = 3", "4 * 3 = 13", "3 + 13 = 16"], [True, True, False]
        ),  # critic: 1 -> earlier
        row(["5 - 2 = 4", "4 * 4 = 16", "3 + 16 = 19"], [False, False, False]),  # no box -> none
    ]
    data, out = tmp_path / "d.jsonl", tmp_path / "k.jsonl"
    write(data, rows)
    critic = ScriptedCritic(
        {
            "15 - 7 = 8": "All steps are right: \\boxed{-1}",
            "3 + 12 = 16": "Paragraph 2 adds wrongly: \\boxed{2}",
            "4 * 3 = 13": "\\boxed{1}",
            "5 - 2 = 4": "I am not sure.",
        }
    )
    judge = CriticJudge(critic)
    stats = asyncio.run(filter_file(data, out, judge, judge_name="critic", mode="mark"))
    marked = read(out)
    assert [m["judge_first_error"] for m in marked] == [-1, 2, 1, None]
    assert [m["consensus"] for m in marked] == [True, True, False, False]
    assert stats.kept == 2 and stats.reasons[NO_VERDICT] == 1
    assert judge.answers == 4 and judge.unusable == 1
    assert len(critic.prompts) == 4  # one critique per path (this tokenizer knows digits only)


@pytest.mark.slow
def test_cli_instruct_judge_runs_a_real_model(tmp_path):
    """The plumbing with a real model on the hf backend: the bundled tiny policy is no critic
    (it answers with arithmetic), so what it decides is its own; every path gets a verdict or
    'no verdict', and the summary adds up."""
    from amcs.assets import TINY_POLICY

    data = tmp_path / "data.jsonl"
    write(data, arith_rows(3))
    proc = amcs(
        "filter",
        str(data),
        "--out",
        "k.jsonl",
        "--mode",
        "mark",
        "--judge",
        "instruct",
        "--judge-model",
        str(TINY_POLICY),
        "--max-new-tokens",
        "24",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    marked = read(tmp_path / "k.jsonl")
    assert len(marked) == 3
    summary = json.loads((tmp_path / "k.jsonl.summary.json").read_text())
    assert summary["paths"] == 3 and sum(summary["reasons"].values()) == 3
    assert summary["judge"] == f"instruct:{TINY_POLICY}"
    proc = amcs("filter", str(data), "--out", "x.jsonl", "--judge", "instruct", cwd=tmp_path)
    assert proc.returncode == 2 and "needs --judge-model" in proc.stderr
