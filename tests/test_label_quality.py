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
        # Better than chance: labels that ignore the truth have a balanced accuracy of 0.5,
        # and a constant 0.5 forecast has a Brier score of 0.25.
        assert run["balanced_accuracy"] > 0.6
        assert run["brier_vs_truth"] < 0.25
    oracle = results["oracle"]
    assert oracle["nodes"] > 0
    for est in oracle["estimators"].values():
        assert est["mean_abs_error"] < 0.5 and est["mean_rollouts_per_node"] >= 1
    assert (tmp_path / "label_quality_quick.md").exists()
    assert (tmp_path / "label_quality_quick_accuracy_vs_tokens.png").stat().st_size > 0
