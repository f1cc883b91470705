"""The label-quality benchmark's quick mode: it runs, its JSON has the agreed structure, and the
labels beat chance. (The targets are measured numbers for the README, not test assertions.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_FIELDS = {
    "method",
    "setting",
    "overrides",
    "rollouts",
    "tokens",
    "labelled_steps",
    "hard_label_accuracy",
    "negative_precision",
    "negative_recall",
    "first_error_accuracy",
    "brier_vs_truth",
    "balanced_accuracy",
}


@pytest.mark.slow
def test_quick_mode_structure_and_better_than_chance(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "label_quality.py"),
            "--quick",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "label_quality_quick.json").read_text())
    assert {"mode", "problems", "runs", "oracle"} <= set(results)
    assert {r["method"] for r in results["runs"]} == {"amcs", "omegaprm", "shepherd"}
    for run in results["runs"]:
        assert set(run) >= RUN_FIELDS, run["setting"]
        assert run["rollouts"] > 0 and run["tokens"] > 0 and run["labelled_steps"] > 0
        assert run["negative_labels"] <= run["labelled_steps"] >= run["measured_steps"]
        assert run["paths_with_error"] <= run["paths"]
        # Better than chance: labels that ignore the truth have a balanced accuracy of 0.5,
        # and a constant 0.5 forecast has a Brier score of 0.25.
        assert run["balanced_accuracy"] > 0.6
        assert run["brier_vs_truth"] < 0.25
    oracle = results["oracle"]
    values, rollouts = oracle["oracle_values"], oracle["oracle_rollouts"]
    assert oracle["nodes"] == len(values) == len(oracle["prefix_correct"]) > 0
    assert all(_is_count(v * rollouts) for v in values)  # right answers / rollouts
    for name, est in oracle["estimators"].items():
        per_node = est["per_node"]
        assert [x["oracle"] for x in per_node] == values, name
        assert all(_is_count(x["estimate"] * x["rollouts"]) for x in per_node), name
        if est["overrides"].get("estimator") == "fixed":
            assert {x["rollouts"] for x in per_node} == {est["overrides"]["k"]}, name
        errors = [abs(x["oracle"] - x["estimate"]) for x in per_node]
        assert est["mean_abs_error"] == pytest.approx(sum(errors) / len(errors)), name
        mean_rollouts = sum(x["rollouts"] for x in per_node) / len(per_node)
        assert est["mean_rollouts_per_node"] == pytest.approx(mean_rollouts), name
        assert est["mean_abs_error"] < 0.5 and est["mean_rollouts_per_node"] >= 1
    assert (tmp_path / "label_quality_quick.md").exists()
    assert (tmp_path / "label_quality_quick_accuracy_vs_tokens.png").stat().st_size > 0


def _is_count(x: float) -> bool:
    return abs(x - round(x)) < 1e-9
