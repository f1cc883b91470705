import asyncio
import json
from pathlib import Path
from threading import Event

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForTokenClassification,
)

from amcs.assets import TINY_POLICY
from amcs.prm import PRM_FORMATS, PRMScorer, detect_prm_format, load_prm
from amcs.prompts import DEFAULT_SYSTEM_PROMPT
from amcs.training import PRM_CONFIG_FILE
from amcs.training.model import build_prm_model
from amcs.training.tokenize import IGNORE_INDEX, tokenize_prm_row

QUESTION = "What is 2 + 3 * 4?"
STEPS = ["3 * 4 = 12", "2 + 12 = 14", "The answer is \\boxed{14}."]
WORDS = "what is a b c d + - = * ? Step 1: 2: 3: answer".split()  # noqa: SIM905
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def word_tokenizer(specials: list[str] = ()) -> PreTrainedTokenizerFast:
    """A whitespace-split word-level tokenizer over WORDS, plus added special tokens."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "ки", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    if specials:
        tokenizer.add_tokens(list(specials), special_tokens=True)
    return tokenizer


@pytest.fixture(scope="module")
def token_cls_dir(tmp_path_factory):
    """The bundled tiny policy with a fresh 2-label head, saved like `amcs train` saves a PRM
    (with a non-default separator, so reading amcs_prm.json matters)."""
    out = tmp_path_factory.mktemp("token-cls")
    torch.manual_seed(0)
    model = build_prm_model(str(TINY_POLICY))
    with torch.no_grad():
        model.score.weight.mul_(5)  # spread the scores away from 0.5
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(TINY_POLICY)).save_pretrained(out)
    config = {"separator": "\n", "label_meaning": {"1": "step correct"}, "labels": "hard"}
    (out / PRM_CONFIG_FILE).write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def token_cls(token_cls_dir):
    return load_prm(token_cls_dir, device="cpu", max_batch_size=8)


@pytest.fixture(scope="module")
def step_tag_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("step-tag")
    tokenizer = word_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(50)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen-prm")
    tokenizer = word_tokenizer(["<|im_start|>", "<|im_end|>", "<extra_0>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForTokenClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(50)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def probs_at(logits: torch.Tensor, positions: list[int], column: int = 1) -> list[float]:
    return logits[0, positions].float().softmax(-1)[:, column].tolist()


# --- token-cls -------------------------------------------------------------------------------


def test_token_cls_detected_and_reads_separator(token_cls_dir, token_cls):
    assert detect_prm_format(token_cls_dir) == "token-cls"
    assert token_cls.prm_format == "token-cls"
    assert token_cls.separator == "\n"


def test_token_cls_positions_match_training(token_cls):
    tok = token_cls.tokenizer
    encoded = token_cls.encode("1", ["2", "3"])
    ids, positions = encoded.ids, encoded.positions
    # Char-level tokenizer, no BOS: "1", "2", "\n", "3", "\n"; each step's label on its "\n".
    assert tok.convert_ids_to_tokens(ids) == ["1", "2", "\n", "3", "\n"]
    assert positions == [2, 4]
    row = {"prompt": QUESTION, "completions": STEPS, "labels": [True, False, True]}
    feat = tokenize_prm_row(row, tok, "\n")
    encoded = token_cls.encode(QUESTION, STEPS)
    ids, positions = encoded.ids, encoded.positions
    assert ids == feat["input_ids"]
    assert positions == [i for i, label in enumerate(feat["labels"]) if label != IGNORE_INDEX]


def test_token_cls_scores_match_manual_softmax(token_cls):
    scores = token_cls.score_batch([(QUESTION, STEPS)])[0]
    encoded = token_cls.encode(QUESTION, STEPS)
    ids, positions = encoded.ids, encoded.positions
    with torch.no_grad():
        logits = token_cls.model(input_ids=torch.tensor([ids])).logits
    assert len(scores) == len(STEPS)
    assert all(0.0 < s < 1.0 for s in scores)
    assert scores == pytest.approx(probs_at(logits, positions), abs=1e-6)
    assert max(scores) - min(scores) > 1e-3  # the check above could fail


def test_token_cls_prefix_scores_stable_and_batched_equals_unbatched(token_cls):
    items = [(QUESTION, STEPS[:k]) for k in range(1, len(STEPS) + 1)]
    items.append(("What is 1 + 1?", ["1 + 1 = 2", "The answer is 2."]))
    batched = token_cls.score_batch(items)
    for (question, steps), scores in zip(items, batched, strict=True):
        assert len(scores) == len(steps)
        alone = token_cls.score_batch([(question, steps)])[0]
        assert scores == pytest.approx(alone, abs=1e-5)
    full = batched[len(STEPS) - 1]
    for k in range(1, len(STEPS)):
        assert batched[k - 1] == pytest.approx(full[:k], abs=1e-5)


def test_token_cls_without_config_file(token_cls_dir, tmp_path):
    for name in token_cls_dir.iterdir():
        if name.name != PRM_CONFIG_FILE:
            (tmp_path / name.name).write_bytes(name.read_bytes())
    assert detect_prm_format(tmp_path) == "token-cls"
    scorer = load_prm(tmp_path, device="cpu")
    assert scorer.separator == "\n\n"
    # Each step is scored on the last token of its "\n\n", not on the "\n" the config named.
    encoded = scorer.encode(QUESTION, STEPS)
    ids, positions = encoded.ids, encoded.positions
    text = [scorer.tokenizer.decode(ids[: p + 1]) for p in positions]
    assert [t.endswith(step + "\n\n") for t, step in zip(text, STEPS, strict=True)] == [True] * 3
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([ids])).logits
    scores = scorer.score_batch([(QUESTION, STEPS)])[0]
    assert scores == pytest.approx(probs_at(logits, positions), abs=1e-6)


def test_empty_steps_and_too_long(token_cls):
    calls = token_cls.calls
    assert token_cls.score_batch([(QUESTION, []), (QUESTION, STEPS[:1])])[0] == []
    assert token_cls.calls == calls + 2
    with pytest.raises(ValueError, match="512 positions"):
        token_cls.score_batch([("1" * 600, STEPS)])


# --- step-tag --------------------------------------------------------------------------------


def test_step_tag_scores_match_manual(step_tag_dir):
    assert detect_prm_format(step_tag_dir) == "step-tag"
    scorer = load_prm(step_tag_dir, device="cpu")
    question, steps = "what is a + b ?", ["Step 1: a + b = c", "Step 2: answer c"]
    tok = scorer.tokenizer
    text = "what is a + b ? Step 1: a + b = c ки\nStep 2: answer c ки"
    ids = tok(text)["input_ids"]
    tag, plus, minus = tok.convert_tokens_to_ids(["ки", "+", "-"])
    positions = [i for i, t in enumerate(ids) if t == tag]
    encoded = scorer.encode(question, steps)
    assert (encoded.ids, encoded.positions) == (ids, positions)
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([ids])).logits[..., [plus, minus]]
    expected = probs_at(logits, positions, column=0)
    scores = scorer.score_batch([(question, steps)])[0]
    assert scores == pytest.approx(expected, abs=1e-6)
    assert abs(scores[0] - scores[1]) > 1e-3
    # Without logits_to_keep (models that lack it) the full logits give the same scores.
    scorer.format.keeps_logits = False
    assert scorer.score_batch([(question, steps)])[0] == pytest.approx(expected, abs=1e-6)


def test_step_tag_errors(step_tag_dir):
    scorer = load_prm(step_tag_dir, device="cpu")
    with pytest.raises(ValueError, match="found 3"):
        scorer.score_batch([("what ки", ["a", "b"])])
    with pytest.raises(ValueError, match="not a single token"):
        PRMScorer(scorer.model, scorer.tokenizer, "step-tag", step_tag="zzz")


# --- qwen-prm --------------------------------------------------------------------------------


def test_qwen_prm_scores_match_manual(qwen_dir):
    assert detect_prm_format(qwen_dir) == "qwen-prm"
    scorer = load_prm(qwen_dir, device="cpu")
    question, steps = "what is a + b ?", ["a + b = c", "answer c", "d"]
    tok = scorer.tokenizer
    text = (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        "<|im_start|>assistant\na + b = c<extra_0>answer c<extra_0>d<extra_0><|im_end|>\n"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    marker = tok.convert_tokens_to_ids("<extra_0>")
    positions = [i for i, t in enumerate(ids) if t == marker]
    assert len(positions) == 3
    encoded = scorer.encode(question, steps)
    assert (encoded.ids, encoded.positions) == (ids, positions)
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([ids])).logits
    scores = scorer.score_batch([(question, steps), (question, steps[:1])])
    assert scores[0] == pytest.approx(probs_at(logits, positions), abs=1e-6)
    assert scores[1] == pytest.approx(scores[0][:1], abs=1e-5)
    assert max(scores[0]) - min(scores[0]) > 1e-3


# --- detection -------------------------------------------------------------------------------


def test_detect_rejects_other_directories(tmp_path):
    with pytest.raises(ValueError, match="--prm-format") as err:
        detect_prm_format(TINY_POLICY)  # a causal LM with no step tag: a policy, not a PRM
    assert str(TINY_POLICY) in str(err.value)
    with pytest.raises(ValueError, match="--prm-format"):
        detect_prm_format(tmp_path)
    with pytest.raises(ValueError, match="unknown PRM format"):
        load_prm(tmp_path, "reward")
    assert PRM_FORMATS == ("token-cls", "step-tag", "qwen-prm")


# --- asyncio ---------------------------------------------------------------------------------


def varied_items(n: int) -> list[tuple[str, list[str]]]:
    return [(f"What is {i} + {i}?", STEPS[: 1 + i % len(STEPS)]) for i in range(n)]


def test_concurrent_calls_share_forward_passes(token_cls_dir, monkeypatch):
    scorer = load_prm(token_cls_dir, device="cpu", max_batch_size=8)
    items = varied_items(20)
    expected_first, *expected = scorer.score_batch([(QUESTION, STEPS), *items])
    calls, passes = scorer.calls, scorer.forward_passes
    # The first call's forward pass waits until the other 20 calls are queued, so how they are
    # batched does not depend on how the worker thread and the event loop are scheduled.
    forward, entered, release, batch_sizes = scorer.model.forward, Event(), Event(), []

    def gated(input_ids, **kwargs):
        batch_sizes.append(len(input_ids))
        entered.set()
        assert release.wait(600)  # a hang guard
        return forward(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(scorer.model, "forward", gated)

    async def main():
        try:
            first = asyncio.create_task(scorer.score(QUESTION, STEPS))
            await asyncio.to_thread(entered.wait, 600)
            rest = [asyncio.create_task(scorer.score(q, s)) for q, s in items]
            await asyncio.sleep(0)  # each call runs up to its await: all 20 are queued
            release.set()
            return await first, await asyncio.gather(*rest)
        finally:
            await scorer.aclose()

    first, results = asyncio.run(main())
    assert first == pytest.approx(expected_first, abs=1e-5)
    for got, want in zip(results, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    # One pass for the first call, then the 20 queued ones in batches of max_batch_size.
    assert batch_sizes == [1, 8, 8, 4]
    assert scorer.forward_passes - passes == 4
    assert scorer.calls - calls == 21
    assert not scorer.worker.running


def test_errors_reach_their_callers(token_cls_dir, monkeypatch):
    scorer = load_prm(token_cls_dir, device="cpu", max_batch_size=8)

    async def bad_input():
        results = await asyncio.gather(
            scorer.score(QUESTION, STEPS),
            scorer.score("1" * 600, STEPS),
            scorer.score(QUESTION, []),
            return_exceptions=True,
        )
        assert results[0] == pytest.approx(scorer.score_batch([(QUESTION, STEPS)])[0], abs=1e-5)
        assert isinstance(results[1], ValueError) and "512 positions" in str(results[1])
        assert results[2] == []

    asyncio.run(bad_input())

    def boom(*args, **kwargs):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(scorer.model, "forward", boom)

    async def bad_model():
        results = await asyncio.gather(
            *(scorer.score(q, s) for q, s in varied_items(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
        await scorer.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await scorer.score(QUESTION, STEPS)

    asyncio.run(bad_model())


# --- the format registry and the hub-id rule -----------------------------------------------------


def test_a_format_is_one_class_and_one_registry_line(step_tag_dir, tmp_path, monkeypatch):
    """A format added to amcs.prm.registry.FORMATS is detected (here by its own file), loaded and
    scored like the built-in ones, with nothing else changed."""
    from amcs.prm import registry
    from amcs.prm.step_tag import StepTag

    class StepTagLines(StepTag):
        """step-tag with the question on a line of its own."""

        name = "step-tag-lines"
        own_file = "lines.json"

        def token_ids(self, question, steps):
            text = question + "\n" + "\n".join(f"{step} {self.marker}" for step in steps)
            return list(self.tokenizer(text)["input_ids"])

    monkeypatch.setitem(registry.FORMATS, StepTagLines.name, StepTagLines)
    for name in step_tag_dir.iterdir():
        (tmp_path / name.name).write_bytes(name.read_bytes())
    assert detect_prm_format(tmp_path) == "step-tag"
    (tmp_path / "lines.json").write_text("{}")
    assert detect_prm_format(tmp_path) == "step-tag-lines"
    scorer = load_prm(tmp_path, device="cpu")
    assert scorer.prm_format == "step-tag-lines" and isinstance(scorer.format, StepTagLines)
    items = [("what is a + b ?", ["a + b = c", "answer c"]), ("what is c ?", ["answer c"])]
    # The word tokenizer splits on any whitespace: the same ids as step-tag, so the same scores.
    assert scorer.score_batch(items) == load_prm(step_tag_dir, device="cpu").score_batch(items)
    assert scorer.encode(*items[0]).ids == load_prm(step_tag_dir).encode(*items[0]).ids
    with pytest.raises(ValueError, match="unknown PRM format 'nope'.*step-tag-lines"):
        PRMScorer(scorer.model, scorer.tokenizer, "nope")


def test_one_hub_id_rule_for_datasets_and_checkpoints(tmp_path, monkeypatch):
    """amcs.hub.is_hub_id: [namespace/]name, ASCII, each part starting with a letter or digit;
    a checkpoint needs the namespace, so a bare word that is not a directory is a missing
    directory at once (no hub request)."""
    from amcs.hub import is_hub_id, looks_like_local_path, resolve_checkpoint

    for name in ("Qwen/Qwen2.5-Math-PRM-7B", "openai/gsm8k", "peiyi9979/math-shepherd-mistral"):
        assert is_hub_id(name) and is_hub_id(name, namespaced=True)
    assert is_hub_id("gsm8k") and not is_hub_id("gsm8k", namespaced=True)
    for name in ("org/-x", "org/.hidden", "org/_x", "ünï/x", "a/b/c", "./x", "org/", "/x"):
        assert not is_hub_id(name) and looks_like_local_path(name), name
    monkeypatch.chdir(tmp_path)

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_hub)
    for name in ("my-prm", "org/-x"):
        with pytest.raises(ValueError, match=f"^{name}: no such PRM directory$"):
            resolve_checkpoint(name)
    (tmp_path / "my-prm").mkdir()
    assert resolve_checkpoint("my-prm") == Path("my-prm")
    with pytest.raises(ValueError, match="cannot fetch model org/x from the hub: .*asked"):
        resolve_checkpoint("org/x", "model")
