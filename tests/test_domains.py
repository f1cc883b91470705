"""Problem domains as a registry (amcs.domains): the bundled arith domain through it, and a second
domain defined outside amcs (tests/domains/counting.py) that goes through generate, view, eval
and eval steps with no other module changed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from domains.counting import COUNTING, question_for
from typer.testing import CliRunner

from amcs.domains import (
    DOMAINS,
    StepCheck,
    is_domain_source,
    oracle_domain,
    question_domain,
    register_domain,
    source_domain,
)
from amcs.domains.arith import ARITH
from amcs.problems import ProblemError, load_problems
from cli.main import app

runner = CliRunner()
# Importing the plugin registered it, as AMCS_PLUGINS would; each test registers it itself.
DOMAINS.unregister(COUNTING.name)
COUNTING_FILE = Path(__file__).parent / "domains" / "counting.py"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def counting():
    """The counting domain registered for one test, as a script would register it."""
    register_domain(COUNTING, replace=True)
    yield COUNTING
    DOMAINS.unregister(COUNTING.name)


# --- the counting domain's own truth -------------------------------------------------------------


def test_counting_step_truth_follows_its_rules():
    question = question_for([3, 5, 4])
    assert question == "What is 3 + 5 + 4 coins?" and COUNTING.owns(question)
    right = COUNTING.check_steps(
        question, ["3 + 5 = 8", "8 + 4 = 12", "The answer is \\boxed{12}."]
    )
    assert right == StepCheck([True, True, True], [True, True, True], solved=True)
    # A wrong sum is wrong; the next step is judged against the count the solver believes.
    believed = COUNTING.check_steps(
        question, ["3 + 5 = 9", "9 + 4 = 13", "The answer is \\boxed{13}."]
    )
    assert believed.step_correct == [False, True, False]
    assert believed.prefix_correct == [False, False, False] and believed.first_error == 0
    # Adding a heap out of turn, answering before every heap is added, a step after the answer.
    assert COUNTING.check_steps(question, ["3 + 4 = 7"]).step_correct == [False]
    early = COUNTING.check_steps(question, ["3 + 5 = 8", "The answer is \\boxed{8}.", "8 + 4 = 12"])
    assert early.step_correct == [True, False, False] and early.first_error == 1
    with pytest.raises(ValueError, match="not a counting question"):
        COUNTING.check_steps("What is 3 + 5?", ["3 + 5 = 8"])


# --- the registry ------------------------------------------------------------------------------


def test_arith_is_a_registered_domain_with_its_spellings():
    assert DOMAINS["arith"] is ARITH and source_domain("arith-heldout:7") is ARITH
    assert is_domain_source("arith") and is_domain_source("arith-heldout:3")
    assert not is_domain_source("arith:x") and not is_domain_source("data.jsonl")
    assert oracle_domain("arith-oracle") is ARITH and oracle_domain("tiny-prm") is None
    assert question_domain("What is 2 + 3 * 4?") is ARITH
    assert question_domain("What is 3 + 5 + 4 coins?") is None  # counting is not registered
    check = ARITH.check_steps("What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 15"])
    assert check.step_correct == [True, False]


def test_a_registered_domain_is_a_problem_source_an_oracle_and_a_question_owner(counting):
    from amcs.prm import load_scorer
    from amcs.prm.names import scorer_location

    five = load_problems("counting:5")
    assert [p.id for p in five] == [f"counting-0-{i}" for i in range(5)]
    assert load_problems("counting:3") == five[:3]  # a larger count extends a run
    assert load_problems("counting:5", limit=2) == five[:2]
    assert len(load_problems("counting")) == COUNTING.default_count
    assert load_problems("counting:2", seed=1) != five[:2]
    for p in five:
        heaps = p.meta["heaps"]
        assert p.question == question_for(heaps) and p.answer == str(sum(heaps))
        assert question_domain(p.question) is counting
    with pytest.raises(ProblemError) as info:
        load_problems("counting:two")
    assert str(info.value) == (
        "bad problem source 'counting:two': the counting domain is counting or counting:N "
        "with N a whole number"
    )
    assert oracle_domain("counting-oracle") is counting
    assert scorer_location("counting-oracle") is None  # a name, not a file to protect
    oracle = load_scorer("counting-oracle")
    steps = ["3 + 5 = 8", "8 + 4 = 13", "The answer is \\boxed{13}."]
    assert asyncio.run(oracle.score(question_for([3, 5, 4]), steps)) == [1.0, 0.0, 0.0]


def test_registration_rejects_what_would_be_ambiguous(counting):
    class Impostor:
        name, title, sources, default_count, has_step_truth = "impostor", "x", ("arith",), 1, False

        def problems(self, source, count, seed):
            return []

        def owns(self, question):
            return False

        def check_steps(self, question, steps):
            raise NotImplementedError

    with pytest.raises(ValueError, match="problem source 'arith' is taken by the arith domain"):
        register_domain(Impostor())
    with pytest.raises(ValueError, match="a domain named 'counting' is already registered"):
        register_domain(type(counting)())
    with pytest.raises(TypeError, match="is not a Domain"):
        register_domain(object())
    assert list(DOMAINS) == ["arith", "counting"]


def _cli_program(*args: str, plugins: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMCS_PLUGINS": plugins}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_program_loads_a_domain_named_by_amcs_plugins():
    shown = _cli_program("problems", "counting:3", "--show", "3", plugins=str(COUNTING_FILE))
    assert shown.returncode == 0, shown.stderr
    assert "3 problems from counting:3" in shown.stdout
    for p in COUNTING.problems("counting", 3, 0):
        assert p.id in shown.stdout and p.question in shown.stdout
    # A plugin that does not load stops nothing that does not need it: one warning line.
    missing = _cli_program("problems", "arith:1", plugins="no_such_plugin_module")
    assert missing.returncode == 0, missing.stderr
    assert missing.stderr.splitlines() == [
        "warning: AMCS_PLUGINS: cannot import the plugin no_such_plugin_module "
        "(ModuleNotFoundError: No module named 'no_such_plugin_module')"
    ]
    unknown = _cli_program("generate", "--method", "magic", plugins="no_such_plugin_module")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines()[-1] == (
        "error: unknown method 'magic'; choose one of amcs, omegaprm, shepherd; AMCS_PLUGINS: "
        "cannot import the plugin no_such_plugin_module (ModuleNotFoundError: No module named "
        "'no_such_plugin_module')"
    )


# --- through the commands ------------------------------------------------------------------------


def _page_data(html: str) -> dict:
    start = html.index("id=amcs-data>") + len("id=amcs-data>")
    return json.loads(html[start : html.index("</script>", start)])


@pytest.mark.slow
def test_counting_goes_through_generate_view_eval_and_eval_steps(counting, tmp_path):
    # generate: the tiny policy labels counting problems with AMCS
    run = tmp_path / "run.jsonl"
    settings = ["--set", "max_new_tokens=60", "--set", "rollout_budget=36", "-q"]
    r = runner.invoke(app, ["generate", "--problems", "counting:4", "--out", str(run), *settings])
    assert r.exit_code == 0, r.output
    from amcs.records import meta_path_for, read_data, read_meta

    meta, paths = list(read_meta(meta_path_for(run))), list(read_data(run))
    problems = {p.id: p for p in load_problems("counting:4")}
    assert [m["problem_id"] for m in meta] == list(problems)
    assert all(m["status"] == "ok" for m in meta)
    assert paths, "the tiny policy solves some counting problems: paths are written"
    for path in paths:
        assert path["prompt"] == problems[path["problem_id"]].question

    # view: every written step gets the counting domain's exact truth next to its label
    page = tmp_path / "run.html"
    r = runner.invoke(app, ["view", str(run), "--out", str(page)])
    assert r.exit_code == 0, r.output
    data = _page_data(page.read_text(encoding="utf-8"))
    exact = data["columns"].index("exact")
    assert all(row[exact] is True for row in data["rows"])
    agree = steps = 0
    for detail in data["details"].values():
        assert detail["exact"] and detail["domain"] == "counting"
        assert detail["domain_title"] == "counting"
        for shown in detail["labelled_paths"]:
            completions = shown["completions"]
            truth = COUNTING.check_steps(detail["question"], completions).prefix_correct
            assert shown["truth"] == truth
            agree += sum(a == b for a, b in zip(shown["labels"], truth, strict=True))
            steps += len(completions)
        if detail["agreement"]:
            assert detail["agreement"]["steps"] == sum(
                len(p["completions"]) for p in detail["labelled_paths"]
            )
    assert steps == sum(len(p["completions"]) for p in paths)
    assert sum((d["agreement"] or {}).get("agree", 0) for d in data["details"].values()) == agree

    # eval with the domain's oracle as the PRM, then the eval folder in the viewer
    out = tmp_path / "eval"
    r = runner.invoke(
        app,
        [
            "eval", "--problems", "counting:3", "--strategies", "best-of-n", "--n", "2",
            "--prm", "counting-oracle", "--no-baseline", "--out", str(out), "-q",
            "--set", "max_new_tokens=60",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["prm"] == "counting-oracle"
    r = runner.invoke(app, ["view", str(out), "--out", str(tmp_path / "eval.html")])
    assert r.exit_code == 0, r.output
    shown = _page_data((tmp_path / "eval.html").read_text(encoding="utf-8"))
    candidates = 0
    for problem in shown["problems"]:
        assert problem["domain"] == "counting"
        for run_shown in problem["runs"]:
            for c in run_shown["candidates"]:
                truth = COUNTING.check_steps(problem["question"], c["steps"]).prefix_correct
                assert c["truth"] == truth
                # the oracle's step scores are the same truth, step by step
                step_truth = COUNTING.check_steps(problem["question"], c["steps"]).step_correct
                assert c["step_scores"] == [1.0 if ok else 0.0 for ok in step_truth]
                candidates += 1
    assert candidates == 3 * 2

    # eval steps: sampled solutions labelled by exact truth; the oracle finds every first error
    written, report_file = tmp_path / "steps.jsonl", tmp_path / "steps.json"
    r = runner.invoke(
        app,
        [
            "eval", "steps", "--data", "counting:12", "--prm", "counting-oracle",
            "--write-data", str(written), "--out", str(report_file),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    examples = [json.loads(line) for line in written.read_text().splitlines()]
    assert len(examples) == 12
    for example in examples:
        check = COUNTING.check_steps(example["problem"], example["steps"])
        assert example["label"] == check.first_error
    report = json.loads(report_file.read_text())
    erroneous = sum(e["label"] >= 0 for e in examples)
    assert (report["n_erroneous"], report["n_correct"]) == (erroneous, 12 - erroneous)
    assert 0 < erroneous < 12, "the tiny policy gets some counting problems right, some wrong"
    assert report["a1_erroneous"] == report["a2_correct"] == report["f1"] == 1.0


def test_eval_refuses_an_oracle_for_another_domains_problems(counting, tmp_path):
    r = runner.invoke(
        app,
        ["eval", "--problems", "arith:2", "--prm", "counting-oracle", "--out", str(tmp_path / "e")],
    )
    assert r.exit_code == 2
    assert "--prm counting-oracle scores counting problems only (counting)" in r.output
