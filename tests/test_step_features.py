"""The policy's own view of each step: features, the training-free policy-confidence scorer and
the policy-feature PRM (amcs.step_features, amcs train --policy-features)."""

import asyncio
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from amcs.assets import TINY_POLICY, TINY_PRM
from amcs.domains.arith import held_out_problems
from amcs.fields import ConfigError
from amcs.prm import load_policy_confidence, load_prm
from amcs.prompts import prompt_ids
from amcs.step_features import (
    FEATURE_SCALE,
    FEATURES,
    StepFeaturePRM,
    encode_steps,
    step_features,
    token_statistics,
)
from amcs.stepeval import exact_step_examples, step_report, write_step_examples
from amcs.training import make_training_config, train_prm
from amcs.training.loss import balanced_class_weights, prm_loss
from amcs.training.tokenize import IGNORE_INDEX, tokenize_rows
from cli.main import app
from tests.test_training import arith_rows

QUESTION = "What is 3 + 4 * 5?"
STEPS = ["4 * 5 = 20", "3 + 20 = 23", "The answer is \\boxed{23}."]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(TINY_POLICY))


@pytest.fixture(scope="module")
def policy():
    return AutoModelForCausalLM.from_pretrained(str(TINY_POLICY)).eval()


def test_encode_steps_is_the_policys_sequence_with_step_owners(tokenizer):
    enc = encode_steps(tokenizer, QUESTION, STEPS, "\n\n")
    prompt = prompt_ids(tokenizer, QUESTION)
    assert enc["input_ids"][: len(prompt)] == list(prompt)
    assert enc["step_owner"][: len(prompt)] == [-1] * len(prompt)
    assert enc["kept"] == 3
    for index, step in enumerate(STEPS):
        span = [i for i, owner in enumerate(enc["step_owner"]) if owner == index]
        assert span == list(range(span[0], span[-1] + 1))
        assert enc["positions"][index] == span[-1]
        own = [i for i in span if not enc["step_separator"][i]]
        assert tokenizer.decode([enc["input_ids"][i] for i in own]) == step
        separator = [i for i in span if enc["step_separator"][i]]
        assert tokenizer.decode([enc["input_ids"][i] for i in separator]) == "\n\n"
    short = encode_steps(tokenizer, QUESTION, STEPS, "\n\n", max_length=enc["positions"][1] + 1)
    assert short["kept"] == 2 and short["positions"] == enc["positions"][:2]


def test_step_features_reduce_each_steps_own_tokens():
    # Tokens: prompt, step 0 (2 own + 1 separator), step 1 (1 own + 1 separator), padding.
    logprob = torch.tensor([[0.0, -1.0, -3.0, -7.0, -2.0, -5.0, 0.0]])
    margin = torch.tensor([[0.0, 0.0, -2.0, -6.0, -0.5, -4.0, 0.0]])
    entropy = torch.tensor([[0.0, 0.5, 1.5, 2.0, 0.7, 3.0, 0.0]])
    stats = torch.stack([logprob, margin, entropy], -1)
    owner = torch.tensor([[-1, 0, 0, 0, 1, 1, -1]])
    separator = torch.tensor([[0, 0, 0, 1, 0, 1, 0]])
    features = step_features(stats, owner, separator) * FEATURE_SCALE
    expected_step0 = [-3.0, -2.0, -7.0, math.log(2), -2.0, 1.5]
    expected_step1 = [-2.0, -2.0, -5.0, math.log(1), -0.5, 0.7]
    for position in (1, 2, 3):
        assert features[0, position].tolist() == pytest.approx(expected_step0)
    for position in (4, 5):
        assert features[0, position].tolist() == pytest.approx(expected_step1)
    assert features[0, 0].abs().sum() == 0 and features[0, 6].abs().sum() == 0
    assert features.shape[-1] == len(FEATURES)


def test_token_statistics_match_the_softmax(policy, tokenizer):
    ids = torch.tensor([encode_steps(tokenizer, QUESTION, STEPS, "\n\n")["input_ids"]])
    with torch.no_grad():
        logits = policy(ids).logits
    stats = token_statistics(logits, ids)
    log_probs = logits[0, 4].log_softmax(-1)
    token = ids[0, 5]
    assert stats[0, 5, 0].item() == pytest.approx(log_probs[token].item(), abs=1e-5)
    assert stats[0, 5, 1].item() == pytest.approx(
        (log_probs[token] - log_probs.max()).item(), abs=1e-5
    )
    assert stats[0, 5, 2].item() == pytest.approx(
        -(log_probs.exp() * log_probs).sum().item(), abs=1e-5
    )
    assert stats[0, 0].abs().sum() == 0


def test_policy_confidence_names_a_missing_model(tmp_path):
    with pytest.raises(ValueError, match="no such model directory"):
        load_policy_confidence(tmp_path / "absent")


def test_token_statistics_are_the_same_in_chunks(policy, tokenizer, monkeypatch):
    """Chunks over positions (for large vocabularies) change nothing, at any chunk size, and a
    chunk boundary on the last position loses nothing."""
    from amcs import step_features

    ids = torch.tensor([encode_steps(tokenizer, QUESTION, STEPS, "\n\n")["input_ids"]] * 2)
    with torch.no_grad():
        logits = policy(ids).logits
    whole = token_statistics(logits, ids)
    assert whole.shape == (2, ids.shape[1], 3) and whole[:, 1:].abs().sum() > 0
    for chunk in (1, 3, ids.shape[1] - 1):
        monkeypatch.setattr(step_features, "STATISTICS_CHUNK", chunk)
        assert torch.allclose(token_statistics(logits, ids), whole, atol=1e-6), chunk


def test_policy_confidence_scores_the_lowest_own_token_probability(policy, tokenizer):
    scorer = load_policy_confidence(TINY_POLICY)
    scores = scorer.score_batch([(QUESTION, STEPS), (QUESTION, ["4 * 5 = 21"])])
    for steps, got in zip([STEPS, ["4 * 5 = 21"]], scores, strict=True):
        enc = encode_steps(tokenizer, QUESTION, steps, "\n\n")
        ids = torch.tensor([enc["input_ids"]])
        with torch.no_grad():
            log_probs = policy(ids).logits[0].log_softmax(-1)
        expected = []
        for index in range(len(steps)):
            own = [
                t
                for t, (o, s) in enumerate(
                    zip(enc["step_owner"], enc["step_separator"], strict=True)
                )
                if o == index and not s
            ]
            expected.append(min(math.exp(log_probs[t - 1, ids[0, t]].item()) for t in own))
        assert got == pytest.approx(expected, abs=1e-4)
    # The policy believes 4 * 5 = 20, not 21.
    assert scores[0][0] > 0.5 > scores[1][0]


def test_class_balance_weighs_both_classes_equally():
    features = [{"labels": [IGNORE_INDEX, 1, 1, 1, 0]}, {"labels": [1, IGNORE_INDEX, 1, 1]}]
    weights = balanced_class_weights(features)
    assert weights.tolist() == pytest.approx([7 / 2, 7 / 12])
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.5, 0.5]]])
    labels = torch.tensor([[1, 0, 1]])
    ce = torch.nn.functional.cross_entropy(logits[0], labels[0], reduction="none")
    w = weights[labels[0]]
    assert prm_loss(logits, labels, None, weights).item() == pytest.approx(
        ((w * ce).sum() / w.sum()).item()
    )
    assert prm_loss(logits, labels).item() == pytest.approx(ce.mean().item())


def test_policy_features_clash_with_training_the_base():
    for clash in ({"lora_r": 8}, {"freeze_layers": 2}, {"gradient_checkpointing": True}):
        with pytest.raises(ConfigError, match="policy_features keeps the whole base frozen"):
            make_training_config({"policy_features": True} | clash)
    with pytest.raises(ConfigError, match="class_balance"):
        make_training_config({"class_balance": True, "labels": "soft"})


def test_policy_feature_rows_carry_step_inputs(tokenizer):
    config = make_training_config({"policy_features": True})
    rows = [{"prompt": QUESTION, "completions": STEPS, "labels": [True, False, False]}]
    (feature,), _ = tokenize_rows(rows, tokenizer, config)
    enc = encode_steps(tokenizer, QUESTION, STEPS, "\n\n")
    assert feature["input_ids"] == enc["input_ids"]
    assert feature["step_owner"] == enc["step_owner"]
    labelled = [(i, y) for i, y in enumerate(feature["labels"]) if y != IGNORE_INDEX]
    assert labelled == list(zip(enc["positions"], [1, 0, 0], strict=True))


@pytest.mark.slow
def test_policy_feature_prm_trains_saves_and_scores_the_same(tmp_path, policy):
    rows = arith_rows(160)
    config = make_training_config(
        {
            "policy_features": True,
            "class_balance": True,
            "num_train_epochs": 3,
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 16,
            "eval_fraction": 0.1,
        }
    )
    metrics = train_prm(rows, str(TINY_POLICY), tmp_path / "prm", config)
    # Corrupted results are what the policy finds surprising: the head learns to flag them.
    assert metrics["eval_step_accuracy"] > 0.8
    saved = json.loads((tmp_path / "prm" / "amcs_prm.json").read_text())
    assert saved["policy_features"]["features"] == list(FEATURES)
    # The base is saved unchanged: it was frozen.
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "prm"))
    for name, weight in policy.state_dict().items():
        assert torch.equal(weight, reloaded.state_dict()[name]), name
    assert set(load_file(str(tmp_path / "prm" / "step_head.safetensors")))
    scorer = load_prm(tmp_path / "prm")
    assert isinstance(scorer.model, StepFeaturePRM)
    right = scorer.score_batch([(QUESTION, STEPS)])[0]
    wrong = scorer.score_batch([(QUESTION, ["4 * 5 = 27", "3 + 27 = 30"])])[0]
    assert min(right) > 0.5 > wrong[0]
    # The async path batches the same model.
    assert asyncio.run(scorer.score(QUESTION, STEPS)) == pytest.approx(right, abs=1e-5)


F1_PROMISE = 0.9
CONFIDENT_ERRORS_FLAGGED = 0.75


@pytest.mark.slow
def test_bundled_prm_finds_first_errors_on_held_out_solutions(tmp_path):
    """The bundled PRM's promise (README): step F1 >= 0.9 at the default threshold on held-out
    tiny-policy solutions (200 here; 500 in the recipe), and it flags the errors the policy makes
    confidently, which the policy's own probabilities cannot."""
    from amcs.backends.hf import HFBackend

    async def examples():
        backend = HFBackend(TINY_POLICY, max_batch_size=128)
        try:
            return await exact_step_examples(backend, held_out_problems(200), seed=0)
        finally:
            await backend.aclose()

    data = asyncio.run(examples())
    assert len(data) >= 190 and sum(e.label >= 0 for e in data) >= 40
    scorer = load_prm(TINY_PRM)
    assert isinstance(scorer.model, StepFeaturePRM)
    report = step_report(
        scorer.score_batch([(e.problem, e.steps) for e in data]), [e.label for e in data]
    )
    assert report["f1"] >= F1_PROMISE, report
    # Confident errors: first wrong steps the policy itself gave >= 0.5 on its least likely token.
    steps = [(e.problem, e.steps) for e in data]
    policy = load_policy_confidence(TINY_POLICY).score_batch(steps)
    prm = scorer.score_batch(steps)
    confident = [
        (prm_scores[e.label], e.steps[e.label])
        for e, prm_scores, own in zip(data, prm, policy, strict=True)
        if e.label >= 0 and own[e.label] >= 0.5
    ]
    assert len(confident) >= 5, confident
    flagged = sum(score < 0.5 for score, _ in confident)
    assert flagged >= CONFIDENT_ERRORS_FLAGGED * len(confident), confident
    # The CLI computes the same F1 from the same file, and the baseline from the policy.
    path = tmp_path / "steps.jsonl"
    write_step_examples(path, data)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", "steps", "--data", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["f1"] == pytest.approx(report["f1"])
    result = CliRunner().invoke(
        app,
        ["eval", "steps", "--data", str(path), "--prm", "policy-confidence", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    baseline = json.loads(out.read_text())
    assert baseline["prm"] == "policy-confidence" and baseline["f1"] > 0.7
