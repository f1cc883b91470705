"""Label quality per token: AMCS, OmegaPRM and Math-Shepherd audited against exact step truth.

    uv run python benchmarks/label_quality.py --quick     # a few minutes; what CI runs
    uv run python benchmarks/label_quality.py             # full: 200 problems, the whole sweep

The arithmetic domain knows whether every prefix a model writes is correct, so each method's
labels can be scored, run by the same engine on the same held-out problems with the bundled tiny
policy, over a range of budgets:

1. Budget sweep, per (method, setting): rollouts and generated tokens; labelled steps; hard-label
   accuracy (a step labelled + should have an all-correct prefix); precision and recall of the "-"
   label; first-error localisation accuracy on explored paths that contain an error; Brier score of
   the soft values against the exact truth of each prefix.
2. Oracle study: on a fixed sample of nodes (solution prefixes), P(correct answer | prefix) from
   many rollouts; every estimator's absolute error against it and the rollouts it spent.

Writes label_quality.json, label_quality.md and PNG plots under --out-dir (benchmarks/results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from amcs.assets.tiny_arith import POLICY_TRAIN_SEED, policy_training_rows
from amcs.backends.hf import HFBackend
from amcs.domains.arith import check_steps
from amcs.grading import Grader
from amcs.problems import Problem, arith_problems
from amcs.prompts import prompt_ids
from amcs.records import read_data
from amcs.scheduler import RunCounters, generate_to_file
from amcs.search import make_config
from amcs.search.context import SearchContext
from amcs.steps import StepSplitter

PROBLEM_SEED = 777
MAX_NEW_TOKENS = 160

MODES = {
    "quick": {
        "problems": 30,
        "sweep": [
            ("shepherd", {"k": 2}),
            ("shepherd", {"k": 8}),
            ("omegaprm", {"k": 8}),
            ("amcs", {}),
        ],
        "oracle_nodes": 24,
        "oracle_rollouts": 64,
        "estimators": [
            ("fixed k=4", {"estimator": "fixed", "k": 4}),
            ("fixed k=16", {"estimator": "fixed", "k": 16}),
            ("amcs", {}),
        ],
        "repeats": 1,
    },
    "full": {
        "problems": 200,
        "sweep": [("shepherd", {"k": n}) for n in (2, 4, 8, 16)]
        + [("omegaprm", {"k": k}) for k in (4, 8, 16)]
        + [
            ("amcs", {}),
            ("amcs", {"min_root_mc": 0.0}),
            ("amcs", {"eps_node": 0.1}),
            ("amcs", {"eps_node": 0.3}),
            ("amcs", {"k_max_node": 12}),
            ("amcs", {"k_max_node": 32}),
            ("amcs", {"zero_exit_upper": 0.25}),
        ],
        "oracle_nodes": 150,
        "oracle_rollouts": 256,
        "estimators": [
            ("fixed k=4", {"estimator": "fixed", "k": 4}),
            ("fixed k=8", {"estimator": "fixed", "k": 8}),
            ("fixed k=16", {"estimator": "fixed", "k": 16}),
            ("amcs", {}),
            ("amcs eps=0.1", {"eps_node": 0.1}),
            ("amcs zero_exit_upper=0.25", {"zero_exit_upper": 0.25}),
            ("amcs eps=0.1 zero_exit_upper=0.25", {"eps_node": 0.1, "zero_exit_upper": 0.25}),
        ],
        "repeats": 2,
    },
}


def held_out_problems(n: int) -> list[Problem]:
    """Arithmetic problems the tiny policy never saw in training."""
    trained = {row["prompt"] for row in policy_training_rows(3600 * 32)}
    assert POLICY_TRAIN_SEED != PROBLEM_SEED
    candidates = arith_problems(2 * n + 50, seed=PROBLEM_SEED)
    kept = [p for p in candidates if prompt_text(p) not in trained]
    return kept[:n]


def prompt_text(problem: Problem) -> str:
    return f"{problem.question}\n\n"


# --- 1. the budget sweep ------------------------------------------------------------------------


async def label_problems(backend, grader, problems, method, overrides, seed=0):
    config = make_config(method, max_new_tokens=MAX_NEW_TOKENS, **overrides)
    counters = RunCounters()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data.jsonl"
        await generate_to_file(
            problems,
            backend,
            grader,
            config,
            out,
            model_name="tiny",
            seed=seed,
            concurrency=64,
            counters=counters,
        )
        records = list(read_data(out))
    return records, counters


def audit(problems: list[Problem], records: list[dict]) -> dict:
    """Score labels against the exact checker: a prefix is correct when all its steps are."""
    expressions = {p.id: p.meta["expression"] for p in problems}
    steps = correct = positive_right = 0
    tp = fp = fn = 0  # "-" is the positive class: tp = wrong prefix labelled "-"
    brier, measured = 0.0, 0
    localised = with_error = 0
    for r in records:
        truth = check_steps(expressions[r["problem_id"]], r["completions"])
        for label, value, ok in zip(r["labels"], r["values"], truth.prefix_correct, strict=True):
            steps += 1
            correct += label == ok
            positive_right += label and ok
            tp += not label and not ok
            fp += not label and ok
            fn += label and not ok
            if value is not None:  # None: a step whose MC was not measured
                brier += (value - float(ok)) ** 2
                measured += 1
        if truth.first_error >= 0:
            with_error += 1
            predicted = next((i for i, lab in enumerate(r["labels"]) if not lab), -1)
            localised += predicted == truth.first_error
    return {
        "paths": len(records),
        "labelled_steps": steps,
        "negative_labels": tp + fp,
        "hard_label_accuracy": correct / steps if steps else None,
        "negative_precision": tp / (tp + fp) if tp + fp else None,
        "positive_precision": (positive_right / (steps - tp - fp) if steps - tp - fp else None),
        "negative_recall": tp / (tp + fn) if tp + fn else None,
        "first_error_accuracy": localised / with_error if with_error else None,
        "paths_with_error": with_error,
        "brier_vs_truth": brier / measured if measured else None,
        "measured_steps": measured,
        # Mean of the recall of each class: 0.5 for labels that ignore the truth.
        "balanced_accuracy": (
            (tp / (tp + fn) + (steps - tp - fp - fn) / (steps - tp - fn)) / 2
            if tp + fn and steps - tp - fn
            else None
        ),
        "truly_wrong_prefixes": tp + fn,
    }


# --- 1b. the consensus filter -------------------------------------------------------------------


JUDGES = ("tiny-prm", "arith-oracle")


async def consensus(problems, records, judge_name: str) -> dict:
    """The consensus filter (amcs.filter) on `records` with a judge; audit of the kept paths."""
    from amcs.filter import filter_file

    if judge_name == "arith-oracle":
        from amcs.verification import ArithOracleScorer

        judge = ArithOracleScorer()
    else:
        from amcs.assets import TINY_PRM
        from amcs.prm import load_prm

        judge = load_prm(TINY_PRM)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.jsonl", Path(tmp) / "kept.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
        stats = await filter_file(data, out, judge, judge_name=judge_name)
        kept = [json.loads(line) for line in out.read_text().splitlines()]
    await judge.aclose()
    return {"judge": judge_name, "filter": stats.to_dict()} | audit(problems, kept)


# --- 2. the oracle study ------------------------------------------------------------------------


async def sample_nodes(
    backend, grader, problems, count, seed
) -> list[tuple[Problem, list[list[int]]]]:
    """Solution prefixes from the policy's own sampled solutions: one random prefix (not the
    finished solution) from each of `count` problems."""
    rng = random.Random(seed)
    splitter = StepSplitter(backend.tokenizer)
    nodes = []
    for problem in problems:
        if len(nodes) >= count:
            break
        ctx = _context(backend, grader, problem, {"estimator": "fixed", "k": 1}, seed)
        ((rollout, _ok),) = await ctx.draw(ctx.root, 1)
        steps = splitter.split(rollout.token_ids)
        if len(steps) >= 2:
            nodes.append((problem, steps[: rng.randrange(1, len(steps))]))
    return nodes


def _context(backend, grader, problem, overrides, seed) -> SearchContext:
    config = make_config("amcs", max_new_tokens=MAX_NEW_TOKENS, rollout_budget=0, **overrides)
    return SearchContext(
        problem=problem,
        backend=backend,
        checker=grader,
        config=config,
        prompt_ids=prompt_ids(backend.tokenizer, problem.question),
        seed=seed,
        splitter=StepSplitter(backend.tokenizer),
    )


async def estimate_node(backend, grader, problem, steps, overrides, seed) -> tuple[float, int]:
    ctx = _context(backend, grader, problem, overrides, seed)
    node = ctx.child(ctx.root, steps)
    await ctx.evaluate(node)
    return node.mc, node.rollouts


async def oracle_study(backend, grader, problems, mode) -> dict:
    nodes = await sample_nodes(backend, grader, problems, mode["oracle_nodes"], seed=5)
    gate = asyncio.Semaphore(64)

    async def run(problem, steps, overrides, seed):
        async with gate:
            return await estimate_node(backend, grader, problem, steps, overrides, seed)

    oracle_k = {"estimator": "fixed", "k": mode["oracle_rollouts"]}
    oracle = await asyncio.gather(
        *(run(p, s, oracle_k, 10_000 + i) for i, (p, s) in enumerate(nodes))
    )
    text = StepSplitter(backend.tokenizer).text
    truth = [
        check_steps(p.meta["expression"], [text(x) for x in s]).prefix_correct[-1] for p, s in nodes
    ]
    estimators = {}
    for name, overrides in mode["estimators"]:
        runs = await asyncio.gather(
            *(
                run(p, s, overrides, 100 * r + i)
                for r in range(mode["repeats"])
                for i, (p, s) in enumerate(nodes)
            )
        )
        errors = [abs(mc - oracle[i % len(nodes)][0]) for i, (mc, _) in enumerate(runs)]
        estimators[name] = {
            "overrides": overrides,
            "mean_abs_error": sum(errors) / len(errors),
            "mean_rollouts_per_node": sum(n for _, n in runs) / len(runs),
            "per_node": [
                {"oracle": oracle[i % len(nodes)][0], "estimate": mc, "rollouts": n}
                for i, (mc, n) in enumerate(runs)
            ],
        }
    return {
        "nodes": len(nodes),
        "oracle_rollouts": mode["oracle_rollouts"],
        "oracle_values": [o for o, _ in oracle],
        "prefix_correct": truth,
        "estimators": estimators,
    }


# --- reporting ------------------------------------------------------------------------------------


def setting_name(method: str, overrides: dict) -> str:
    if not overrides:
        return f"{method} (default)"
    return method + " " + " ".join(f"{k}={v}" for k, v in overrides.items())


def markdown(results: dict) -> str:
    def f(x, pct=False):
        if x is None:
            return "—"
        return f"{x:.1%}" if pct else f"{x:,.3f}" if isinstance(x, float) else f"{x:,}"

    lines = [
        f"Label quality on {results['problems']} held-out arithmetic problems, tiny policy "
        f"(mode: {results['mode']}).",
        "",
        "| method | rollouts | tokens | labelled steps | hard-label acc. | '+' precision | "
        "'-' precision | '-' recall | first-error acc. | Brier (measured steps) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['setting']} | {f(r['rollouts'])} | {f(r['tokens'])} | {f(r['labelled_steps'])} | "
            f"{f(r['hard_label_accuracy'], True)} | {f(r.get('positive_precision'), True)} | "
            f"{f(r['negative_precision'], True)} | "
            f"{f(r['negative_recall'], True)} | {f(r['first_error_accuracy'], True)} | {f(r['brier_vs_truth'])} |"
        )
    if results.get("consensus"):
        lines += [
            "",
            "Consensus filter (`amcs filter`) on the AMCS default run: paths kept where the MC "
            "labels' first error and the judge's agree; labels audited on the kept paths.",
            "",
            "| judge | paths kept | '+' labels right | '-' labels right | hard-label acc. | "
            "first-error acc. | '-' labels kept |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in results["consensus"]:
            kept = c["filter"]
            lines.append(
                f"| {c['judge']} | {kept['kept']:,} of {kept['paths']:,} "
                f"({kept['kept_fraction']:.1%}) | {f(c['positive_precision'], True)} | "
                f"{f(c['negative_precision'], True)} | {f(c['hard_label_accuracy'], True)} | "
                f"{f(c['first_error_accuracy'], True)} | {f(c['negative_labels'])} |"
            )
    if "oracle" not in results:
        return "\n".join(lines) + "\n"
    o = results["oracle"]
    lines += [
        "",
        f"Oracle study: {o['nodes']} nodes, oracle = fraction correct of {o['oracle_rollouts']} rollouts.",
        "",
        "| estimator | mean abs. error | rollouts per node |",
        "|---|---|---|",
    ]
    for name, e in o["estimators"].items():
        lines.append(f"| {name} | {e['mean_abs_error']:.3f} | {e['mean_rollouts_per_node']:.1f} |")
    return "\n".join(lines) + "\n"


def plots(results: dict, out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    metrics = (
        ("hard_label_accuracy", "hard-label accuracy vs exact truth"),
        ("negative_precision", "'-' precision (wrong prefixes among '-')"),
        ("first_error_accuracy", "first-error accuracy"),
    )
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for method, marker in (("shepherd", "o"), ("omegaprm", "s"), ("amcs", "^")):
            runs = sorted(
                (r for r in results["runs"] if r["method"] == method and r[key] is not None),
                key=lambda r: r["tokens"],
            )
            ax.plot(
                [r["tokens"] for r in runs], [r[key] for r in runs], marker=marker, label=method
            )
            for r in runs:
                ax.annotate(r["setting"].split(" ", 1)[-1], (r["tokens"], r[key]), fontsize=6)
        for n, c in enumerate(results.get("consensus", [])):
            if c[key] is None:
                continue
            ax.scatter(c["tokens"], c[key], marker="*", s=90, zorder=3, color=f"C{3 + n}")
            ax.annotate(
                f"+ consensus, {c['judge']} ({c['filter']['kept_fraction']:.0%} of paths kept)",
                (c["tokens"], c[key]),
                xytext=(6, -10 - 9 * n),
                textcoords="offset points",
                fontsize=6,
            )
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens (whole run)")
        ax.set_title(title, fontsize=9)
    axes[0].legend()
    fig.suptitle("Label quality per generated token (exact truth of the arithmetic domain)")
    fig.tight_layout()
    path = out_dir / f"{stem}_accuracy_vs_tokens.png"
    fig.savefig(path, dpi=120)
    written.append(path)
    plt.close(fig)

    est = results["oracle"]["estimators"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    amcs = est.get("amcs", {}).get("per_node", [])
    ax.scatter(
        [x["oracle"] for x in amcs],
        [x["rollouts"] for x in amcs],
        s=12,
        alpha=0.6,
        label="amcs (default)",
    )
    for name in est:
        if name.startswith("fixed"):
            k = est[name]["overrides"]["k"]
            ax.axhline(k, ls="--", lw=0.8, color="grey")
            ax.annotate(name, (0.0, k), fontsize=7, va="bottom")
    ax.set_xlabel("oracle value P(correct | prefix)")
    ax.set_ylabel("rollouts spent on the node")
    ax.set_title("Where AMCS spends its rollouts")
    ax.legend()
    fig.tight_layout()
    path = out_dir / f"{stem}_allocation.png"
    fig.savefig(path, dpi=120)
    written.append(path)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, e in est.items():
        marker = "s" if name.startswith("fixed") else "^"
        ax.scatter(e["mean_rollouts_per_node"], e["mean_abs_error"], marker=marker, label=name)
    ax.set_xlabel("mean rollouts per node")
    ax.set_ylabel("mean |estimate - oracle|")
    ax.set_title("Estimator error vs rollouts spent")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"{stem}_estimator_error.png"
    fig.savefig(path, dpi=120)
    written.append(path)
    plt.close(fig)
    return written


async def main_async(mode_name: str, only: list[str] | None = None) -> dict:
    mode = dict(MODES[mode_name])
    if only:
        mode["sweep"] = [
            (m, o) for m, o in mode["sweep"] if any(x in setting_name(m, o) for x in only)
        ]
    problems = held_out_problems(mode["problems"])
    backend = HFBackend(max_batch_size=128)
    results = {
        "mode": mode_name,
        "problems": len(problems),
        "problem_seed": PROBLEM_SEED,
        "runs": [],
    }
    try:
        async with Grader() as grader:
            for method, overrides in mode["sweep"]:
                start = time.perf_counter()
                records, counters = await label_problems(
                    backend, grader, problems, method, overrides
                )
                row = {
                    "method": method,
                    "setting": setting_name(method, overrides),
                    "overrides": overrides,
                    "rollouts": counters.rollouts,
                    "tokens": counters.tokens,
                    "seconds": round(time.perf_counter() - start, 1),
                } | audit(problems, records)
                results["runs"].append(row)
                if method == "amcs" and not overrides:
                    for judge in JUDGES:
                        c = await consensus(problems, records, judge)
                        results.setdefault("consensus", []).append(
                            {"setting": row["setting"], "tokens": row["tokens"]} | c
                        )
                        print(
                            f"  consensus ({judge}): kept {c['filter']['kept']}/{c['filter']['paths']} "
                            f"acc {c['hard_label_accuracy']:.3f}",
                            flush=True,
                        )
                print(
                    f"{row['setting']:<28} rollouts {row['rollouts']:>7,} tokens {row['tokens']:>9,} "
                    f"steps {row['labelled_steps']:>6,} acc {row['hard_label_accuracy']:.3f} "
                    f"({row['seconds']} s)",
                    flush=True,
                )
            if not only:
                results["oracle"] = await oracle_study(backend, grader, problems, mode)
    finally:
        await backend.aclose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="30 problems, a few settings (minutes)")
    ap.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--plots-only", action="store_true", help="redraw the plots from the JSON")
    ap.add_argument(
        "--only",
        action="append",
        help="run only the sweep settings whose name contains this (repeatable); no oracle study",
    )
    ap.add_argument("--stem", help="file name stem of the results (default: by mode)")
    args = ap.parse_args()
    stem = args.stem or ("label_quality_quick" if args.quick else "label_quality")
    if args.plots_only:
        results = json.loads((args.out_dir / f"{stem}.json").read_text())
        for path in plots(results, args.out_dir, stem):
            print(f"wrote {path}")
        return

    start = time.perf_counter()
    results = asyncio.run(main_async("quick" if args.quick else "full", args.only))
    results["seconds"] = round(time.perf_counter() - start, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out_dir / f"{stem}.md").write_text(table)
    print(table)
    if not args.no_plots and "oracle" in results:
        for path in plots(results, args.out_dir, stem):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
