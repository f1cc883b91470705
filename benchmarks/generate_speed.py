"""Generated tokens/s of `amcs generate` on a real instruct model, hf backend against vLLM's CPU
server, side by side in one run.

    recipes/smollm2-135m/prepare_model.sh     # once: SmolLM2-135M-Instruct (~1 min)
    tests/servers/prepare_vllm.sh             # once: vLLM's CPU build (~6 min)
    uv run python benchmarks/generate_speed.py [--limit 8] [--rounds 1] [--modes hf,hf-fast,vllm]

The workload is the recipe's (`recipes/smollm2-135m/generate.yaml`: its problems, search settings
and seed), the first --limit problems, labelled by the same engine three ways:

- ``hf``: the hf backend as `amcs generate` runs it by default on CPU (deterministic decoding);
- ``hf-fast``: the hf backend with ``--no-deterministic`` (plain batched kernels);
- ``vllm``: vLLM's CPU server (prefix caching on, all cores, up to 64 sequences at once) through
  the openai backend, as `amcs generate --backend openai --url ...` runs it.

Each mode's model loads (and the server starts) before its clock starts, and one short request
warms it up. The modes run in turn, --rounds times, and the table keeps each mode's best round, so
load from other processes hits them alike; the machine's load average is printed with every run.
The modes sample different tokens (different arithmetic), so the figure compared is generated
tokens per second of wall time, with the ratio to vLLM. Writes
benchmarks/results/generate_speed.json.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
from amcs.backends.base import SamplingParams  # noqa: E402
from amcs.grading import Grader  # noqa: E402
from amcs.problems import load_problems  # noqa: E402
from amcs.prompts import prompt_ids  # noqa: E402
from amcs.recipes import load_recipe  # noqa: E402
from amcs.scheduler import RunCounters, generate_to_file  # noqa: E402
from amcs.search import make_config  # noqa: E402
from tests.servers import server_env_python, start_vllm  # noqa: E402

RECIPE = ROOT / "recipes" / "smollm2-135m" / "generate.yaml"
PREPARE = ROOT / "recipes" / "smollm2-135m" / "prepare_model.sh"
MODES = ("hf", "hf-fast", "vllm")


def model_dir() -> str:
    done = subprocess.run(["bash", str(PREPARE)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr.strip() or "prepare_model.sh failed")
    return done.stdout.strip().splitlines()[-1]


async def open_backend(mode: str, model: str, url: str | None):
    if mode == "vllm":
        from amcs.backends.http import OpenAICompletionsBackend

        backend = OpenAICompletionsBackend(url, model, model)
        await backend.start()
    else:
        from amcs.backends.hf import HFBackend

        backend = HFBackend(model, deterministic=mode == "hf")
    warm = prompt_ids(backend.tokenizer, "What is 1 + 1?")
    await backend.sample(warm, 1, SamplingParams(max_new_tokens=8, seed=0))
    return backend


async def one_run(mode: str, model: str, url: str | None, problems, config, seed: int) -> dict:
    backend = await open_backend(mode, model, url)
    counters = RunCounters()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with Grader(max_workers=2) as grader:
                load = os.getloadavg()[0]
                start = time.perf_counter()
                await generate_to_file(
                    problems,
                    backend,
                    grader,
                    config,
                    Path(tmp) / "d.jsonl",
                    model_name=model,
                    seed=seed,
                    counters=counters,
                )
                seconds = time.perf_counter() - start
    finally:
        await backend.aclose()
    return {
        "mode": mode,
        "seconds": round(seconds, 1),
        "problems": counters.done,
        "failed": counters.failed,
        "rollouts": counters.rollouts,
        "tokens": counters.tokens,
        "tokens_per_s": round(counters.tokens / seconds, 2),
        "labels": [counters.labels_positive, counters.labels_negative],
        "cache_hit_ratio": None
        if counters.cache_hit_ratio is None
        else round(counters.cache_hit_ratio, 3),
        "load_average_at_start": round(load, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=8, help="problems of the recipe's set")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], help="search KEY=VALUE over the recipe's"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/generate_speed.json")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")
    if "vllm" in modes and server_env_python() is None:
        sys.exit("no vLLM CPU environment: run tests/servers/prepare_vllm.sh first")
    model = model_dir()
    recipe = load_recipe(RECIPE)
    search = dict(recipe.get("search") or {})
    for item in args.sets:
        key, _, value = item.partition("=")
        search[key] = yaml.safe_load(value)
    config = make_config(recipe.get("method", "amcs"), **search)
    problems = load_problems(ROOT / recipe["problems"], limit=args.limit)
    seed = int(recipe.get("seed", 0))
    runs: list[dict] = []
    for round_no in range(args.rounds):
        for mode in modes:
            server = None
            if mode == "vllm":
                server = start_vllm(
                    model, max_model_len=2048, threads=os.cpu_count() or 1, max_num_seqs=64
                )
            try:
                row = asyncio.run(
                    one_run(mode, model, server.url if server else None, problems, config, seed)
                )
            finally:
                if server is not None:
                    server.stop()
            row["round"] = round_no
            runs.append(row)
            print(
                f"round {round_no} {mode:8} {row['seconds']:7.1f} s {row['tokens']:7,} tokens "
                f"{row['tokens_per_s']:6.1f} tokens/s  problems {row['problems']} "
                f"(failed {row['failed']}), labels +/- {row['labels'][0]}/{row['labels'][1]}, "
                f"load {row['load_average_at_start']}",
                flush=True,
            )
    best = {
        m: max((r for r in runs if r["mode"] == m), key=lambda r: r["tokens_per_s"]) for m in modes
    }
    print(f"\nbest round per mode ({len(problems)} problems of {RECIPE.relative_to(ROOT)}):")
    print("| mode | tokens/s | ratio to vllm | seconds | tokens |")
    print("|---|---:|---:|---:|---:|")
    for mode, row in best.items():
        ratio = (
            f"{row['tokens_per_s'] / best['vllm']['tokens_per_s']:.2f}" if "vllm" in best else "-"
        )
        print(
            f"| {mode} | {row['tokens_per_s']:.1f} | {ratio} | {row['seconds']:.0f} | "
            f"{row['tokens']:,} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "recipe": str(RECIPE.relative_to(ROOT)),
                "problems": len(problems),
                "search": config.to_dict(),
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
