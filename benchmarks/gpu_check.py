"""The prepared check for a session that is lent a GPU machine: one script, one table.

    bash benchmarks/gpu_check.sh          # on the GPU machine (CUDA)
    bash benchmarks/gpu_check.sh --cpu    # the same steps on the CPU, small (CI runs this)

1. generate: AMCS on the same arithmetic problems with the hf backend on the device and on the
   CPU, in this one run: generated tokens/s of each and their ratio.
2. train: the tiny PRM trained on the device's generated data (bf16 on CUDA), optimizer steps/s.
3. eval: `amcs eval` with that PRM on held-out problems (greedy and best-of-4): accuracy and time.

Prints one markdown table and writes it, with the raw numbers, to OUT/gpu_check.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from amcs.assets import TINY_POLICY, TINY_POLICY_NAME  # noqa: E402
from amcs.backends.hf import HFBackend  # noqa: E402
from amcs.grading import Grader  # noqa: E402
from amcs.prm_data import load_prm_rows  # noqa: E402
from amcs.problems import arith_problems  # noqa: E402
from amcs.scheduler import RunCounters, generate_to_file  # noqa: E402
from amcs.search import make_config  # noqa: E402
from amcs.training import PRMTrainingConfig, train_prm  # noqa: E402


async def generate_on(device: str, problems, out: Path, max_new_tokens: int) -> dict:
    backend = HFBackend(device=device, max_batch_size=256 if device != "cpu" else 128)
    counters = RunCounters()
    config = make_config("amcs", max_new_tokens=max_new_tokens)
    try:
        async with Grader(max_workers=min(4, os.cpu_count() or 1)) as grader:
            start = time.perf_counter()
            await generate_to_file(
                problems,
                backend,
                grader,
                config,
                out,
                model_name=TINY_POLICY_NAME,
                seed=0,
                concurrency=128 if device != "cpu" else 64,
                counters=counters,
            )
            seconds = time.perf_counter() - start
    finally:
        await backend.aclose()
    return {
        "device": device,
        "problems": len(problems),
        "rollouts": counters.rollouts,
        "tokens": counters.tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(counters.tokens / seconds, 1),
        "failed": counters.failed,
    }


def run_eval(prm: Path, problems: int, out: Path, device: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    args = [sys.executable, "-m", "cli", "eval", "--problems", f"arith-heldout:{problems}"]
    args += ["--strategies", "greedy,best-of-n", "--n", "4", "--prm", str(prm), "--out", str(out)]
    args += ["--no-baseline"]  # a device check, not a PRM comparison: one scorer
    start = time.perf_counter()
    proc = subprocess.run(args + ["-q"], capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: amcs eval failed: {proc.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    cells = {f"{r['strategy']}@{r['n']}": r["accuracy"] for r in results["results"]}
    return {"seconds": round(seconds, 2), "accuracy": cells, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run every step on the CPU, small")
    parser.add_argument("--out", type=Path, default=None, help="folder for the table and JSON")
    args = parser.parse_args(argv)

    import torch

    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; pass --cpu to run the check on the CPU", file=sys.stderr)
        return 2
    small = args.cpu
    n_device, n_cpu = (6, 6) if small else (256, 32)
    max_new = 120 if small else 512
    out = args.out or Path(tempfile.mkdtemp(prefix="amcs-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}

    problems = arith_problems(n_device, seed=123)
    data = out / "gen-device.jsonl"
    for p in (
        data,
        out / "gen-device.meta.jsonl",
        out / "gen-cpu.jsonl",
        out / "gen-cpu.meta.jsonl",
    ):
        p.unlink(missing_ok=True)
    report["generate_device"] = asyncio.run(generate_on(device, problems, data, max_new))
    report["generate_cpu"] = asyncio.run(
        generate_on("cpu", problems[:n_cpu], out / "gen-cpu.jsonl", max_new)
    )

    rows = load_prm_rows(data)
    start = time.perf_counter()
    steps = 10 if small else 300
    metrics = train_prm(
        rows,
        TINY_POLICY,
        out / "prm",
        PRMTrainingConfig(
            max_steps=steps,
            per_device_train_batch_size=8 if small else 64,
            max_length=256,
            bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
            eval_fraction=0.1,
        ),
    )
    seconds = time.perf_counter() - start
    report["train"] = {
        "rows": len(rows),
        "steps": metrics["train_steps"],
        "seconds": round(seconds, 2),
        "steps_per_s": round(metrics["train_steps"] / seconds, 2),
        "train_loss": round(metrics["train_loss"], 4),
        "bf16": device == "cuda",
    }
    report["eval"] = run_eval(out / "prm", 6 if small else 100, out / "eval", device)

    g, c = report["generate_device"], report["generate_cpu"]
    ratio = g["tokens_per_s"] / max(c["tokens_per_s"], 1e-9)
    t, e = report["train"], report["eval"]
    accuracy = ", ".join(f"{k} {v:.1%}" for k, v in e["accuracy"].items())
    table = [
        f"gpu_check on {report['device']}",
        "",
        "| step | what | result | seconds |",
        "|---|---|---|---|",
        f"| generate ({device}) | {g['problems']} arith problems, AMCS | "
        f"{g['tokens_per_s']:,.0f} tokens/s, {g['rollouts']:,} rollouts, {g['failed']} failed "
        f"| {g['seconds']} |",
        f"| generate (cpu) | first {c['problems']} of them | {c['tokens_per_s']:,.0f} tokens/s "
        f"| {c['seconds']} |",
        f"| generate ratio | {device} / cpu tokens/s | {ratio:.2f}x | |",
        f"| train ({'bf16' if t['bf16'] else 'fp32'}) | tiny PRM on {t['rows']} paths | "
        f"{t['steps']} steps, {t['steps_per_s']} steps/s, loss {t['train_loss']} | {t['seconds']} |",
        f"| eval | {e['problems']} held-out problems | {accuracy} | {e['seconds']} |",
    ]
    text = "\n".join(table)
    print(text)
    (out / "gpu_check.md").write_text(text + "\n")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out / 'gpu_check.md'} and gpu_check.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
