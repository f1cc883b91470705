"""What gradient checkpointing saves and costs in PRM training: peak memory and step time of
`train_prm` with gradient_checkpointing off and on, on a randomly initialised Qwen2-shaped model
of ~100M parameters built here (no download).

    uv run python benchmarks/train_memory.py [--seq-len 1024] [--batch-sizes 1,2] [--steps 2]

The model has Qwen2.5-0.5B's layer shape (hidden 896, MLP 4864, 14 heads, 2 KV heads) and 7
layers (104M parameters); its vocabulary is the bundled tiny policy's tokenizer, so rows are real
text that goes through the whole `train_prm` path (tokenizer, PRMCollator, PRMTrainer with
prm_loss, the config as the Trainer's args). Each row holds arithmetic steps up to --seq-len
tokens (cut at a step boundary, as training cuts).

Each setting runs in a fresh subprocess and reports two memory figures, both from the resident
set size's high-water mark (VmHWM, what getrusage's ru_maxrss reports, reset through
/proc/self/clear_refs so model loading does not count):

- training peak: the highest RSS during training minus the RSS when training began. With full
  fine-tuning of a 100M model this is reached in the optimizer step (AdamW's two fp32 moments,
  8 bytes per parameter, plus its temporaries), not in the backward pass;
- forward+backward: the highest RSS during the forward and backward pass of a step after the
  first, minus the RSS when that step began: the gradients (4 bytes per parameter, the same
  with and without checkpointing) plus the activations kept for the backward pass. Two batch
  sizes separate the two: the growth per token from the smaller batch to the larger is the
  activation memory per token, with and without checkpointing.

Every setting runs with glibc's mmap threshold fixed at 64 KB (see run_setting), so freed
tensors leave the RSS. Step time: the mean wall time of the optimizer steps after the first
(which also allocates the optimizer state); on a shared machine it is noisy. Writes benchmarks/results/train_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_memory.json"
# Qwen2.5-0.5B's layer shape, 7 layers: ~104M parameters.
MODEL_SHAPE = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "num_hidden_layers": 7,
    "max_position_embeddings": 4096,
}
MB = 2**20
KB = 2**10


def build_model(folder: Path) -> int:
    """A random Qwen2 causal LM with MODEL_SHAPE and the tiny policy's tokenizer, saved to
    ``folder``; returns the parameter count of the PRM built on it (no LM head)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from amcs.assets import TINY_POLICY

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_POLICY))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **MODEL_SHAPE,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return sum(p.numel() for p in model.model.parameters())


def long_rows(n: int, seq_len: int, seed: int) -> list[dict]:
    """Rows of random arithmetic steps, each a little longer than ``seq_len`` tokens of the
    tiny tokenizer (about 13 per step), so training cuts them to just under ``seq_len``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        steps = []
        for _ in range(seq_len // 10 + 2):
            a, b = rng.randrange(100), rng.randrange(100)
            steps.append(f"{a} + {b} = {a + b}")
        labels = [rng.random() < 0.7 for _ in steps]
        rows.append({"prompt": "Add the numbers.", "completions": steps, "labels": labels})
    return rows


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(model_dir: Path, batch_size: int, seq_len: int, steps: int, checkpointing: bool):
    """One setting, in this process: train_prm for ``steps`` optimizer steps; returns the
    measurements."""
    from transformers import TrainerCallback

    from amcs.training import PRMTrainingConfig, train_prm

    class Probe(TrainerCallback):
        """Peak RSS of the whole training and of each forward + backward pass, and step times.
        The high-water mark is reset (5 into /proc/self/clear_refs, Linux >= 4.0) when training
        begins, so model loading does not count, and when each step after the first begins, so
        that the high-water mark read just before the optimizer step is the forward + backward
        pass's own: the gradients and the activations, without AdamW's moments (allocated at the
        first step) and its temporaries, which peak during the optimizer step."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.rss_start_kb = self._reset()
            self.peak_kb = 0
            self.forward_backward_kb = 0
            self.step_seconds: list[float] = []

        @staticmethod
        def _reset() -> int:
            Path("/proc/self/clear_refs").write_text("5")
            return _status_kb("VmRSS")

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step >= 1:
                self.peak_kb = max(self.peak_kb, _status_kb("VmHWM"))
                self.rss_step_kb = self._reset()
            self.started = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            if state.global_step >= 1:
                used = _status_kb("VmHWM") - self.rss_step_kb
                self.forward_backward_kb = max(self.forward_backward_kb, used)

        def on_step_end(self, args, state, control, **kwargs):
            self.step_seconds.append(time.perf_counter() - self.started)

        def on_train_end(self, args, state, control, **kwargs):
            self.peak_kb = max(self.peak_kb, _status_kb("VmHWM"))
            self.maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    probe = Probe()
    config = PRMTrainingConfig(
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        max_length=seq_len,
        gradient_checkpointing=checkpointing,
        eval_fraction=0.0,
        learning_rate=1e-5,
        logging_steps=steps,
    )
    rows = long_rows(batch_size * steps, seq_len, seed=batch_size)
    with tempfile.TemporaryDirectory(prefix="amcs-train-memory-") as out:
        train_prm(rows, str(model_dir), Path(out) / "prm", config, [probe])
    timed = probe.step_seconds[1:] or probe.step_seconds
    return {
        "batch_size": batch_size,
        "seq_len": seq_len,
        "gradient_checkpointing": checkpointing,
        "steps": len(probe.step_seconds),
        "step_seconds": sum(timed) / len(timed),
        "rss_start_mb": probe.rss_start_kb / 1024,
        "peak_above_start_mb": (probe.peak_kb - probe.rss_start_kb) / 1024,
        "forward_backward_mb": probe.forward_backward_kb / 1024,
        "ru_maxrss_mb": probe.maxrss_kb / 1024,
    }


def run_setting(model_dir: Path, batch_size: int, args, checkpointing: bool) -> dict:
    """One setting in a fresh process, so no allocator state or peak carries over."""
    command = [
        sys.executable, __file__, "--child", str(model_dir), "--batch-sizes", str(batch_size),
        "--seq-len", str(args.seq_len), "--steps", str(args.steps),
        "--checkpointing", str(int(checkpointing)),
    ]  # fmt: skip
    # A fixed mmap threshold: glibc then serves every block above 64 KB with mmap and returns it
    # to the system when freed. With its default, adaptive threshold, blocks of up to 32 MB come
    # from the heap after the first large free and stay resident when freed, so a later step
    # reuses them without the RSS growing: the activations of one batch size would be hidden
    # and those of a larger one (blocks above 32 MB) not.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 * 1024))
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"setting failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-sizes", default="1,2")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per setting (>= 2)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.child:
        result = measure(
            args.child, batch_sizes[0], args.seq_len, args.steps, bool(args.checkpointing)
        )
        print(json.dumps(result))
        return

    import torch

    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="amcs-train-memory-model-") as folder:
        parameters = build_model(Path(folder))
        print(f"model: Qwen2 shape {MODEL_SHAPE}, {parameters / 1e6:.1f}M parameters", flush=True)
        for batch_size in batch_sizes:
            for checkpointing in (False, True):
                run = run_setting(Path(folder), batch_size, args, checkpointing)
                runs.append(run)
                print(
                    f"  batch {batch_size} checkpointing={checkpointing!s:5} "
                    f"{run['step_seconds']:6.1f} s/step, peak +{run['peak_above_start_mb']:.0f} "
                    f"MB, forward+backward +{run['forward_backward_mb']:.0f} MB",
                    flush=True,
                )

    header = (
        f"{'batch':>5} {'tokens':>6} | {'training peak (MB)':>20} | "
        f"{'forward+backward (MB)':>27} | {'step time (s)':>19}\n"
        f"{'':>5} {'':>6} | {'off':>6} {'on':>6} {'on/off':>6} | {'off':>6} {'on':>6} "
        f"{'saved':>6} {'on/off':>6} | {'off':>5} {'on':>5} {'on/off':>7}"
    )
    lines = [header]
    comparisons = []
    for batch_size in batch_sizes:
        off, on = (r for r in runs if r["batch_size"] == batch_size)
        row = {
            "batch_size": batch_size,
            "tokens": batch_size * args.seq_len,
            "peak_ratio": on["peak_above_start_mb"] / off["peak_above_start_mb"],
            "forward_backward_saved_mb": off["forward_backward_mb"] - on["forward_backward_mb"],
            "forward_backward_ratio": on["forward_backward_mb"] / off["forward_backward_mb"],
            "step_time_ratio": on["step_seconds"] / off["step_seconds"],
        }
        comparisons.append(row)
        lines.append(
            f"{batch_size:>5} {row['tokens']:>6} | {off['peak_above_start_mb']:>6.0f} "
            f"{on['peak_above_start_mb']:>6.0f} {row['peak_ratio']:>6.2f} | "
            f"{off['forward_backward_mb']:>6.0f} {on['forward_backward_mb']:>6.0f} "
            f"{row['forward_backward_saved_mb']:>6.0f} {row['forward_backward_ratio']:>6.2f} | "
            f"{off['step_seconds']:>5.1f} {on['step_seconds']:>5.1f} "
            f"{row['step_time_ratio']:>7.2f}"
        )
    per_token = None
    if len(batch_sizes) >= 2:
        small, large = min(batch_sizes), max(batch_sizes)
        extra_tokens = (large - small) * args.seq_len

        def growth(checkpointing: bool) -> float:
            """Forward+backward memory added per token from the smaller to the larger batch:
            the activations (the gradients do not grow with the batch)."""
            first, last = (
                next(
                    r["forward_backward_mb"]
                    for r in runs
                    if r["batch_size"] == b and r["gradient_checkpointing"] == checkpointing
                )
                for b in (small, large)
            )
            return (last - first) * MB / KB / extra_tokens

        per_token = {"off_kb": growth(False), "on_kb": growth(True)}
        per_token["ratio"] = per_token["on_kb"] / per_token["off_kb"]
        lines.append(
            f"activations per token (forward+backward growth from batch {small} to {large}): "
            f"off {per_token['off_kb']:.0f} KB, on {per_token['on_kb']:.0f} KB, "
            f"on/off {per_token['ratio']:.2f}"
        )
    table = "\n".join(lines)
    print()
    print(table)
    report = {
        "model": {"shape": MODEL_SHAPE, "parameters": parameters, "dtype": "float32"},
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "runs": runs,
        "comparisons": comparisons,
        "activation_kb_per_token": per_token,
        "table": table,
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
