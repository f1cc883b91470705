"""The command line as a user meets it."""

import json
from pathlib import Path

from typer.testing import CliRunner

from amcs.records import RecordWriter
from cli.main import app

runner = CliRunner()


def test_help_lists_the_commands_that_exist():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("generate", "export", "problems"):
        assert command in result.output
    gen = runner.invoke(app, ["generate", "--help"])
    assert gen.exit_code == 0 and "--recipe" in gen.output and "--shard" in gen.output


def test_export_formats(tmp_path):
    data = tmp_path / "d.jsonl"
    with RecordWriter(data) as w:
        path = {
            "completions": ["1 + 1 = 2", "The answer is \\boxed{3}."],
            "labels": [True, False],
            "values": [1.0, 0.0],
            "rollouts": [6, 1],
            "method": "amcs",
            "model": "tiny",
        }
        tree = {"text": "", "mc": 0.5, "rollouts": 6, "children": []}
        w.write_problem("p1", "What is 1 + 1?", "2", [path], tree=tree)
    out = tmp_path / "o.jsonl"
    assert runner.invoke(app, ["export", str(data), "-f", "trl", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == {
        "prompt": "What is 1 + 1?",
        "completions": path["completions"],
        "labels": [True, False],
    }
    assert (
        runner.invoke(app, ["export", str(data), "-f", "shepherd", "-o", str(out)]).exit_code == 0
    )
    assert json.loads(out.read_text())["label"].endswith("Step 2: The answer is \\boxed{3}. -")
    assert runner.invoke(app, ["export", str(data), "-f", "tree", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["reasoning_steps"]["mc_value"] == 0.5
    bad = runner.invoke(app, ["export", str(data), "-f", "csv", "-o", str(out)])
    assert bad.exit_code == 2 and "unknown export format" in bad.output


def test_generate_rejects_bad_options_before_loading_a_model(tmp_path):
    out = tmp_path / "x.jsonl"
    r = runner.invoke(app, ["generate", "--method", "magic", "--out", str(out)])
    assert r.exit_code == 2 and "unknown method 'magic'" in r.output
    r = runner.invoke(app, ["generate", "--set", "k0", "--out", str(out)])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = runner.invoke(app, ["generate", "--set", "nonsense=1", "--out", str(out)])
    assert r.exit_code == 2 and "unknown search parameter" in r.output
    r = runner.invoke(app, ["generate", "--shard", "3/2", "--out", str(out)])
    assert r.exit_code == 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text("problems: arith:3\nbogus: 1\n")
    r = runner.invoke(app, ["generate", "--recipe", str(recipe), "--out", str(out)])
    assert r.exit_code == 2 and "bogus" in r.output
    assert not out.exists()


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_recipes_are_valid():
    from amcs.recipes import load_recipe
    from amcs.search import make_config
    from cli.generate import DEFAULTS

    for path in sorted(RECIPES.glob("*/generate*.yaml")):
        recipe = load_recipe(path)
        search = recipe.pop("search", {})
        assert set(recipe) <= set(DEFAULTS), path
        make_config(recipe.get("method", "amcs"), **search)


def test_tiny_recipe_runs_end_to_end_with_command_line_overrides(tmp_path):
    out = tmp_path / "r.jsonl"
    recipe = RECIPES / "tiny-arith" / "generate.yaml"
    result = runner.invoke(
        app, ["generate", "--recipe", str(recipe), "--limit", "3", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines and all(r["method"] == "amcs" for r in lines)
    assert len({r["problem_id"] for r in lines}) <= 3


def test_prompt_format_options(tmp_path):
    out = tmp_path / "p.jsonl"
    r = runner.invoke(
        app, ["generate", "--prompt-format", "chat", "--problems", "arith:2", "--out", str(out)]
    )
    assert r.exit_code == 2 and "has no chat template" in r.output
    r = runner.invoke(
        app,
        [
            "generate",
            "--prompt-format",
            "plain",
            "--problems",
            "arith:2",
            "--out",
            str(out),
            "-q",
            "--set",
            "max_new_tokens=100",
            "--set",
            "rollout_budget=20",
        ],
    )
    assert r.exit_code == 0, r.output


def test_train_command_trains_and_saves_a_prm(tmp_path):
    data = tmp_path / "d.jsonl"
    gen = runner.invoke(
        app,
        [
            "generate",
            "--problems",
            "arith:8",
            "--out",
            str(data),
            "-q",
            "--set",
            "max_new_tokens=100",
        ],
    )
    assert gen.exit_code == 0, gen.output
    out = tmp_path / "prm"
    r = runner.invoke(
        app, ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--lr", "0.003"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "amcs_prm.json").read_text())["separator"] == "\n\n"
    assert (out / "model.safetensors").exists()
    bad = runner.invoke(app, ["train", "--out", str(out)])
    assert bad.exit_code == 2 and "no training data" in bad.output


def test_train_recipes_are_valid():
    """Every bundled train recipe builds a config, with canonical field names only (the old
    aliases are for users' recipes)."""
    from amcs.recipes import load_recipe
    from amcs.training.config import PRMTrainingConfig, make_training_config
    from cli.train import COMMAND_DEFAULTS

    fields = PRMTrainingConfig.__dataclass_fields__
    for path in sorted(RECIPES.glob("*/train.yaml")):
        recipe = load_recipe(path)
        settings = {k: v for k, v in recipe.items() if k not in COMMAND_DEFAULTS}
        assert set(settings) <= set(fields), path
        make_training_config(settings)
