"""Cards and publishing: the PRM model card of `amcs train` (its numbers recomputed with the
saved PRM), `amcs push`'s checks and folder detection (the upload itself needs the Hub: not run
here), and the environment block of `amcs eval` reports (results.json, results.md, amcs view)."""

import hashlib
import json
import re
from importlib.metadata import version

import pytest
import torch
import transformers
from typer.testing import CliRunner

from amcs.assets import TINY_PRM
from amcs.cards import read_card_metadata, size_category
from amcs.records import RecordWriter, meta_path_for
from cli.main import app


def invoke(*args, env=None):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.output


def card_rows(text: str) -> dict[str, str]:
    """key -> value of the Markdown table rows ("| key | value |") in ``text``."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| |"):
            key, value = (cell.strip() for cell in line.strip().strip("|").split("|", 1))
            rows.setdefault(key, value)
    return rows


def section(card: str, title: str) -> str:
    return card.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
    ]


# --- the model card of amcs train ---------------------------------------------------------------


@pytest.mark.slow
def test_every_train_output_has_a_model_card_whose_numbers_recompute(tmp_path):
    from amcs.prm import load_prm
    from amcs.stepeval import first_error_f1, first_minus, predict_first_error
    from amcs.training.config import make_training_config
    from amcs.training.tokenize import relabel, tokenize_rows
    from amcs.training.trainer import split_features

    data = tmp_path / "run.jsonl"
    code, output = invoke(
        "generate", "--problems", "arith:6", "--out", data, "-q",
        "--set", "max_new_tokens=100", "--set", "rollout_budget=20",
    )  # fmt: skip
    assert code == 0, output
    out = tmp_path / "prm"
    code, output = invoke(
        "train", "--data", data, "--out", out, "--max-steps", "4",
        "--set", "eval_fraction=0.4", "--lr", "0.001",
    )  # fmt: skip
    assert code == 0, output
    card = (out / "README.md").read_text()
    metadata = read_card_metadata(out / "README.md")
    assert metadata["library_name"] == "transformers" and "license" not in metadata
    assert "base_model" not in metadata  # the bundled policy is no Hub model
    fmt = card_rows(section(card, "Format"))
    assert fmt["base model"] == "`amcs/tiny-arith-policy (bundled with amcs)`"
    assert fmt["PRM format"] == "token-cls (amcs train)"
    assert fmt["step separator"] == '`"\\n\\n"`' and fmt["labels trained on"] == "hard"
    # The data file's sha256 and its run's fingerprint, recomputed here.
    header = json.loads(meta_path_for(data).read_text().splitlines()[0])
    digest = hashlib.sha256(
        json.dumps(header["fingerprint"], sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()[:16]
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    assert f"- `{data}`: sha256 `{sha}`, run fingerprint `{digest}`" in card
    # Only the settings given differ from the defaults.
    settings = section(card, "Training config (fields changed from amcs's defaults)")
    assert re.findall(r"^(\w+): (.*)$", settings, re.M) == [
        ("eval_fraction", "0.4"),
        ("learning_rate", "0.001"),
        ("max_steps", "4"),
    ]

    # Held-out numbers: the same split, scored with amcs's own scorer on the saved PRM.
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    config = make_training_config({"eval_fraction": 0.4, "max_steps": 4})
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    features, _ = tokenize_rows(rows, tokenizer, config)
    _, held = split_features(features, config.eval_fraction, config.seed)
    held_prompts = {f["problem"] for f in held}
    held_rows = [relabel(r, config.threshold) for r in rows if r["prompt"] in held_prompts]
    assert held_rows and len(held_rows) < len(rows)
    scorer = load_prm(out)
    scores = scorer.score_batch([(r["prompt"], r["completions"]) for r in held_rows])
    pairs = [
        (s > 0.5, label)
        for r, row_scores in zip(held_rows, scores, strict=True)
        for s, label in zip(row_scores, r["labels"], strict=True)
    ]
    f1 = first_error_f1(
        [predict_first_error(s) for s in scores], [first_minus(r["labels"]) for r in held_rows]
    )
    shown = card_rows(section(card, "Held-out evaluation"))
    assert int(shown["held-out rows (problem-level split)"]) == len(held_rows)
    assert int(shown["held-out steps"]) == len(pairs)
    accuracy = sum(p == y for p, y in pairs) / len(pairs)
    assert float(shown["step accuracy (P(correct) > 0.5 vs label)"]) == pytest.approx(
        accuracy, abs=1e-4
    )
    assert float(shown["first-error F1 (ProcessBench rule, threshold 0.5)"]) == pytest.approx(
        f1["f1"], abs=1e-4
    )
    assert float(shown['a1: first error found, on paths with a "-"']) == pytest.approx(
        f1["a1_erroneous"], abs=1e-4
    )
    assert float(shown['a2: no error claimed, on all-"+" paths']) == pytest.approx(
        f1["a2_correct"], abs=1e-4
    )

    # The card's transformers snippet scores as amcs's scorer does.
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(snippet.replace("THIS_FOLDER", str(out)).replace("print(scores)", ""), namespace)
    expected = scorer.score_batch([("What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 14"])])[0]
    assert namespace["scores"] == pytest.approx(expected, abs=1e-5)

    # amcs push sees a model folder.
    from amcs.push import folder_kind

    assert folder_kind(out) == "model"


# --- amcs push ----------------------------------------------------------------------------------


@pytest.fixture
def dataset_folder(tmp_path):
    from amcs.export import export_records

    data = tmp_path / "run.jsonl"
    with RecordWriter(data) as writer:
        path = {"completions": ["1 + 1 = 2", "The answer is 2"], "labels": [True, True]}
        path |= {"values": [None, 1.0], "rollouts": [0, 4], "method": "amcs", "model": "tiny"}
        writer.write_problem("p1", "What is 1 + 1?", "2", [path])
    folder = tmp_path / "hub"
    assert export_records(data, "hub", folder) == 1
    return folder


@pytest.fixture
def uploads(monkeypatch):
    """The calls amcs push makes to amcs.push.upload (the one Hub call; no Hub here)."""
    import amcs.push

    calls = []

    def record(folder, repo_id, repo_type, *, private, token):
        calls.append((folder, repo_id, repo_type, private, token))
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(amcs.push, "upload", record)
    return calls


def test_push_detects_the_folder_kind_and_uploads_it(dataset_folder, uploads, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, output = invoke("push", dataset_folder, "me/data", "--token", "hf_x", "--private")
    assert (code, output) == (
        0,
        f"pushed {dataset_folder} to dataset repository me/data: "
        "https://huggingface.co/me/data/commit/0\n",
    )
    code, output = invoke("push", TINY_PRM, "me/prm", env={"HF_TOKEN": "hf_env"})
    assert code == 0, output
    assert uploads == [
        (dataset_folder, "me/data", "dataset", True, "hf_x"),
        (TINY_PRM, "me/prm", "model", False, "hf_env"),
    ]


def test_push_refuses_before_touching_the_network(dataset_folder, uploads, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login token
    cases = [
        ((tmp_path / "nope", "me/x"), f"{tmp_path / 'nope'}: no such folder"),
        ((tmp_path, "me/x"), f"{tmp_path} is neither a dataset export (amcs export -f hub: "
         "README.md and data/*.parquet) nor a trained PRM (amcs train: config.json and "
         "amcs_prm.json)"),
        ((dataset_folder, "me/x", "--repo-type", "model"),
         f"--repo-type model: {dataset_folder} is a dataset folder"),
        ((dataset_folder, "me/x", "--repo-type", "space"),
         "--repo-type 'space': choose one of dataset, model"),
        ((dataset_folder, "x"), "REPO_ID 'x': name the owner too (user/name or org/name)"),
        ((dataset_folder, "me/a b"), "REPO_ID 'me/a b' is not a Hub repo id"),
        ((dataset_folder, "me/x"),
         "no Hub token: pass --token, set HF_TOKEN, or run `hf auth login`"),
    ]  # fmt: skip
    for args, message in cases:
        code, output = invoke("push", *args)
        assert code == 2 and output.startswith(f"error: {message}"), output
        assert output.count("\n") == 1
    # A folder that only looks like an export (no Parquet shard) is not one.
    for shard in (dataset_folder / "data").iterdir():
        shard.unlink()
    code, output = invoke("push", dataset_folder, "me/x", "--token", "t")
    assert code == 2 and "is neither a dataset export" in output
    assert uploads == []


def test_a_failed_upload_is_one_line(dataset_folder, monkeypatch):
    import amcs.push

    def refuse(*args, **kwargs):
        raise RuntimeError("403 Forbidden:\n  you cannot write to me/x")

    monkeypatch.setattr(amcs.push, "upload", refuse)
    assert invoke("push", dataset_folder, "me/x", "--token", "t") == (
        2,
        f"error: push of {dataset_folder} to dataset me/x failed: 403 Forbidden: you cannot "
        "write to me/x\n",
    )


# --- the environment of an eval report ----------------------------------------------------------


def test_eval_report_carries_its_environment_to_json_markdown_and_view(tmp_path):
    from amcs.evaluation import write_report
    from amcs.view.evaldir import load_eval

    rows = [
        {
            "strategy": "best-of-n",
            "n": 4,
            "accuracy": 0.5,
            "tokens_per_problem": 120.0,
            "prm_calls_per_problem": 4.0,
            "problems": 2,
        }
    ]
    settings = {"model": "amcs/tiny-arith-policy", "backend": "hf", "prm": "my-prm", "n": 2}
    out = tmp_path / "ev"
    write_report(out, rows, settings, "t")
    env = json.loads((out / "results.json").read_text())["environment"]
    assert {k: env[k] for k in ("amcs", "policy_model", "prm", "backend", "torch")} == {
        "amcs": version("amcs-prm"),
        "policy_model": "amcs/tiny-arith-policy",
        "prm": "my-prm",
        "backend": "hf",
        "torch": torch.__version__,
    }
    assert env["transformers"] == transformers.__version__
    assert env["device"].startswith("cuda: " if torch.cuda.is_available() else "cpu")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", env["date"])
    markdown = (out / "results.md").read_text()
    shown = card_rows(section(markdown, "Environment"))
    assert shown == {k: "—" if v is None else f"`{v}`" for k, v in env.items()}
    assert "| best-of-n | 4 | 50.0% |" in markdown  # the results table is still there
    assert load_eval(out)["environment"] == env
    code, output = invoke("view", out, "--out", tmp_path / "page.html")
    assert code == 0, output
    page = (tmp_path / "page.html").read_text()
    assert json.dumps(env["transformers"]) in page and "environmentBlock" in page
