import json
import math
import random

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, TrainingArguments

from amcs.assets import TINY_POLICY
from amcs.domains.arith import ANSWER_TEMPLATE, check_steps, generate_problems
from amcs.training import PRMTrainingConfig, train_prm
from amcs.training.collator import PRMCollator
from amcs.training.loss import prm_loss
from amcs.training.model import build_prm_model
from amcs.training.tokenize import IGNORE_INDEX, tokenize_prm_row
from amcs.training.trainer import PRMTrainer

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
    metrics = train_prm(
        rows + [long_row, huge_first],
        str(TINY_POLICY),
        out,
        PRMTrainingConfig(
            lora_r=4,
            lora_alpha=8,
            learning_rate=5e-3,
            per_device_train_batch_size=16,
            max_length=128,
            eval_fraction=0.1,
            max_steps=4,
        ),
    )
    assert metrics["rows_dropped"] == 1
    assert metrics["rows_truncated"] == 1
    assert metrics["steps_dropped"] >= 2
    assert metrics["n_eval_rows"] == 6 and metrics["n_train_rows"] == 59
    assert metrics["train_steps"] == 4 and math.isfinite(metrics["train_loss"])
    assert 0.0 <= metrics["eval_step_accuracy"] <= 1.0 and metrics["eval_steps"] > 0

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
    tok = AutoTokenizer.from_pretrained(str(out))
    feat = tokenize_prm_row(EXAMPLE, tok)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([feat["input_ids"]])).logits
    assert logits.shape == (1, len(feat["input_ids"]), 2)


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
