"""benchmarks/prm_comparison.py: the budget cut, the seed aggregation, the pool's choice rules
(checked against amcs's own strategies) and the verdict; then a tiny end-to-end run."""

import asyncio
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amcs.assets import TINY_POLICY
from amcs.backends.base import Rollout
from amcs.verification import VerifyConfig, VerifyContext, run_strategy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "prm_comparison.py"
_spec = importlib.util.spec_from_file_location("prm_comparison", SCRIPT)
pc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pc)


# --- the data streams -----------------------------------------------------------------------------


def test_next_chunk_and_problem_pool_prefix():
    assert pc.next_chunk(0, 0, 10**6) == pc.MIN_CHUNK
    assert pc.next_chunk(1000, 10, 2000) == pc.MIN_CHUNK  # 11 more needed
    assert pc.next_chunk(1000, 10, 10**6) == pc.CHUNK
    assert pc.next_chunk(1000, 10, 21_000) == 220
    small, large = pc.problem_pool(30, seed=1), pc.problem_pool(90, seed=1)
    assert len(small) == 30 and len(large) == 90 and large[:30] == small
    assert pc.problem_pool(30, seed=2)[0].id != small[0].id


# --- seeds -> aggregates -> verdict ----------------------------------------------------------------


def cell(method, seed, budget, f1, bo=0.5, wv=0.5, tokens=100):
    return {
        "method": method,
        "seed": seed,
        "budget": budget,
        "f1": f1,
        "best_of_16": bo,
        "weighted_vote_16": wv,
        "tokens": tokens,
        "problems": 10,
        "paths": 20,
        "labelled_steps": 40,
        "negative_steps": 5,
        "train_seconds": 1.0,
        "generation_seconds": 2.0,
    }


def test_summarize_gives_mean_min_max_over_seeds():
    cells = [
        cell("shepherd", 0, 100, 0.1),
        cell("amcs", 0, 100, 0.4, tokens=90),
        cell("amcs", 1, 100, 0.5, tokens=100),
        cell("amcs", 2, 100, 0.9, bo=0.8, tokens=110),
    ]
    rows = pc.summarize(cells)
    assert [(r["method"], r["budget"]) for r in rows] == [("amcs", 100), ("shepherd", 100)]
    amcs = rows[0]
    assert amcs["seeds"] == [0, 1, 2]
    assert amcs["f1"] == pytest.approx({"mean": 0.6, "min": 0.4, "max": 0.9, "n": 3})
    assert amcs["best_of_16"]["max"] == 0.8 and amcs["best_of_16"]["min"] == 0.5
    assert amcs["tokens"] == pytest.approx(100)
    assert rows[1]["f1"] == {"mean": 0.1, "min": 0.1, "max": 0.1, "n": 1}


def test_verdict_text():
    cells = [cell("amcs", s, b, f) for s, (b, f) in enumerate([(100, 0.6), (100, 0.7)])]
    cells += [cell("omegaprm", s, 100, f) for s, f in enumerate([0.3, 0.4])]
    cells += [cell("shepherd", s, 100, f) for s, f in enumerate([0.65, 0.8])]
    cells += [cell("amcs", 0, 2000, 0.5), cell("omegaprm", 0, 2000, 0.5)]
    cells += [cell("amcs", 0, 5000, 0.5), cell("shepherd", 0, 5000, 0.25)]
    lines = pc.verdict(pc.summarize(cells))
    assert lines == [
        "f1 at 100 tokens: amcs beats omegaprm by 0.300 (ranges do not overlap); "
        "amcs trails shepherd by 0.075 (within seed range)",
        "f1 at 2,000 tokens: amcs ties omegaprm (one seed: no range)",
        "f1 at 5,000 tokens: amcs beats shepherd by 0.250 (one seed: no range)",
    ]


# --- choosing from a pool, the way amcs eval does (amcs.verification's rules) -------------------------------------------------


def test_pool_accuracy_on_a_hand_made_pool():
    def cand(answer, correct):
        return {"answer": answer, "correct": correct, "steps": ["s"]}

    answers = ["5", "5.0", "5", "7", "7", None, "9"]
    pool = [
        # reference 7: only weighted vote is right
        {"candidates": [cand(a, a == "7") for a in answers]},
        # reference 9: only best-of is right
        {"candidates": [cand(a, a == "9") for a in answers]},
        # everything wrong
        {"candidates": [cand("1", False), cand("2", False)]},
    ]
    # min aggregation: the step lists reduce to the scores of the test above
    steps = [[0.1, 0.3], [0.1], [0.2, 0.1], [0.6, 0.9], [0.6], [0.99], [0.95, 1.0]]
    scores = [steps, steps, [[0.2], [0.9]]]
    acc = pc.pool_accuracy(pool, scores, "min")
    assert acc == pytest.approx({"best_of_16": 1 / 3, "weighted_vote_16": 1 / 3})
    pool[1]["candidates"][0]["correct"] = True  # majority's pick in problem 2
    assert pc.pool_accuracy(pool, None) == pytest.approx({"majority_16": 1 / 3, "oracle_16": 2 / 3})
    # "last" reads the last step: best-of picks sample 6 (1.0), weighted "7" (0.9 + 0.6) again.
    assert pc.pool_accuracy(pool, scores, "last") == pytest.approx(acc)


class FixedBackend:
    """Returns `texts` for every request (the pool's samples)."""

    tokenizer = None

    def __init__(self, texts):
        self.texts = texts

    async def sample(self, prompt_ids, n, params):
        assert n == len(self.texts)
        return [Rollout([1] * len(t), t, -1.0, "stop") for t in self.texts]

    async def aclose(self):
        pass


class ListScorer:
    """Scores a solution's steps from a table keyed by the step text."""

    calls = 0

    def __init__(self, table):
        self.table = table

    async def score(self, question, steps):
        return [self.table[s] for s in steps]

    def score_batch(self, items):
        return [[self.table[s] for s in steps] for _, steps in items]

    async def aclose(self):
        pass


@pytest.mark.parametrize("case", range(40))
def test_choices_agree_with_amcs_eval_strategies(case):
    import random

    from amcs.grading import extract_answer
    from amcs.steps import split_steps

    rng = random.Random(case)
    n = rng.randint(1, 8)
    texts, table = [], {}
    for i in range(n):
        steps = [f"s{i}-{j}" for j in range(rng.randint(1, 3))]
        for s in steps:
            table[s] = rng.choice([0.1, 0.25, 0.5, 0.75, 0.9])
        answer = rng.choice(["1", "2", "2.0", "3"])
        end = rng.choice([f"The answer is \\boxed{{{answer}}}.", "no"])
        table[end] = rng.choice([0.25, 0.5, 1.0])
        texts.append("\n\n".join([*steps, end]))
    how = rng.choice(["min", "last", "prod", "mean"])
    ctx = VerifyContext(
        FixedBackend(texts),
        ListScorer(table),
        VerifyConfig(aggregation=how),
        prompt=lambda t, q: [0],
    )
    answers = [extract_answer(t) for t in texts]
    step_scores = ListScorer(table).score_batch([("q", split_steps(t)) for t in texts])
    scores = [pc.aggregate(s, how) for s in step_scores]

    def chosen(name):
        return asyncio.run(run_strategy(name, ctx, "q", n)).chosen

    picks = pc.pool_choices(answers, scores)
    assert picks == {name: chosen(name) for name in ("majority", "best-of-n", "weighted-vote")}


# --- markdown, and a tiny end-to-end run ---------------------------------------------------------


def test_markdown_rows_and_verdict():
    cells = [cell("amcs", 0, 100, 0.6), cell("omegaprm", 0, 100, 0.5)]
    aggregates = pc.summarize(cells)
    result = {
        "setup": {"seeds": [0], "step_eval_solutions": 5, "aggregation": "min", "pool_problems": 2},
        "aggregates": aggregates,
        "reference": {"majority_16": 0.5, "oracle_16": 1.0, pc.POLICY_CONFIDENCE: "not here"},
        "verdict": pc.verdict(aggregates),
    }
    text = pc.markdown(result)
    assert "| amcs | 100 | 100 | 0.600 [0.600–0.600] | 0.500 [0.500–0.500] |" in text
    assert "| majority@16 (no PRM) | – | – | – | 0.500 | – |" in text
    assert "policy-confidence | skipped: not here" in text
    assert "- f1 at 100 tokens: amcs beats omegaprm by 0.100 (one seed: no range)" in text


def _is_count(x: float) -> bool:
    return abs(x - round(x)) < 1e-9


def _f1(a1: float, a2: float) -> float:
    return 2 * a1 * a2 / (a1 + a2) if a1 + a2 else 0.0


@pytest.mark.slow
def test_quick_end_to_end_and_resume(tmp_path):
    """--quick: 1 method, 1 seed, budgets 3000 and 6000, 4 pool problems (~40 s on 2 cores)."""
    cmd = [sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path / "w")]
    cmd += ["--results", str(tmp_path / "r")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "r" / "prm_comparison.json").read_text())
    assert [(c["method"], c["budget"]) for c in result["cells"]] == [
        ("amcs", 3000),
        ("amcs", 6000),
    ]
    small, large = result["cells"]
    # The 6000-token cut keeps the 3000-token one and more (the longest prefix of one stream).
    assert 0 < small["tokens"] <= 3000 < large["tokens"] <= 6000
    assert 0 < small["paths"] < large["paths"]
    assert small["labelled_steps"] < large["labelled_steps"]
    for c in result["cells"]:
        assert c["failed_problems"] == 0 and c["negative_steps"] <= c["labelled_steps"]
        best = c["best_threshold"]
        erroneous, correct = best["n_erroneous"], best["n_correct"]
        assert erroneous > 0 and correct > 0 and erroneous + correct == c["step_eval"]
        # F1 is the harmonic mean of the two accuracies, each a count over its solutions; the
        # sweep's best is at least the F1 at 0.5.
        for row in (c, best):
            assert _is_count(row["a1_erroneous"] * erroneous), row
            assert _is_count(row["a2_correct"] * correct), row
            assert row["f1"] == pytest.approx(_f1(row["a1_erroneous"], row["a2_correct"]))
        assert best["f1"] >= c["f1"]
        # best-of-16 and weighted vote are accuracies over the pool's problems.
        assert _is_count(c["best_of_16"] * c["pool_problems"])
        assert _is_count(c["weighted_vote_16"] * c["pool_problems"])
    reference = result["reference"]
    assert _is_count(reference["majority_16"] * 4) and reference["oracle_16"] == 1.0
    assert (tmp_path / "r" / "prm_comparison.png").stat().st_size > 0
    assert not list((tmp_path / "w").glob("prm-*"))  # PRMs deleted once scored
    # A rerun trains nothing and generates nothing.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train " not in proc.stderr and "generate " not in proc.stderr
    assert (
        json.loads((tmp_path / "r" / "prm_comparison.json").read_text())["cells"] == result["cells"]
    )
    # Another base trains its own cells from the same streams (nothing generated) and reads the
    # base's confidence as a reference; the first base's cells stay.
    base = tmp_path / "base"
    shutil.copytree(TINY_POLICY, base)
    proc = subprocess.run(
        cmd + ["--base", str(base)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generate " not in proc.stderr and proc.stderr.count("train ") == 2
    other = json.loads((tmp_path / "r" / "prm_comparison.json").read_text())
    assert [c["base"] for c in other["cells"]] == [str(base.resolve())] * 2
    assert other["setup"]["base"] == str(base.resolve())
    # The same weights as the policy: its confidence reads the same as the policy's.
    assert other["reference"]["base-confidence"]["f1"] == pytest.approx(
        other["reference"]["policy-confidence"]["f1"]
    )
    cells = [json.loads(line) for line in (tmp_path / "w" / "cells.jsonl").open()]
    assert sum(c["method"] == "amcs" for c in cells) == 4
