"""PRMTrainingConfig and `amcs train`'s options: one field, one help text, one check."""

import re

import pytest
from typer.testing import CliRunner

from amcs.fields import ConfigError
from amcs.steps import DEFAULT_SEPARATOR
from amcs.training import PRMTrainingConfig, make_training_config
from amcs.training.config import help_text
from cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_length": 1}, "max_length must be an integer >= 2, got 1"),
        ({"labels": "medium"}, "labels must be one of hard, soft, got 'medium'"),
        ({"threshold": 1.0}, "threshold must be a number in [0, 1), got 1.0"),
        ({"eval_fraction": -0.1}, "eval_fraction must be a number in [0, 1)"),
        ({"lora_r": -1}, "lora_r must be an integer >= 0 or null, got -1"),
        ({"lora_alpha": "big"}, "lora_alpha must be an integer >= 1, got 'big'"),
        ({"freeze_layers": 1.5}, "freeze_layers must be an integer >= 0, got 1.5"),
        ({"lr": 0}, "learning_rate must be a number > 0"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be an integer >= 1"),
        ({"lr_scheduler_type": "cosinus"}, "lr_scheduler_type must be one of linear, cosine"),
        ({"bf16": "maybe"}, "bf16 must be true or false, got 'maybe'"),
        ({"lernig_rate": 1}, "unknown training option 'lernig_rate'; did you mean learning_rate?"),
        ({"lr": 1e-3, "learning_rate": 1e-3}, "lr and learning_rate are the same option"),
        ({"lora": {"alpha": 8, "rank": 4}}, "unknown training option 'lora.rank'"),
        ({"lora_r": 4, "freeze_layers": 2}, "freeze_layers=2 is for full fine-tuning"),
        ({"fp16": True, "bf16": True}, "At most one of fp16 and bf16"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(settings, message):
    with pytest.raises(ConfigError) as caught:
        make_training_config(settings)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_config_is_checked_when_built_directly_too():
    with pytest.raises(ConfigError, match="max_length must be an integer >= 2"):
        PRMTrainingConfig(max_length=0)


def test_defaults_aliases_and_types():
    config = PRMTrainingConfig()
    assert config.separator == DEFAULT_SEPARATOR and config.threshold == 0.0
    assert config.learning_rate == 1e-4 and config.num_train_epochs == 1.0 and config.seed == 0
    assert config.save_strategy == "no" and config.report_to == [] and config.lora_r == 0
    assert not config.remove_unused_columns and config.output_dir_is_scratch
    # Old recipe keys, a nested lora: mapping, strings from --set: converted by the field type.
    old = make_training_config(
        {"epochs": 2, "lr": "3e-3", "batch_size": 16.0, "lora": {"r": 8, "alpha": 32}}
    )
    assert (old.num_train_epochs, old.learning_rate, old.per_device_train_batch_size) == (
        2.0,
        3e-3,
        16,
    )
    assert (old.lora_r, old.lora_alpha) == (8, 32) and old.uses_lora
    checkpointed = make_training_config({"gradient_checkpointing": "true"})
    assert checkpointed.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert make_training_config({"warmup_steps": 0.1}).warmup_steps == 0.1


def squash(text: str) -> str:
    return " ".join(text.split())


def test_flag_help_is_the_field_help():
    result = runner.invoke(app, ["train", "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    shown = squash(result.output)
    fields = PRMTrainingConfig.__dataclass_fields__
    for flag, name in [
        ("--gradient-accumulation-steps", "gradient_accumulation_steps"),
        ("--lora-alpha", "lora_alpha"),
        ("--threshold", "threshold"),
        ("--gradient-checkpointing", "gradient_checkpointing"),
        ("--learning-rate, --lr", "learning_rate"),
    ]:
        text = squash(help_text(fields[name]))
        match = re.search(re.escape(flag) + r"[ /]", shown)
        assert match, flag
        assert text in shown[match.end() : match.end() + len(text) + 200], (flag, text)
    assert "%%" not in shown  # transformers' argparse escape is not shown
    # The epilog lists our fields like `amcs generate --help` lists search parameters.
    for name in ("eval_fraction", "separator", "lora_dropout", "lora_target_modules"):
        assert squash(f"{name} {help_text(fields[name])}") in shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "lernig_rate=1"], "unknown training option 'lernig_rate'"),
        (["--set", "gradient_accumulation_steps=0"], "gradient_accumulation_steps must be"),
        (["--labels", "medium"], "labels must be one of hard, soft"),
        (["--threshold", "1.5"], "threshold must be a number in [0, 1)"),
        (["--set", "warmup_steps"], "--set expects KEY=VALUE"),
    ],
)
def test_bad_options_stop_before_any_data_is_read(tmp_path, args, message):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "absent.jsonl"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_recipe_keys_are_checked_and_named(tmp_path):
    recipe = tmp_path / "train.yaml"
    recipe.write_text("data: x.jsonl\nlernig_rate: 0.1\n")
    result = runner.invoke(app, ["train", "--recipe", str(recipe)])
    assert result.exit_code == 2
    assert f"{recipe}: unknown training option 'lernig_rate'" in result.output


def test_recipe_set_and_flags_reach_the_config_in_that_order(tmp_path, monkeypatch):
    """recipe < --set < flags, whichever name (old key or field name) each layer used; LoRA's
    alpha from a flag reaches the config under its one name."""
    import amcs.training

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "1 + 1?", "completions": ["1 + 1 = 2"], "labels": [true]}\n')
    recipe = tmp_path / "train.yaml"
    recipe.write_text(
        f"data: {data}\nlr: 0.5\nepochs: 2\nlora: {{r: 2, alpha: 4}}\nwarmup_steps: 3\n"
    )
    seen = {}

    def fake_train_prm(rows, base, out, config, callbacks=None, data_files=None):
        seen["config"] = config
        return {"train_steps": 0}

    monkeypatch.setattr(amcs.training, "train_prm", fake_train_prm)
    result = runner.invoke(
        app,
        [
            "train", "--recipe", str(recipe), "--out", str(tmp_path / "prm"),
            "--set", "learning_rate=0.25", "--set", "weight_decay=0.01",
            "--set", "warmup_steps=5", "--warmup-steps", "7",
            "--lora-r", "4", "--lora-alpha", "12", "--gradient-checkpointing", "--bf16",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert config.learning_rate == 0.25 and config.num_train_epochs == 2.0
    assert config.warmup_steps == 7 and config.weight_decay == 0.01
    assert (config.lora_r, config.lora_alpha) == (4, 12)
    assert config.gradient_checkpointing and config.bf16
