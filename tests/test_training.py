import json
import math
import random
import re

import pytest
import torch
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    TrainerCallback,
    TrainingArguments,
)
from typer.testing import CliRunner

import amcs.training.trainer
from amcs.assets import TINY_POLICY
from amcs.domains.arith import ANSWER_TEMPLATE, check_steps, generate_problems
from amcs.training import PRMTrainingConfig, make_training_config, train_prm
from amcs.training.collator import PRMCollator
from amcs.training.loss import prm_loss
from amcs.training.model import build_prm_model
from amcs.training.tokenize import IGNORE_INDEX, tokenize_prm_row, tokenize_rows
from amcs.training.trainer import PRMTrainer, evaluate_step_accuracy, split_features
from cli.common import parse_sets
from cli.main import app

EXAMPLE = {
    "prompt": "What is 1 + 2?",
    "completions": ["1 + 2 = 3", "The answer is \\boxed{3}."],
    "labels": [True, False],
}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(TINY_POLICY))


def arith_rows(n: int, seed: int = 0) -> list[dict]:
    """Reference solutions, every other one with one corrupted step; labels are exact prefix
    correctness from check_steps (steps after the first error are wrong)."""
    rng = random.Random(seed)
    rows = []
    for i, problem in enumerate(generate_problems(n, seed=seed)):
        steps = list(problem.solution_steps)
        if i % 2:
            k = rng.randrange(len(steps))
            if k == len(steps) - 1:
                steps[k] = ANSWER_TEMPLATE.format(value=problem.answer + 1)
            else:
                lhs, value = steps[k].rsplit(" = ", 1)
                steps[k] = f"{lhs} = {int(value) + 1}"
            steps = steps[: k + 2]
        check = check_steps(problem.expression, steps)
        rows.append(
            {"prompt": problem.question, "completions": steps, "labels": check.prefix_correct}
        )
    return rows


def test_label_placement_hand_checked(tokenizer):
    out = tokenize_prm_row(EXAMPLE, tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(out["input_ids"])
    # Char-level tokenizer, no BOS: prompt is 5 tokens, step 1 + "\n\n" is 6, step 2 + "\n\n" is 6.
    assert pieces == [
        "What is ", "1", " + ", "2", "?",
        "1", " + ", "2", " = ", "3", "\n\n",
        "The answer is ", "\\boxed{", "3", "}", ".", "\n\n",
    ]  # fmt: skip
    expected = [IGNORE_INDEX] * 17
    expected[10] = 1  # "\n\n" after the correct step
    expected[16] = 0  # "\n\n" after the wrong step
    assert out["labels"] == expected
    assert out["attention_mask"] == [1] * 17
    assert out["n_steps_kept"] == 2 and "soft_labels" not in out


def test_soft_labels_kept_and_used(tokenizer, tmp_path):
    row = dict(EXAMPLE, values=[0.875, 0.25])
    out = tokenize_prm_row(row, tokenizer, labels="soft")
    assert out["soft_labels"][10] == 0.875 and out["soft_labels"][16] == 0.25
    assert all(v == -1.0 for i, v in enumerate(out["soft_labels"]) if i not in (10, 16))
    assert out["labels"][10] == 1 and out["labels"][16] == 0  # hard classes kept for metrics

    batch = PRMCollator(tokenizer.pad_token_id)(
        [out, tokenize_prm_row(EXAMPLE | {"values": [1.0, 0.0]}, tokenizer, labels="soft")]
    )
    assert batch["soft_labels"].dtype == torch.float32
    assert batch["soft_labels"][0, 10].item() == 0.875  # not cast to int

    torch.manual_seed(0)
    model = build_prm_model(str(TINY_POLICY))
    trainer = PRMTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none"),
        data_collator=PRMCollator(tokenizer.pad_token_id),
    )
    with torch.no_grad():
        soft_loss = trainer.compute_loss(model, dict(batch))
        hard_loss = trainer.compute_loss(
            model, {k: v for k, v in batch.items() if k != "soft_labels"}
        )
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.isclose(soft_loss, hard_loss)
    # Soft CE by hand on row 0's label positions, and {0,1} targets reduce to hard CE.
    logp = torch.log_softmax(logits[0, [10, 16]], -1)
    by_hand = -(0.125 * logp[0, 0] + 0.875 * logp[0, 1] + 0.75 * logp[1, 0] + 0.25 * logp[1, 1]) / 2
    row0 = prm_loss(logits[:1], batch["labels"][:1], batch["soft_labels"][:1])
    assert torch.isclose(row0, by_hand, atol=1e-6)
    row1_soft = prm_loss(logits[1:], batch["labels"][1:], batch["soft_labels"][1:])
    assert torch.isclose(row1_soft, prm_loss(logits[1:], batch["labels"][1:]), atol=1e-6)


def test_unmeasured_soft_values_are_masked(tokenizer):
    """A null value (a step whose MC was not measured) carries no soft target: the loss is the
    soft loss over the measured steps only; its hard class stays for metrics."""
    out = tokenize_prm_row(EXAMPLE | {"values": [None, 0.25]}, tokenizer, labels="soft")
    assert out["soft_labels"][10] == -1.0 and out["soft_labels"][16] == 0.25
    assert out["labels"][10] == 1 and out["labels"][16] == 0
    batch = PRMCollator(tokenizer.pad_token_id)([out])
    torch.manual_seed(0)
    logits = torch.randn(1, batch["input_ids"].shape[1], 2)
    logp = torch.log_softmax(logits[0, 16], -1)
    by_hand = -(0.75 * logp[0] + 0.25 * logp[1])
    loss = prm_loss(logits, batch["labels"], batch["soft_labels"])
    assert torch.isclose(loss, by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="needs 'labels'"):
        tokenize_prm_row(
            {k: v for k, v in EXAMPLE.items() if k != "labels"} | {"values": [None, 0.0]},
            tokenizer,
            labels="soft",
        )


def test_truncation_at_step_boundary_and_drop(tokenizer):
    row = {
        "prompt": "What is 1 + 2 + 3?",
        "completions": ["1 + 2 = 3", "3 + 3 = 6", "The answer is \\boxed{6}."],
        "labels": [True, True, False],
    }
    full = tokenize_prm_row(row, tokenizer)
    lengths = [
        len(tokenizer(s + "\n\n", add_special_tokens=False)["input_ids"])
        for s in row["completions"]
    ]
    prompt_len = len(full["input_ids"]) - sum(lengths)
    limit = prompt_len + lengths[0] + lengths[1] + lengths[2] - 1  # last step does not fit
    cut = tokenize_prm_row(row, tokenizer, max_length=limit)
    assert cut["n_steps_kept"] == 2 and cut["n_steps"] == 3
    assert len(cut["input_ids"]) == prompt_len + lengths[0] + lengths[1]
    assert cut["input_ids"] == full["input_ids"][: len(cut["input_ids"])]
    assert cut["labels"] == full["labels"][: len(cut["input_ids"])]
    assert [x for x in cut["labels"] if x != IGNORE_INDEX] == [1, 1]
    assert tokenizer.convert_ids_to_tokens(cut["input_ids"][-1]) == "\n\n"
    # The first step alone does not fit: dropped, not silently emptied.
    assert tokenize_prm_row(row, tokenizer, max_length=prompt_len + lengths[0] - 1) is None


@pytest.mark.slow
def test_lora_head_trainable_base_frozen_and_learns(tokenizer):
    torch.manual_seed(0)
    model = build_prm_model(str(TINY_POLICY), PRMTrainingConfig(lora_r=4, lora_alpha=8))
    assert set(model.peft_config["default"].modules_to_save) >= {"score"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {n for n in trainable if ".score." in n}
    assert head and all("modules_to_save" in n for n in head)
    assert all("lora_" in n for n in trainable - head)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any("embed_tokens" in n for n in frozen)
    assert any("q_proj.base_layer.weight" in n for n in frozen)

    feats = [tokenize_prm_row(r, tokenizer) for r in arith_rows(32, seed=1)]
    batch = PRMCollator(tokenizer.pad_token_id)(feats)
    labels = batch.pop("labels")
    head_param = next(
        p for n, p in model.named_parameters() if n.endswith("score.modules_to_save.default.weight")
    )
    head_before = head_param.detach().clone()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    model.train()
    for _ in range(8):
        loss = prm_loss(model(**batch).logits, labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert not torch.equal(head_before, head_param.detach())
    assert losses[-1] < losses[0]


def test_train_prm_end_to_end_save_and_reload(tmp_path):
    rows = arith_rows(64, seed=2)
    assert any(not all(r["labels"]) for r in rows) and any(all(r["labels"]) for r in rows)
    long_row = {
        "prompt": "What is 1 + 1?",
        "completions": ["1 + 1 = 2"] * 30,
        "labels": [True] * 30,
    }
    huge_first = {"prompt": "What is 1 + 1?", "completions": ["1" * 300], "labels": [True]}
    out = tmp_path / "prm"
    training = PRMTrainingConfig(
        lora_r=4,
        lora_alpha=8,
        learning_rate=5e-3,
        per_device_train_batch_size=16,
        max_length=128,
        eval_fraction=0.1,
        max_steps=4,
    )
    metrics = train_prm(rows + [long_row, huge_first], str(TINY_POLICY), out, training)
    assert metrics["rows_dropped"] == 1
    assert metrics["rows_truncated"] == 1
    assert metrics["steps_dropped"] >= 2
    assert metrics["n_eval_rows"] == 6 and metrics["n_train_rows"] == 59
    assert metrics["train_steps"] == 4 and math.isfinite(metrics["train_loss"])
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "amcs_prm.json"}
    assert not any(p.is_dir() for p in out.iterdir())
    config = json.loads((out / "amcs_prm.json").read_text())
    assert config == {
        "separator": "\n\n",
        "label_meaning": {"1": "step correct", "0": "step wrong"},
        "base_model": str(TINY_POLICY),
        "labels": "hard",
    }
    model = AutoModelForTokenClassification.from_pretrained(str(out))
    assert model.config.num_labels == 2
    assert not any("lora" in n or "modules_to_save" in n for n, _ in model.named_parameters())
    # The saved model (LoRA merged in) is the one the metrics describe: on the same held-out rows
    # it has the step accuracy and loss that training reported.
    tok = AutoTokenizer.from_pretrained(str(out))
    features, _ = tokenize_rows(rows + [long_row, huge_first], tok, training)
    _, held_out = split_features(features, training.eval_fraction, training.seed)
    again = evaluate_step_accuracy(model, held_out, PRMCollator(tok.pad_token_id), 8)
    steps = sum(label != IGNORE_INDEX for f in held_out for label in f["labels"])
    assert again["n_steps"] == metrics["eval_steps"] == steps
    assert again["step_accuracy"] == pytest.approx(metrics["eval_step_accuracy"], abs=1e-9)
    assert again["loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)


def test_train_prm_soft_labels(tmp_path):
    rows = [
        dict(r, values=[0.875 if ok else 0.125 for ok in r["labels"]])
        for r in arith_rows(16, seed=3)
    ]
    metrics = train_prm(
        rows,
        str(TINY_POLICY),
        tmp_path / "soft",
        PRMTrainingConfig(labels="soft", max_steps=2, per_device_train_batch_size=8),
    )
    assert metrics["labels"] == "soft" and math.isfinite(metrics["train_loss"])
    assert json.loads((tmp_path / "soft" / "amcs_prm.json").read_text())["labels"] == "soft"


def test_freeze_layers_keeps_the_bottom_fixed_and_trains_the_rest(tmp_path):
    base = AutoModelForTokenClassification.from_pretrained(str(TINY_POLICY), num_labels=2)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    config = PRMTrainingConfig(
        freeze_layers=3,
        max_steps=4,
        learning_rate=1e-2,
        per_device_train_batch_size=8,
        eval_fraction=0.0,
    )
    metrics = train_prm(arith_rows(24), str(TINY_POLICY), tmp_path / "prm", config)
    assert metrics["train_steps"] == 4
    after = dict(
        AutoModelForTokenClassification.from_pretrained(tmp_path / "prm").named_parameters()
    )
    for name, old in before.items():
        if name.startswith("score"):
            continue  # the head is new: random at first, then trained
        changed = not torch.equal(old, after[name])
        frozen = "embed_tokens" in name or any(f"layers.{i}." in name for i in range(3))
        assert changed != frozen, name
    with pytest.raises(ValueError, match="has 4 layers"):
        config = PRMTrainingConfig(freeze_layers=9, max_steps=1)
        train_prm(arith_rows(4), str(TINY_POLICY), tmp_path / "x", config)


class WatchTraining(TrainerCallback):
    """The model the Trainer trains: its parameters at the start and the end, and whether
    gradient checkpointing was on."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.checkpointing = model.is_gradient_checkpointing
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}

    def changed(self) -> set[str]:
        return {n for n, p in self.before.items() if not torch.equal(p, self.after[n])}


def step_labels(feature: dict) -> list[int]:
    return [x for x in feature["labels"] if x != IGNORE_INDEX]


def test_threshold_rederives_the_hard_labels_the_trainer_sees(tokenizer, tmp_path, monkeypatch):
    row = EXAMPLE | {"labels": [True, True], "values": [0.2, 0.0]}
    for threshold, expected in [(0.1, [1, 0]), (0.0, [1, 0]), (0.3, [0, 0])]:
        features, _ = tokenize_rows([row], tokenizer, PRMTrainingConfig(threshold=threshold))
        assert step_labels(features[0]) == expected, threshold
    # A null value keeps the row's label; soft training keeps the value and the new hard class.
    unmeasured = EXAMPLE | {"labels": [True, True], "values": [None, 0.05]}
    features, _ = tokenize_rows([unmeasured], tokenizer, PRMTrainingConfig(threshold=0.1))
    assert step_labels(features[0]) == [1, 0]
    soft, _ = tokenize_rows([row], tokenizer, PRMTrainingConfig(threshold=0.1, labels="soft"))
    assert step_labels(soft[0]) == [1, 0]
    assert [v for v in soft[0]["soft_labels"] if v >= 0] == [0.2, 0.0]
    # Rows without values: their labels at threshold 0, an error naming the row at any other.
    features, _ = tokenize_rows([EXAMPLE], tokenizer, PRMTrainingConfig())
    assert step_labels(features[0]) == [1, 0]
    with pytest.raises(ValueError, match="training row 0: threshold=0.1 .*no 'values'"):
        tokenize_rows([EXAMPLE], tokenizer, PRMTrainingConfig(threshold=0.1))

    seen: list[list[int]] = []

    class SpyCollator(PRMCollator):
        def __call__(self, features):
            seen.extend(step_labels(f) for f in features)
            return super().__call__(features)

    monkeypatch.setattr(amcs.training.trainer, "PRMCollator", SpyCollator)
    config = PRMTrainingConfig(
        threshold=0.1, max_steps=1, per_device_train_batch_size=4, eval_fraction=0.0
    )
    train_prm([row] * 4, str(TINY_POLICY), tmp_path / "prm", config)
    assert seen == [[1, 0]] * 4


def test_gradient_accumulation_from_set_halves_the_optimizer_steps_not_the_loss(tmp_path):
    """`--set gradient_accumulation_steps=2` reaches the Trainer: the same 4 micro-batches make
    2 optimizer steps instead of 4, and the loss is still the mean over micro-batches (the
    learning rate is ~0, so both runs see the same losses)."""
    rows = arith_rows(16, seed=4)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--batch-size", "4", "--lr", "1e-9", "--set", "eval_fraction=0"]
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(data), "--out", str(tmp_path / "ga2"), *common,
         "--set", "gradient_accumulation_steps=2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = dict(re.findall(r"(train_steps|train_loss)\W+([0-9.]+)", result.output))
    assert shown["train_steps"] == "2"

    config = make_training_config(
        parse_sets(["per_device_train_batch_size=4", "learning_rate=1e-9", "eval_fraction=0"])
    )
    single = train_prm(rows, str(TINY_POLICY), tmp_path / "ga1", config)
    assert single["train_steps"] == 4
    assert float(shown["train_loss"]) == pytest.approx(single["train_loss"], abs=2e-4)


def test_gradient_checkpointing_with_frozen_layers_trains_the_rest(tmp_path):
    watch = WatchTraining()
    config = PRMTrainingConfig(
        gradient_checkpointing=True,
        freeze_layers=3,
        max_steps=3,
        learning_rate=1e-2,
        per_device_train_batch_size=8,
        eval_fraction=0.0,
    )
    metrics = train_prm(arith_rows(24), str(TINY_POLICY), tmp_path / "prm", config, [watch])
    assert watch.checkpointing and math.isfinite(metrics["train_loss"])
    frozen = {
        n for n in watch.before if "embed_tokens" in n or any(f"layers.{i}." in n for i in range(3))
    }
    assert frozen and not frozen & watch.trainable
    assert watch.changed() == set(watch.before) - frozen  # every trainable weight moved


def test_gradient_checkpointing_with_lora_trains_the_adapters(tmp_path):
    watch = WatchTraining()
    config = make_training_config(
        {"lora": {"r": 4, "alpha": 8}, "gradient_checkpointing": True, "max_steps": 3,
         "learning_rate": 1e-2, "per_device_train_batch_size": 8, "eval_fraction": 0.0}
    )  # fmt: skip
    train_prm(arith_rows(24), str(TINY_POLICY), tmp_path / "prm", config, [watch])
    assert watch.checkpointing
    adapters = {n for n in watch.trainable if "lora_B" in n}
    assert adapters and adapters <= watch.changed()  # lora_B starts at zero: it learned
    assert watch.changed() <= watch.trainable  # the base stayed frozen


def test_lora_alpha_reaches_peft():
    config = make_training_config({"lora_r": 4, "lora_alpha": 12, "lora_dropout": 0.1})
    lora = build_prm_model(str(TINY_POLICY), config).peft_config["default"]
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (4, 12, 0.1)
    old_recipe = make_training_config({"lora": {"r": 2, "alpha": 6}})
    assert build_prm_model(str(TINY_POLICY), old_recipe).peft_config["default"].lora_alpha == 6
