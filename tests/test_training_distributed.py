"""`train_prm` under torchrun: two CPU processes (gloo) train, only the first one saves."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForTokenClassification

from amcs.assets import TINY_POLICY
from amcs.training import load_prm_config

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_and_only_the_first_saves(tmp_path):
    out, reports, scratch = tmp_path / "prm", tmp_path / "reports", tmp_path / "tmp"
    reports.mkdir()
    scratch.mkdir()
    env = dict(
        os.environ,
        TMPDIR=str(scratch),
        OMP_NUM_THREADS="1",
        TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(HERE / "distributed_train.py"), str(out), str(reports),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((reports / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Data parallel: each optimizer step took 4 rows from each process.
    assert [r["train_steps"] for r in ranks] == [2, 2]
    expected = {"amcs_prm.json", "config.json", "model.safetensors", "tokenizer.json"}
    for report in ranks:  # no rank returned before the save was complete
        assert expected <= set(report["present_on_return"]), report

    def under(path: str, folder: Path) -> bool:
        return Path(path).resolve().is_relative_to(folder.resolve())

    main, other = ranks
    assert all(under(p, scratch) for p in other["writes"]), other["writes"]
    # The PRM is written beside --out and moved into it when complete (amcs.training.save).
    staging = out.with_name(f".{out.name}.saving")
    assert sum(p == str(staging / "config.json") for p in main["writes"]) == 1
    assert sum(p == str(staging / "amcs_prm.json") for p in main["writes"]) == 1
    mine = (out, scratch, staging)
    assert all(any(under(p, f) for f in mine) for p in main["writes"]), main["writes"]
    assert not staging.exists()
    assert not any(p.name.startswith("amcs-prm-trainer-") for p in scratch.iterdir())

    assert expected <= {p.name for p in out.iterdir()}
    assert load_prm_config(out)["base_model"] == str(TINY_POLICY)
    model = AutoModelForTokenClassification.from_pretrained(str(out))
    assert model.config.num_labels == 2
    base = AutoModelForTokenClassification.from_pretrained(str(TINY_POLICY), num_labels=2)
    trained = dict(model.named_parameters())
    assert any(
        not torch.equal(p, trained[n]) for n, p in base.named_parameters() if "score" not in n
    )
