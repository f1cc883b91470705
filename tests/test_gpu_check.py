"""The prepared GPU check runs end to end on the CPU (its --cpu flag), so a lent GPU session can
run it as it is."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_prints_its_table(tmp_path):
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for step in ("generate (cpu)", "generate ratio", "train (fp32)", "| eval |"):
        assert step in table, table
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    gen = report["generate_device"]
    assert gen["problems"] == 6 and gen["failed"] == 0 and gen["tokens"] > 0
    assert report["generate_cpu"]["tokens"] > 0
    assert report["train"]["steps"] == 10 and report["train"]["train_loss"] > 0
    assert set(report["eval"]["accuracy"]) == {"greedy@1", "best-of-n@4"}
    assert (tmp_path / "prm" / "amcs_prm.json").exists()
    assert (tmp_path / "gpu_check.md").read_text().strip() in table
