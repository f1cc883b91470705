"""One rank of tests/test_training_distributed.py: trains the tiny PRM under torchrun and reports
what this process wrote.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_train.py OUT REPORTS

Every file this process opens for writing and every directory it creates is recorded with an
audit hook (safetensors writes from Rust, unseen, but the model's config.json goes through
Python next to it); the report, written last, is REPORTS/rank<N>.json with those paths, the
metrics, and whether the PRM files existed when train_prm returned. The main process is made to
take 2 s longer over its last file, so a rank that did not wait for the save would return before
that file exists."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

WRITES: list[str] = []


def record_writes(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str | os.PathLike):
        mode, flags = args[1], args[2]
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing:
            WRITES.append(os.path.abspath(os.fspath(args[0])))
    elif event in ("os.mkdir", "os.rename", "os.replace") and isinstance(
        args[0], str | os.PathLike
    ):
        WRITES.append(os.path.abspath(os.fspath(args[0])))


def main() -> None:
    out, reports = Path(sys.argv[1]), Path(sys.argv[2])
    from test_training import arith_rows

    import amcs.training.save as save
    from amcs.assets import TINY_POLICY
    from amcs.training import PRMTrainingConfig, train_prm

    describe = save.prm_config

    def slow_prm_config(*args, **kwargs):
        time.sleep(2.0)
        return describe(*args, **kwargs)

    save.prm_config = slow_prm_config
    sys.addaudithook(record_writes)
    # 16 rows, 4 per device, 2 processes: one epoch is 2 optimizer steps (4 in one process).
    config = PRMTrainingConfig(per_device_train_batch_size=4, eval_fraction=0.0, learning_rate=1e-3)
    metrics = train_prm(arith_rows(16), str(TINY_POLICY), out, config)
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    rank = config.process_index
    report = {
        "rank": rank,
        "world_size": config.world_size,
        "writes": WRITES[:],
        "present_on_return": present,
        "train_steps": metrics["train_steps"],
    }
    (reports / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
