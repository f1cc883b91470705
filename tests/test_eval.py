"""amcs eval: the runner (records, resume, summary), the step-level F1 metric, and the CLI."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from amcs.assets import TINY_POLICY
from amcs.backends.hf import HFBackend
from amcs.evaluation import Cell, evaluate, make_cells, markdown_table, summarize
from amcs.grading import Grader
from amcs.problems import load_problems
from amcs.records import RecordWriter
from amcs.stepeval import (
    PATHS,
    StepDataError,
    StepExample,
    first_error_f1,
    predict_first_error,
    read_step_examples,
    read_step_file,
    step_report,
    write_step_examples,
)
from amcs.verification import ArithOracleScorer, VerifyConfig, VerifyContext
from cli.main import app

runner = CliRunner()


# --- the ProcessBench metric ----------------------------------------------------------------


def test_predict_first_error_is_the_first_step_below_threshold():
    assert predict_first_error([0.9, 0.4, 0.1], 0.5) == 1
    assert predict_first_error([0.9, 0.8], 0.5) == -1
    assert predict_first_error([0.5, 0.2], 0.5) == 1  # exactly at the threshold is not an error
    assert predict_first_error([], 0.5) == -1


def test_first_error_f1_hand_computed():
    # erroneous: labels 2, 0, 1 -> predictions 2 (hit), 1 (miss), -1 (miss): a1 = 1/3
    # correct: 4 solutions, predictions -1, -1, -1, 3: a2 = 3/4
    labels = [2, 0, 1, -1, -1, -1, -1]
    preds = [2, 1, -1, -1, -1, -1, 3]
    m = first_error_f1(preds, labels)
    assert m["a1_erroneous"] == pytest.approx(1 / 3)
    assert m["a2_correct"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * (1 / 3) * (3 / 4) / (1 / 3 + 3 / 4))
    assert (m["n_erroneous"], m["n_correct"]) == (3, 4)


def test_f1_is_zero_for_a_prm_that_calls_everything_correct():
    labels = [1, 0, -1, -1]
    assert first_error_f1([-1, -1, -1, -1], labels)["f1"] == 0.0
    assert first_error_f1([1, 0, -1, -1], labels)["f1"] == 1.0


def test_step_report_sweeps_thresholds_and_reports_the_best():
    scores = [[0.9, 0.3], [0.6, 0.7], [0.2]]
    labels = [1, -1, 0]
    report = step_report(scores, labels, threshold=0.5, sweep=[0.25, 0.5, 0.65])
    assert report["threshold"] == 0.5 and report["f1"] == 1.0
    by_t = {row["threshold"]: row["f1"] for row in report["sweep"]}
    assert by_t[0.25] < 1.0 and by_t[0.65] < 1.0  # 0.25 misses step 1 of #0; 0.65 flags #1
    assert report["best_threshold"]["threshold"] == 0.5


def test_step_files_round_trip_and_bad_lines_name_the_line(tmp_path):
    examples = [StepExample("a", "What is 1 + 2?", ["1 + 2 = 3", "The answer is \\boxed{3}."], -1)]
    path = tmp_path / "steps.jsonl"
    write_step_examples(path, examples)
    assert read_step_examples(path) == examples
    path.write_text(path.read_text() + json.dumps({"problem": "x", "steps": ["a"], "label": 3}))
    with pytest.raises(StepDataError, match=r"steps.jsonl:2: 'label'"):
        read_step_examples(path)
    path.write_text('{"problem": "x"}\n')
    with pytest.raises(StepDataError, match=r"steps.jsonl:1: missing steps, label"):
        read_step_examples(path)


# --- the runner -----------------------------------------------------------------------------


def test_make_cells_runs_greedy_once_and_rejects_unknown_strategies():
    cells = make_cells(["greedy", "majority"], [4, 1, 4])
    assert cells == [Cell("greedy", 1), Cell("majority", 1), Cell("majority", 4)]
    with pytest.raises(ValueError, match="unknown strategy bogus"):
        make_cells(["bogus"], [1])
    with pytest.raises(ValueError, match="n must be >= 1"):
        make_cells(["majority"], [0])


def test_summary_and_table_from_records():
    records = [
        {"strategy": "majority", "n": 4, "problem_id": "a", "correct": True, "tokens": 100,
         "prm_calls": 0, "rollouts": 4},
        {"strategy": "majority", "n": 4, "problem_id": "b", "correct": False, "tokens": 300,
         "prm_calls": 0, "rollouts": 4},
        {"strategy": "majority", "n": 4, "problem_id": "other", "correct": False, "tokens": 9,
         "prm_calls": 0, "rollouts": 4},
    ]  # fmt: skip
    (row,) = summarize(records, [Cell("majority", 4)], ["a", "b"])
    assert row["accuracy"] == 0.5 and row["tokens_per_problem"] == 200 and row["problems"] == 2
    assert "| majority | 4 | 50.0% | 200 | 0.0 | 2 |" in markdown_table([row])


def test_evaluate_writes_records_and_resumes_without_rerunning(tmp_path):
    problems = load_problems("arith-heldout:4")
    cells = [Cell("greedy", 1), Cell("best-of-n", 2), Cell("beam", 2)]
    path = tmp_path / "records.jsonl"

    async def run():
        backend = HFBackend(TINY_POLICY, max_batch_size=32)
        ctx = VerifyContext(backend, ArithOracleScorer(), VerifyConfig(max_new_tokens=200))
        try:
            async with Grader(max_workers=1) as grader:
                first = await evaluate(problems, ctx, cells, grader, path)
                lines = path.read_text().splitlines()
                # a crash mid-write leaves a torn line; the resumed run drops it and redoes that run
                path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
                calls = ctx.scorer.calls
                second = await evaluate(problems, ctx, cells, grader, path)
                return first, second, calls, ctx.scorer.calls
        finally:
            await backend.aclose()

    first, second, calls_before, calls_after = asyncio.run(run())
    assert len(first) == len(second) == 12
    keys = {(r["strategy"], r["n"], r["problem_id"]) for r in second}
    assert len(keys) == 12
    assert len(path.read_text().splitlines()) == 12
    assert calls_after - calls_before <= 8  # only the torn run was redone
    for r in first:
        assert r["tokens"] > 0 and r["reference"] and isinstance(r["correct"], bool)
        if r["strategy"] == "greedy":
            assert r["prm_calls"] == 0
        # the oracle PRM picks a right solution whenever it has one to pick
        if r["strategy"] == "best-of-n" and any(
            c["answer"] == r["reference"] and min(c["step_scores"] or [0]) == 1.0
            for c in r["candidates"]
        ):
            assert r["correct"]


def test_beam_at_n1_samples_one_step_per_depth():
    config = VerifyConfig(n=1, expansions=4)
    assert config.beam_width == 1 and config.beam_expansions == 1
    assert VerifyConfig(n=16, expansions=4).beam_expansions == 4


# --- the CLI --------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_eval_writes_the_report(tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval", "--problems", "arith-heldout:3", "--prm", "arith-oracle",
            "--strategies", "greedy,majority,weighted-vote", "--n", "2", "--out", str(out),
            "--set", "max_new_tokens=200", "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "weighted-vote" in result.stdout and "accuracy" in result.stdout
    results = json.loads((out / "results.json").read_text())
    rows = {(r["strategy"], r["n"]): r for r in results["results"]}
    # The training-free baseline rides along (hf backend): the same samples, another scorer.
    baseline = ("weighted-vote (policy-confidence)", 2)
    assert set(rows) == {("greedy", 1), ("majority", 2), ("weighted-vote", 2), baseline}
    assert all(r["problems"] == 3 for r in rows.values())
    assert rows[("majority", 2)]["tokens_per_problem"] > rows[("greedy", 1)]["tokens_per_problem"]
    assert rows[baseline]["tokens_per_problem"] == rows[("weighted-vote", 2)]["tokens_per_problem"]
    assert results["settings"]["verify"]["max_new_tokens"] == 200
    # one grading check per run; plain numbers, so no timeouts
    grading = results["settings"]["grading"]
    assert (grading["checks"], grading["retried"], grading["unresolved"]) == (12, 0, 0)
    table, environment = (out / "results.md").read_text().split("## Environment")
    assert table.count("\n") == 2 + 2 + 4 + 1 and "| torch |" in environment
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 1000
    assert len((out / "records.jsonl").read_text().splitlines()) == 12


@pytest.mark.slow
def test_cli_eval_baseline_rescores_the_same_samples_with_the_policy(tmp_path):
    from amcs.prm import load_policy_confidence
    from amcs.steps import split_steps

    out = tmp_path / "report"
    args = [
        "eval", "--problems", "arith-heldout:4", "--strategies", "best-of-n", "--n", "4",
        "--set", "aggregation=min", "--out", str(out), "--quiet",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    trained = {r["problem_id"]: r for r in records if r["strategy"] == "best-of-n"}
    baseline = {
        r["problem_id"]: r for r in records if r["strategy"] == "best-of-n (policy-confidence)"
    }
    assert len(trained) == len(baseline) == 4
    scorer = load_policy_confidence(TINY_POLICY)
    for pid, record in baseline.items():
        texts = [c["text"] for c in record["candidates"]]
        assert texts == [c["text"] for c in trained[pid]["candidates"]]  # the same samples
        expected = [
            min(s)
            for s in scorer.score_batch([(record["question"], split_steps(t)) for t in texts])
        ]
        assert [c["score"] for c in record["candidates"]] == pytest.approx(expected, abs=1e-5)
        assert record["chosen"] == max(range(len(expected)), key=lambda i: expected[i])
    # Resuming finds every run done, and --no-baseline leaves the rows out.
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    assert len((out / "records.jsonl").read_text().splitlines()) == 8
    plain = tmp_path / "plain"
    result = runner.invoke(app, [*args[:-3], "--out", str(plain), "--no-baseline", "--quiet"])
    assert result.exit_code == 0, result.output
    strategies = {json.loads(x)["strategy"] for x in (plain / "records.jsonl").open()}
    assert strategies == {"best-of-n"}


def test_cli_eval_bad_input_fails_clearly(tmp_path):
    result = runner.invoke(app, ["eval", "--strategies", "greedy,nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown strategy nope" in result.output
    result = runner.invoke(app, ["eval", "--set", "bogus=1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "bogus" in result.output
    result = runner.invoke(
        app, ["eval", "--prm", str(tmp_path / "missing"), "--strategies", "best-of-n"]
    )
    assert result.exit_code == 2 and "no such PRM directory" in result.output


def test_cli_eval_steps_on_a_processbench_file(tmp_path):
    data = tmp_path / "pb.jsonl"
    write_step_examples(
        data,
        [
            StepExample("0", "What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 15"], 1),
            StepExample("1", "What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 14"], -1),
            StepExample("2", "What is 2 + 3 * 4?", ["2 + 3 = 5", "5 * 4 = 20"], 0),
        ],
    )
    out = tmp_path / "f1.json"
    result = runner.invoke(
        app, ["eval", "steps", "--data", str(data), "--prm", "arith-oracle", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["f1"] == 1.0 and report["n_erroneous"] == 2 and report["n_correct"] == 1
    assert "step-level F1 1.000" in result.stdout


def _path(steps, labels, model="tiny"):
    return {
        "completions": steps,
        "labels": labels,
        "values": [1.0 if label else 0.0 for label in labels],
        "rollouts": [6] * len(steps),
        "method": "amcs",
        "model": model,
    }


def mc_run(folder):
    """A hand-written amcs run of one problem: five paths, one of them an all-"+" prefix, and one
    whose MC labels call a right step wrong (the oracle disagrees)."""
    data = folder / "run.jsonl"
    with RecordWriter(data) as w:
        w.write_problem(
            "q-1",
            "What is 2 + 3 * 4?",
            "14",
            [
                _path(["3 * 4 = 12", "2 + 12 = 14", "The answer is \\boxed{14}."], [True] * 3),
                _path(["3 * 4 = 12", "2 + 12 = 15"], [True, False]),
                _path(["3 * 4 = 12"], [True]),  # a prefix: stops before a final answer
                _path(["3 * 4 = 13"], [False]),
                _path(["3 * 4 = 12", "2 + 12 = 14"], [True, False]),  # MC wrong, not the step
            ],
        )
    return data


def test_an_amcs_run_is_read_as_step_examples_with_the_first_minus_as_label(tmp_path):
    step_file = read_step_file(mc_run(tmp_path))
    assert step_file.layout == PATHS and step_file.prefixes == 1
    assert [(e.id, e.label, e.final_answer_correct) for e in step_file.examples] == [
        ("q-1-0", -1, True),
        ("q-1-1", 1, None),
        ("q-1-2", 0, None),
        ("q-1-3", 1, None),
    ]
    assert step_file.examples[1].steps == ["3 * 4 = 12", "2 + 12 = 15"]
    assert {(e.problem, e.generator) for e in step_file.examples} == {
        ("What is 2 + 3 * 4?", "tiny")
    }


def test_plain_trl_rows_are_step_examples_too(tmp_path):
    rows = [
        {
            "prompt": "What is 1 + 1?",
            "completions": ["1 + 1 = 3", "The answer is 3"],
            "labels": [0, 0],
        },
        {
            "prompt": "What is 1 + 1?",
            "completions": ["1 + 1 = 2", "The answer is 2"],
            "labels": [1, 1],
        },
        {"prompt": "What is 1 + 1?", "completions": ["1 + 1 = 2"], "labels": [True]},
    ]
    data = tmp_path / "trl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    step_file = read_step_file(data)
    assert step_file.prefixes == 1
    assert [(e.id, e.label, e.steps, e.generator) for e in step_file.examples] == [
        ("1", 0, rows[0]["completions"], None),
        ("2", -1, rows[1]["completions"], None),
    ]
    data.write_text(
        json.dumps(rows[0]) + "\n" + json.dumps(dict(rows[1], labels=["yes", 1])) + "\n"
    )
    with pytest.raises(StepDataError) as info:
        read_step_file(data)
    assert str(info.value) == f"{data}:2: labels must be booleans (or 0/1), label 1 is 'yes'"


def test_cli_eval_steps_on_an_amcs_run_scores_against_its_mc_labels(tmp_path):
    out = tmp_path / "f1.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "steps",
            "--data",
            str(mc_run(tmp_path)),
            "--prm",
            "arith-oracle",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    # The oracle predicts -1, 1, 0, -1; the references are -1, 1, 0, 1: a1 = 2/3 (it calls the
    # last path right where MC says step 1 is wrong), a2 = 1/1, F1 = 2 a1 a2 / (a1 + a2) = 0.8.
    assert (report["n"], report["n_erroneous"], report["n_correct"]) == (4, 3, 1)
    assert report["a1_erroneous"] == pytest.approx(2 / 3) and report["a2_correct"] == 1.0
    assert report["f1"] == pytest.approx(0.8)
    assert report["reference"] == "reference = the run's Monte Carlo labels, not human labels"
    assert "reference = the run's Monte Carlo labels, not human labels" in result.stderr
    assert "left out 1 all-'+' path(s) that stop before a final answer" in result.stderr


def test_shared_samples_draw_repeated_seeded_requests_once():
    from amcs.evaluation import SharedSamples

    class Counting:
        def __init__(self, backend):
            self.backend, self.tokenizer, self.calls = backend, backend.tokenizer, 0

        async def sample(self, ids, n, params):
            self.calls += 1
            return await self.backend.sample(ids, n, params)

        async def aclose(self):
            await self.backend.aclose()

    question = load_problems("arith-heldout:1")[0].question

    async def run():
        counting = Counting(HFBackend(TINY_POLICY, max_batch_size=16))
        shared = SharedSamples(counting)
        config = VerifyConfig(max_new_tokens=200)
        try:
            plain = await run_strategy(
                "majority", VerifyContext(counting, None, config), question, 4
            )
            calls_plain = counting.calls
            a = await run_strategy("majority", VerifyContext(shared, None, config), question, 4)
            b = await run_strategy(
                "best-of-n", VerifyContext(shared, ArithOracleScorer(), config), question, 4
            )
            return plain, a, b, calls_plain, counting.calls - calls_plain, shared.hits
        finally:
            await shared.aclose()

    from amcs.verification import run_strategy

    plain, a, b, calls_plain, calls_shared, hits = asyncio.run(run())
    assert calls_shared == calls_plain and hits == calls_plain  # the second strategy hit memory
    assert [c.text for c in a.candidates] == [c.text for c in plain.candidates]
    assert [c.text for c in b.candidates] == [c.text for c in plain.candidates]
    assert a.tokens == b.tokens == plain.tokens  # each still counts what it would generate


def test_bundled_tiny_prm_is_small_and_scores_steps():
    from amcs.assets import TINY_PRM
    from amcs.prm import load_prm

    size = sum(f.stat().st_size for f in TINY_PRM.iterdir())
    assert size <= 20 * 2**20
    scorer = load_prm(TINY_PRM)
    assert scorer.prm_format == "token-cls"
    question = "What is 3 + 4 * 5?"
    (right, wrong) = scorer.score_batch(
        [(question, ["4 * 5 = 20", "3 + 20 = 23"]), (question, ["4 * 5 = 20", "3 + 20 = 32"])]
    )
    assert len(right) == len(wrong) == 2 and all(0 < s < 1 for s in right + wrong)
    assert right[0] == pytest.approx(wrong[0], abs=1e-6)  # same prefix, same score


def test_cli_eval_steps_on_arith_writes_exact_labels_and_uses_the_bundled_prm(tmp_path):
    from amcs.domains.arith import check_steps, held_out_problems

    data = tmp_path / "pb.jsonl"
    out = tmp_path / "f1.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "steps",
            "--data",
            "arith-heldout:12",
            "--write-data",
            str(data),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    examples = read_step_examples(data)
    expressions = {p.question: p.expression for p in held_out_problems(12)}
    assert len(examples) == 12
    for e in examples:
        assert e.label == check_steps(expressions[e.problem], e.steps).first_error
    report = json.loads(out.read_text())
    assert 0.0 <= report["f1"] <= 1.0 and report["n_erroneous"] + report["n_correct"] == 12
    assert report["prm"] == "amcs/tiny-arith-prm"
