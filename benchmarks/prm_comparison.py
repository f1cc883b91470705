"""The paper's downstream comparison, with error bars: PRMs trained the same way on amcs, omegaprm
and shepherd data at several generation budgets and several seeds, scored by step-level F1 and by
best-of-16 / weighted-vote@16 accuracy on the same held-out problems.

    uv run python benchmarks/prm_comparison.py                 # the full run (hours on a CPU)
    uv run python benchmarks/prm_comparison.py --quick --work /tmp/w --results /tmp/r

1. Data, once per (method, seed) stream: the tiny policy labels training problems drawn with
   that seed (recipes/tiny-arith's generate settings, sampling at DATA_TEMPERATURE of
   amcs.assets.tiny_arith; amcs with the recipe's search settings, omegaprm and shepherd with k=16
   and the recipe's max_new_tokens), searched with that seed, in chunks until the committed tokens reach the
   largest budget. Each budget cuts the same stream: the longest prefix of problems (file order)
   whose generated tokens fit the budget (amcs.records.within_budget); failed problems cost
   their tokens and give no rows.
2. Training: each cut trains a PRM the way recipes/tiny-arith/train_prm.py does
   (amcs.assets.tiny_arith.train; seed = the stream's seed) over the tiny policy as frozen base, or over --base (e.g. the bundled PRM's
   base, tiny-prm-work/base: then the base's own confidence is a reference row too).
3. Scoring, the same for every PRM: ProcessBench's step F1 (threshold 0.5) on the recipe's 500
   held-out tiny-policy solutions, and best-of-16 / weighted-vote@16 on one cached pool of 16
   tiny-policy samples per held-out problem (recipes/tiny-arith/eval.yaml's temperature,
   max_new_tokens, aggregation and seed; the samples `amcs eval` draws for n=16), with the same
   choice rules as amcs.verification (majority_choice, best_index, weighted_choice). Reference rows: majority@16 and the pool's oracle
   (any sample right), and the training-free policy-confidence scorer.

Everything resumes: data files continue, the step-eval set and the pool are cached, and each
finished cell (method, seed, budget, base) is a line of WORK/cells.jsonl that a rerun skips. A cell's
PRM is deleted once scored unless --keep-prms. Writes RESULTS/prm_comparison.{json,md,png}.
Set OMP_WAIT_POLICY=PASSIVE when other processes share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import amcs.assets.tiny_arith as tiny_arith
from amcs.grading import extract_answer
from amcs.recipes import load_recipe
from amcs.records import committed_tokens, within_budget
from amcs.verification import (
    Candidate,
    aggregate,
    best_index,
    majority_choice,
    weighted_choice,
)

ROOT = Path(__file__).resolve().parents[1]

METHODS = {"amcs": {}, "omegaprm": {"k": 16}, "shepherd": {"k": 16}}
DEFAULTS = {
    "methods": "amcs,omegaprm,shepherd",
    "seeds": "0,1,2",
    "budgets": "100000,500000,750000,1000000,1500000",
    "pool_problems": 200,
    "step_problems": tiny_arith.STEP_EVAL["problems"],
}
QUICK = {
    "methods": "amcs",
    "seeds": "0",
    "budgets": "3000,6000",
    "pool_problems": 4,
    "step_problems": 20,
}
N = 16  # samples per pool problem: best-of-16, weighted-vote@16, majority@16
CHUNK = 256  # most problems searched per generation call
MIN_CHUNK = 64  # fewest (one batch of the recipe's concurrency)
METRICS = ("f1", "best_of_16", "weighted_vote_16")
POLICY_CONFIDENCE = "policy-confidence"
BASE_CONFIDENCE = "base-confidence"  # the same, read from --base


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- data: one stream per (method, seed), cut at each budget ---------------------------------------


def problem_pool(n: int, seed: int) -> list:
    """The first n training problems of draw `seed` (tiny_arith.training_problems drops held-out
    expressions, so it may return fewer than asked; the draw is prefix-stable)."""
    ask = n + n // 20 + 10
    while len(pool := tiny_arith.training_problems(ask, seed=seed)) < n:
        ask *= 2
    return pool[:n]


def next_chunk(spent: int, searched: int, target: int) -> int:
    """Problems to search next: enough for the tokens still missing at the tokens per problem
    seen so far (+10 %), between MIN_CHUNK and CHUNK."""
    if searched == 0 or spent == 0:
        return MIN_CHUNK
    need = -(-(target - spent) * searched * 11 // (spent * 10))  # ceil, in integers
    return max(MIN_CHUNK, min(CHUNK, need))


async def generate_stream(out: Path, method: str, seed: int, target: int, timing: Path) -> None:
    """Label problems of draw `seed` with `method`, searched with seed `seed`, until the file's
    committed tokens reach `target`, chunk by chunk with tiny_arith.generate_data on one backend.
    Appends each chunk's seconds to `timing`."""
    from amcs.assets import TINY_POLICY
    from amcs.backends.hf import HFBackend

    spent, searched = committed_tokens(out)
    if spent >= target:
        return
    backend = HFBackend(TINY_POLICY, max_batch_size=128)
    try:
        while spent < target:
            start = time.monotonic()
            problems = problem_pool(searched + next_chunk(spent, searched, target), seed)
            await tiny_arith.generate_data(
                out, problems, method, seed=seed, backend=backend, **METHODS[method]
            )
            seconds = time.monotonic() - start
            before = spent
            spent, searched = committed_tokens(out)
            with timing.open("a") as f:
                f.write(json.dumps({"stream": out.stem, "tokens": spent, "seconds": seconds}))
                f.write("\n")
            log(
                f"generate {out.stem}: {searched:,} problems, {spent:,}/{target:,} tokens, "
                f"{seconds:.0f} s"
            )
            if spent == before:
                raise SystemExit(f"{out}: a chunk added no tokens; is every problem failing?")
    finally:
        await backend.aclose()


def stream_seconds(timing: Path) -> dict[str, float]:
    """Generation seconds per stream, summed over every run that extended it."""
    totals: dict[str, float] = {}
    if timing.exists():
        for line in timing.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                totals[r["stream"]] = totals.get(r["stream"], 0.0) + r["seconds"]
    return totals


# --- the held-out sets: step-eval solutions and the candidate pool ---------------------------------


def step_examples(work: Path, problems: int) -> list:
    """the recipe's step-eval solutions (the first `problems` held-out problems with the same
    settings when fewer than the recipe's), cached in WORK."""
    from amcs.stepeval import exact_step_examples, read_step_examples, write_step_examples

    path = work / f"step-eval-{problems}.jsonl"
    if path.exists():
        return read_step_examples(path)
    start = time.monotonic()
    if problems == tiny_arith.STEP_EVAL["problems"]:
        examples = asyncio.run(tiny_arith.step_eval_examples())
    else:
        from amcs.assets import TINY_POLICY
        from amcs.backends.hf import HFBackend
        from amcs.domains.arith import held_out_problems

        async def draw() -> list:
            backend = HFBackend(TINY_POLICY, max_batch_size=128)
            try:
                return await exact_step_examples(
                    backend,
                    held_out_problems(problems),
                    temperature=tiny_arith.STEP_EVAL["temperature"],
                    seed=tiny_arith.STEP_EVAL["seed"],
                )
            finally:
                await backend.aclose()

        examples = asyncio.run(draw())
    write_step_examples(path, examples)
    log(f"step-eval set: {len(examples)} solutions, {time.monotonic() - start:.0f} s")
    return examples


def eval_settings() -> dict:
    """Sampling and aggregation of recipes/tiny-arith/eval.yaml (what `amcs eval` uses)."""
    recipe = load_recipe(tiny_arith.RECIPE / "eval.yaml")
    verify = recipe["verify"]
    return {
        "temperature": float(verify["temperature"]),
        "max_new_tokens": int(verify["max_new_tokens"]),
        "aggregation": verify["aggregation"],
        "seed": int(recipe.get("seed", 0)),
    }


def candidate_pool(work: Path, problems: int) -> list[dict]:
    """N samples per held-out problem, their steps, answers and grades; cached (and extended) in
    WORK/pool.jsonl. The samples are those `amcs eval` draws for majority/best-of-n/weighted vote
    at n=N: one request seeded as verification's first call (``Run.sample``)."""
    from amcs.problems import arith_problems

    path = work / "pool.jsonl"
    cached = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    wanted = arith_problems(problems, held_out=True)
    have = {r["problem_id"] for r in cached}
    todo = [p for p in wanted if p.id not in have]
    if todo:
        start = time.monotonic()
        with path.open("a") as f:
            for record in asyncio.run(_sample_pool(todo)):
                f.write(json.dumps(record) + "\n")
                cached.append(record)
        log(f"pool: {len(todo)} problems x {N} samples, {time.monotonic() - start:.0f} s")
    by_id = {r["problem_id"]: r for r in cached}
    return [by_id[p.id] for p in wanted]


async def _sample_pool(problems: list) -> list[dict]:
    from amcs.assets import TINY_POLICY
    from amcs.backends.base import SamplingParams
    from amcs.backends.hf import HFBackend
    from amcs.grading import Grader
    from amcs.prompts import prompt_ids
    from amcs.seeds import derive_seed
    from amcs.steps import split_steps

    settings = eval_settings()
    backend = HFBackend(TINY_POLICY, max_batch_size=128)
    try:
        async with Grader(max_workers=1) as grader:

            async def one(problem) -> dict:
                params = SamplingParams(
                    temperature=settings["temperature"],
                    max_new_tokens=settings["max_new_tokens"],
                    seed=derive_seed(settings["seed"], problem.question, 0, separator="\x00"),
                )
                ids = prompt_ids(backend.tokenizer, problem.question)
                rollouts = await backend.sample(ids, N, params)
                candidates = []
                for r in rollouts:
                    answer = extract_answer(r.text)
                    candidates.append(
                        {
                            "text": r.text,
                            "steps": split_steps(r.text),
                            "answer": answer,
                            # as amcs eval grades a strategy's answer (fast path, then math-verify)
                            "correct": await grader.equivalent(answer, problem.answer),
                            "tokens": r.num_tokens,
                        }
                    )
                return {
                    "problem_id": problem.id,
                    "question": problem.question,
                    "reference": problem.answer,
                    "candidates": candidates,
                }

            return list(await asyncio.gather(*(one(p) for p in problems)))
    finally:
        await backend.aclose()


# --- choosing an answer from a pool (amcs.verification's rules) ------------------------------------


def pool_choices(answers: Sequence[str | None], scores: Sequence[float]) -> dict[str, int | None]:
    """The sample majority@N, best-of-N and weighted-vote@N choose from one pool problem, by
    amcs.verification's own rules (the answers and aggregated scores as its candidates)."""
    candidates = [Candidate("", a, s) for a, s in zip(answers, scores, strict=True)]
    return {
        "majority": majority_choice(candidates)[0],
        "best-of-n": best_index(candidates),
        "weighted-vote": weighted_choice(candidates)[0],
    }


def pool_accuracy(
    pool: Sequence[dict],
    step_scores: Sequence[Sequence[Sequence[float]]] | None,
    aggregation: str = "min",
) -> dict[str, float]:
    """Accuracy over the pool's problems: with step scores (per problem, per candidate) best-of-N
    and weighted-vote@N; without, majority@N and the oracle (any candidate right)."""
    if not pool:
        return {}
    if step_scores is None:
        hits = {"majority_16": 0, "oracle_16": 0}
        for problem in pool:
            cands = problem["candidates"]
            pick = pool_choices([c["answer"] for c in cands], [0.0] * len(cands))["majority"]
            hits["majority_16"] += pick is not None and cands[pick]["correct"]
            hits["oracle_16"] += any(c["correct"] for c in cands)
    else:
        hits = {"best_of_16": 0, "weighted_vote_16": 0}
        for problem, per_candidate in zip(pool, step_scores, strict=True):
            cands = problem["candidates"]
            answers = [c["answer"] for c in cands]
            scores = [aggregate(s, aggregation) for s in per_candidate]
            picks = pool_choices(answers, scores)
            for key, rule in (("best_of_16", "best-of-n"), ("weighted_vote_16", "weighted-vote")):
                pick = picks[rule]
                hits[key] += pick is not None and cands[pick]["correct"]
    return {k: v / len(pool) for k, v in hits.items()}


def score_pool(scorer, pool: Sequence[dict]) -> list[list[list[float]]]:
    """Step scores of every candidate of every pool problem, in one score_batch call."""
    items = [(p["question"], c["steps"]) for p in pool for c in p["candidates"]]
    flat = iter(scorer.score_batch(items))
    return [[next(flat) for _ in p["candidates"]] for p in pool]


# --- seeds to table rows, verdict ---------------------------------------------------------------


def spread(values: Sequence[float]) -> dict:
    """mean, min and max over seeds (n: how many)."""
    values = [float(v) for v in values]
    return {
        "mean": math.fsum(values) / len(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


MEAN_ONLY = (
    "tokens",
    "problems",
    "paths",
    "labelled_steps",
    "negative_steps",
    "train_seconds",
    "generation_seconds",
)


def summarize(cells: Sequence[dict]) -> list[dict]:
    """Per (method, budget), over seeds: mean/min/max of F1, best-of-16 and weighted-vote@16,
    and the means of tokens, data sizes and seconds."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["method"], cell["budget"]), []).append(cell)
    order = {m: i for i, m in enumerate(METHODS)}
    rows = []
    for (method, budget), group in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0])
    ):
        row = {"method": method, "budget": budget, "seeds": sorted(c["seed"] for c in group)}
        for metric in METRICS:
            row[metric] = spread([c[metric] for c in group])
        for key in MEAN_ONLY:
            row[key] = math.fsum(c[key] for c in group) / len(group)
        rows.append(row)
    return rows


def verdict(aggregates: Sequence[dict], metric: str = "f1", ours: str = "amcs") -> list[str]:
    """One line per budget: `ours` mean minus each other method's mean, and whether the seed
    ranges overlap."""
    by = {(a["method"], a["budget"]): a[metric] for a in aggregates}
    lines = []
    for budget in sorted({b for m, b in by if m == ours}):
        mine = by[(ours, budget)]
        parts = []
        for other in [m for m in METHODS if m != ours] + sorted({m for m, _ in by} - set(METHODS)):
            theirs = by.get((other, budget))
            if theirs is None:
                continue
            d = mine["mean"] - theirs["mean"]
            apart = mine["min"] > theirs["max"] or theirs["min"] > mine["max"]
            if min(mine["n"], theirs["n"]) < 2:
                note = "one seed: no range"
            else:
                note = "ranges do not overlap" if apart else "within seed range"
            if d == 0:
                parts.append(f"{ours} ties {other} ({note})")
            else:
                word = "beats" if d > 0 else "trails"
                parts.append(f"{ours} {word} {other} by {abs(d):.3f} ({note})")
        if parts:
            lines.append(f"{metric} at {budget:,} tokens: " + "; ".join(parts))
    return lines


def _fmt(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['min']:.3f}–{s['max']:.3f}]"


def markdown(result: dict) -> str:
    setup = result["setup"]
    lines = [
        f"PRMs trained the same way (recipes/tiny-arith/train_prm.py, frozen base: "
        f"{setup.get('base', 'the tiny policy')}) on data cut from one "
        f"generation stream per (method, seed); seeds {setup['seeds']}. Step F1 (threshold 0.5) on "
        f"{setup['step_eval_solutions']} held-out tiny-policy solutions; best-of-16 and "
        f"weighted-vote@16 ({setup['aggregation']} aggregation) on {setup['pool_problems']} "
        f"held-out problems x 16 tiny-policy samples, the same pool for every PRM. "
        "Mean [min–max] over seeds.",
        "",
        "| method | budget | tokens (mean) | F1 mean [min–max] | best-of-16 mean [min–max] "
        "| weighted-vote@16 mean [min–max] |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for a in result["aggregates"]:
        lines.append(
            f"| {a['method']} | {a['budget']:,} | {a['tokens']:,.0f} | {_fmt(a['f1'])} "
            f"| {_fmt(a['best_of_16'])} | {_fmt(a['weighted_vote_16'])} |"
        )
    ref = result["reference"]
    if "majority_16" in ref:
        lines.append(f"| majority@16 (no PRM) | – | – | – | {ref['majority_16']:.3f} | – |")
        lines.append(f"| pool oracle (any of 16 right) | – | – | – | {ref['oracle_16']:.3f} | – |")
    for name in (POLICY_CONFIDENCE, BASE_CONFIDENCE):
        pc = ref.get(name)
        if isinstance(pc, dict) and "f1" in pc:
            lines.append(
                f"| {name} (no training) | – | – | {pc['f1']:.3f} "
                f"| {pc['best_of_16']:.3f} | {pc['weighted_vote_16']:.3f} |"
            )
        elif pc:
            lines.append(f"| {name} | skipped: {pc} | | | | |")
    lines += [
        "",
        "Reference rows use no trained PRM; majority@16 and the oracle sit in the best-of-16 "
        "column. policy-confidence scores steps by the policy's own lowest token probability"
        + (", base-confidence by the base's." if BASE_CONFIDENCE in ref else "."),
        "",
        "| method | budget | problems | paths | steps | negative steps | train s | generation s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in result["aggregates"]:
        lines.append(
            f"| {a['method']} | {a['budget']:,} | {a['problems']:,.0f} | {a['paths']:,.0f} "
            f"| {a['labelled_steps']:,.0f} | {a['negative_steps']:,.0f} "
            f"| {a['train_seconds']:,.0f} | {a['generation_seconds']:,.0f} |"
        )
    lines += [
        "",
        "Data sizes and seconds are means over seeds; generation seconds are the "
        "stream's, prorated by the tokens the cut kept.",
        "",
    ]
    lines += [f"- {v}" for v in result["verdict"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ref = result["reference"]
    pc = ref.get(POLICY_CONFIDENCE) if isinstance(ref.get(POLICY_CONFIDENCE), dict) else None
    for ax, metric, title in (
        (axes[0], "f1", "step F1 (threshold 0.5)"),
        (axes[1], "best_of_16", "best-of-16 accuracy"),
    ):
        for method in dict.fromkeys(a["method"] for a in result["aggregates"]):
            rows = sorted(
                (a for a in result["aggregates"] if a["method"] == method),
                key=lambda a: a["tokens"],
            )
            x = [a["tokens"] for a in rows]
            mean = [a[metric]["mean"] for a in rows]
            lo = [a[metric]["min"] for a in rows]
            hi = [a[metric]["max"] for a in rows]
            (line,) = ax.plot(x, mean, marker="o", label=method)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
        if pc is not None:
            ax.axhline(pc[metric], color="gray", ls=":", label=f"{POLICY_CONFIDENCE}")
        if isinstance(ref.get(BASE_CONFIDENCE), dict):
            ax.axhline(ref[BASE_CONFIDENCE][metric], color="purple", ls=":", label=BASE_CONFIDENCE)
        if metric == "best_of_16" and "majority_16" in ref:
            ax.axhline(ref["majority_16"], color="black", ls="--", label="majority@16")
            ax.axhline(ref["oracle_16"], color="black", ls="-.", label="pool oracle")
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens of the training data")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("PRMs trained on each method's data: mean and min–max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- cells -----------------------------------------------------------------------------------------


def read_cells(path: Path) -> list[dict]:
    """Finished cells; a line torn by a crash is ignored (and overwritten by the next append)."""
    if not path.exists():
        return []
    cells = []
    for line in path.read_text().splitlines():
        try:
            cells.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return cells


def append_cell(path: Path, cell: dict) -> None:
    text = path.read_text() if path.exists() else ""
    if text and not text.endswith("\n"):  # a torn last line: drop it
        path.write_text(text[: text.rfind("\n") + 1])
    with path.open("a") as f:
        f.write(json.dumps(cell) + "\n")
        f.flush()
        os.fsync(f.fileno())


def cell_key(cell: dict) -> tuple:
    return (
        cell["method"],
        cell["seed"],
        cell["budget"],
        cell["pool_problems"],
        cell["step_eval"],
        cell.get("base"),  # None: the tiny policy
    )


def score_scorer(scorer, examples, pool, aggregation: str) -> dict:
    """Step F1 on ``examples``, best-of-16 and weighted-vote@16 on ``pool``."""
    from amcs.stepeval import step_report

    report = step_report(tiny_arith.step_scores(scorer, examples), [e.label for e in examples])
    accuracy = pool_accuracy(pool, score_pool(scorer, pool), aggregation)
    return {
        "f1": report["f1"],
        "a1_erroneous": report["a1_erroneous"],
        "a2_correct": report["a2_correct"],
        "best_threshold": report["best_threshold"],
    } | accuracy


def run_cell(
    work: Path,
    method: str,
    seed: int,
    budget: int,
    examples,
    pool,
    settings,
    keep: bool,
    base: Path | None = None,
) -> dict:
    """Cut the (method, seed) stream at ``budget``, train a PRM on the cut over ``base``
    (default: the tiny policy) and score it."""
    from amcs.prm import load_prm

    data = work / f"{method}-s{seed}.jsonl"
    name = f"{method}-s{seed}-b{budget}" + (f"-{base.name}" if base else "")
    rows, spent, problems, failed = within_budget(data, budget)
    if not rows:
        raise SystemExit(f"{name}: the budget holds no labelled path of {data}; raise it")
    cut = work / f"cut-{name}.jsonl"
    cut.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prm_dir, train_dir = work / f"prm-{name}", work / f"train-{name}"
    for d in (prm_dir, train_dir):
        shutil.rmtree(d, ignore_errors=True)
    train_dir.mkdir(parents=True)
    start = time.monotonic()
    metrics = tiny_arith.train(
        [cut], prm_dir, train_dir, seed=seed, **({"base": base} if base else {})
    )
    train_seconds = time.monotonic() - start
    log(f"train {name}: {len(rows)} paths, {spent:,} tokens, {train_seconds:.0f} s")
    start = time.monotonic()
    scores = score_scorer(load_prm(prm_dir), examples, pool, settings["aggregation"])
    score_seconds = time.monotonic() - start
    log(
        f"score {name}: F1 {scores['f1']:.3f}, best-of-16 {scores['best_of_16']:.3f}, "
        f"weighted-vote@16 {scores['weighted_vote_16']:.3f}, {score_seconds:.0f} s"
    )
    if not keep:
        for d in (prm_dir, train_dir):
            shutil.rmtree(d, ignore_errors=True)
        cut.unlink()
    return {
        "method": method,
        "seed": seed,
        "budget": budget,
        "pool_problems": len(pool),
        "step_eval": len(examples),
        "base": str(base) if base else None,
        "settings": METHODS[method],
        "tokens": spent,
        "problems": problems,
        "failed_problems": failed,
        "paths": len(rows),
        "labelled_steps": sum(len(r["labels"]) for r in rows),
        "negative_steps": sum(not label for r in rows for label in r["labels"]),
        "held_out_step_accuracy": metrics.get("eval_step_accuracy"),
        "train_seconds": round(train_seconds, 1),
        "score_seconds": round(score_seconds, 1),
    } | scores


def policy_confidence(examples, pool, settings, model: Path | None = None) -> dict | str:
    """The training-free baseline's scores (the policy's confidence, or ``model``'s), or why it
    was skipped."""
    try:
        from amcs.prm import load_policy_confidence
    except ImportError:
        return "amcs.prm.load_policy_confidence is not in this checkout"
    from amcs.assets import TINY_POLICY

    start = time.monotonic()
    scores = score_scorer(
        load_policy_confidence(model or TINY_POLICY), examples, pool, settings["aggregation"]
    )
    log(
        f"score {POLICY_CONFIDENCE} of {model or 'the policy'}: F1 {scores['f1']:.3f}, {time.monotonic() - start:.0f} s"
    )
    return scores | {"seconds": round(time.monotonic() - start, 1)}


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", help=f"default {DEFAULTS['methods']}")
    ap.add_argument("--seeds", help=f"default {DEFAULTS['seeds']}")
    ap.add_argument("--budgets", help=f"generated tokens, default {DEFAULTS['budgets']}")
    ap.add_argument("--pool-problems", type=int, help="held-out problems x 16 samples, default 200")
    ap.add_argument(
        "--step-problems",
        type=int,
        help="held-out problems of the step-eval set, "
        f"default {DEFAULTS['step_problems']} (the recipe's)",
    )
    ap.add_argument("--work", type=Path, default=Path("prm-comparison-work"))
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: up to 2); e.g. 1 each for two runs with disjoint --seeds "
        "or --methods in their own --work",
    )
    ap.add_argument(
        "--base",
        type=Path,
        default=None,
        help="the PRMs' frozen base (default: the tiny policy), e.g. tiny-prm-work/base, the "
        "bundled PRM's; its cells are kept apart from other bases' in --work",
    )
    ap.add_argument("--keep-prms", action="store_true", help="keep each cell's PRM and cut data")
    ap.add_argument("--quick", action="store_true", help="tiny defaults: " + json.dumps(QUICK))
    args = ap.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    seeds, budgets = parse_ints(args.seeds), sorted(parse_ints(args.budgets))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    settings = eval_settings()
    examples = step_examples(work, args.step_problems)
    pool = candidate_pool(work, args.pool_problems)
    cells_path, timing = work / "cells.jsonl", work / "generation.jsonl"
    done = {cell_key(c): c for c in read_cells(cells_path)}

    ref_key = (POLICY_CONFIDENCE, None, None, len(pool), len(examples), None)
    if ref_key not in done:
        pc = policy_confidence(examples, pool, settings)
        if isinstance(pc, str):
            log(f"{POLICY_CONFIDENCE}: skipped ({pc})")
        else:
            cell = {
                "method": POLICY_CONFIDENCE,
                "seed": None,
                "budget": None,
                "pool_problems": len(pool),
                "step_eval": len(examples),
            } | pc
            append_cell(cells_path, cell)
            done[ref_key] = cell
    pc = done.get(ref_key, "amcs.prm.load_policy_confidence is not in this checkout")
    base = str(args.base.resolve()) if args.base else None  # one key however it is spelled
    base_key = (BASE_CONFIDENCE, None, None, len(pool), len(examples), base)
    if base and base_key not in done:
        scores = policy_confidence(examples, pool, settings, args.base)
        if isinstance(scores, dict):
            cell = {
                "method": BASE_CONFIDENCE,
                "seed": None,
                "budget": None,
                "pool_problems": len(pool),
                "step_eval": len(examples),
                "base": base,
            } | scores
            append_cell(cells_path, cell)
            done[base_key] = cell

    cells = []
    # Seed by seed, so an interrupted run has whole seeds (all methods) to report.
    for seed in seeds:
        for method in methods:
            data = work / f"{method}-s{seed}.jsonl"
            keys = [(method, seed, b, len(pool), len(examples), base) for b in budgets]
            if any(k not in done for k in keys):
                asyncio.run(generate_stream(data, method, seed, budgets[-1], timing))
            stream_tokens, _ = committed_tokens(data)
            gen_seconds = stream_seconds(timing).get(data.stem, 0.0)
            for budget, key in zip(budgets, keys, strict=True):
                if key not in done:
                    cell = run_cell(
                        work,
                        method,
                        seed,
                        budget,
                        examples,
                        pool,
                        settings,
                        args.keep_prms,
                        Path(base) if base else None,
                    )
                    append_cell(cells_path, cell)
                    done[key] = cell
                cell = dict(done[key])
                # The stream's generation seconds, prorated by the tokens this cut kept.
                cell["generation_seconds"] = round(
                    gen_seconds * cell["tokens"] / stream_tokens if stream_tokens else 0.0, 1
                )
                cells.append(cell)

    aggregates = summarize(cells)
    reference = pool_accuracy(pool, None)
    reference[POLICY_CONFIDENCE] = pc
    if base_key in done:
        reference[BASE_CONFIDENCE] = done[base_key]
    result = {
        "setup": {
            "methods": {m: METHODS[m] for m in methods},
            "seeds": seeds,
            "budgets": budgets,
            "pool_problems": len(pool),
            "samples_per_problem": N,
            "step_eval_solutions": len(examples),
            "step_eval_erroneous": sum(e.label >= 0 for e in examples),
            "data_temperature": tiny_arith.DATA_TEMPERATURE,
            "base": base or "the tiny policy",
        }
        | settings,
        "cells": cells,
        "aggregates": aggregates,
        "reference": reference,
    }
    result["verdict"] = verdict(aggregates)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "prm_comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.results / "prm_comparison.md").write_text(text)
    plot(result, args.results / "prm_comparison.png")
    print(text)
    return result


if __name__ == "__main__":
    main()
