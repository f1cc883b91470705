"""Train a process reward model (PRM) on TRL's stepwise dataset format.

TRL 1.14 removed ``PRMTrainer``; this module keeps TRL's dataset format and label convention and
trains with plain ``transformers.Trainer`` (+ ``peft`` LoRA when asked).

Rows: ``{"prompt": str, "completions": [step, ...], "labels": [bool, ...]}``, optionally with
``"values": [float, ...]`` (soft Monte-Carlo values in [0, 1]) for ``labels="soft"``.

The PRM is an ``AutoModelForTokenClassification`` with 2 labels (1 = step correct, 0 = step
wrong); the label of a step sits on the last token of ``step + separator``
(see :func:`tokenize_prm_row`). A step's score at inference is P(label 1) at that token.
``train_prm`` saves the model, its tokenizer and ``amcs_prm.json`` (separator, label meaning,
base model, label kind) so the scorer can rebuild the same inputs.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForTokenClassification, AutoTokenizer, TrainingArguments

IGNORE_INDEX = -100
SOFT_IGNORE = -1.0
PRM_CONFIG_FILE = "amcs_prm.json"
LABEL_MEANING = {"1": "step correct", "0": "step wrong"}


def _tokenizer_adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def tokenize_prm_row(
    row: dict,
    tokenizer,
    separator: str = "\n\n",
    max_length: int | None = None,
    labels: str = "hard",
) -> dict | None:
    """Tokenize one PRM row into token-classification inputs (TRL's PRM convention).

    ``input_ids`` = [BOS if the tokenizer adds one by default] + ids(prompt) + for each step
    ids(step + separator); each piece is tokenized on its own (no special tokens) and the ids are
    concatenated, so step boundaries are exact token boundaries.

    Labels: the label of step i sits on the LAST token of ``step_i + separator``; every other
    position holds -100 (ignored). Class 1 = step correct, class 0 = step wrong.

    - ``labels="hard"``: ``labels[pos]`` = 1 if ``row["labels"][i]`` else 0.
    - ``labels="soft"``: ``soft_labels`` (floats aligned with ``input_ids``) holds the target
      P(correct) ``row["values"][i]`` in [0, 1] at label positions and -1.0 elsewhere; ``labels``
      still holds the hard class (value >= 0.5 when the row has no ``labels``) for metrics.

    Truncation never drops a label silently: if the sequence is longer than ``max_length`` it is
    cut at the last step boundary that fits (the kept steps keep their labels); when not even the
    first step fits, the row is dropped and ``None`` is returned. ``n_steps_kept`` reports how
    many steps survived (``n_steps`` the original count).
    """
    if labels not in ("hard", "soft"):
        raise ValueError(f"labels must be 'hard' or 'soft', got {labels!r}")
    steps = list(row["completions"])
    if labels == "soft":
        if "values" not in row:
            raise ValueError("labels='soft' needs a 'values' list in the row")
        # None: a step whose MC was not measured; masked out of the soft loss.
        values = [None if v is None else float(v) for v in row["values"]]
        if len(values) != len(steps):
            raise ValueError("'values' and 'completions' differ in length")
        if any(v is not None and not 0.0 <= v <= 1.0 for v in values):
            raise ValueError("soft values must lie in [0, 1]")
        if "labels" not in row and None in values:
            raise ValueError("a row with unmeasured (null) values needs 'labels'")
        hard = [bool(b) for b in row["labels"]] if "labels" in row else [v >= 0.5 for v in values]
    else:
        values = None
        hard = [bool(b) for b in row["labels"]]
    if len(hard) != len(steps):
        raise ValueError("'labels' and 'completions' differ in length")

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    input_ids: list[int] = []
    if _tokenizer_adds_bos(tokenizer):
        input_ids.append(tokenizer.bos_token_id)
    input_ids += encode(row["prompt"])
    label_ids = [IGNORE_INDEX] * len(input_ids)
    soft = [SOFT_IGNORE] * len(input_ids)
    kept = 0
    for i, step in enumerate(steps):
        piece = encode(step + separator)
        if not piece:
            raise ValueError(f"step {i} tokenizes to nothing")
        if max_length is not None and len(input_ids) + len(piece) > max_length:
            break
        input_ids += piece
        label_ids += [IGNORE_INDEX] * (len(piece) - 1) + [1 if hard[i] else 0]
        soft += [SOFT_IGNORE] * (len(piece) - 1) + [
            values[i] if values is not None and values[i] is not None else SOFT_IGNORE
        ]
        kept += 1
    if kept == 0 and steps:
        return None
    out = {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": label_ids,
        "n_steps_kept": kept,
        "n_steps": len(steps),
    }
    if labels == "soft":
        out["soft_labels"] = soft
    return out


_HEAD_NAMES = ("score", "classifier")


def build_prm_model(base: str, lora: dict | None = None):
    """Load ``base`` as a 2-label token classifier (the score head is new when ``base`` is a
    causal-LM checkpoint). With ``lora`` (keys r, lora_alpha, lora_dropout, target_modules),
    wrap it in a peft TOKEN_CLS LoRA model: peft adds the classification head ("score" /
    "classifier") to ``modules_to_save``, so the head trains fully while base weights are frozen.
    """
    model = AutoModelForTokenClassification.from_pretrained(
        str(base),
        num_labels=2,
        id2label={0: "wrong", 1: "correct"},
        label2id={"wrong": 0, "correct": 1},
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    if lora is None:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("lora_alpha", 16)),
        lora_dropout=float(lora.get("lora_dropout", 0.0)),
        target_modules=lora.get("target_modules") or "all-linear",
        # "all-linear" would also put LoRA on the new head, which then cannot be a fully trained
        # module in modules_to_save; keep the head out of the LoRA targets.
        exclude_modules=[name for name in _HEAD_NAMES if hasattr(model, name)],
    )
    return get_peft_model(model, config)


def freeze_bottom_layers(model, n_layers: int) -> int:
    """Freeze the token embeddings and the first ``n_layers`` decoder layers (partial
    fine-tuning: the lower layers keep what the base model computes, e.g. a policy's own
    next-token predictions, and only the layers above and the head learn). Returns the number
    of parameters frozen."""
    if n_layers <= 0:
        return 0
    body = getattr(model, "model", None) or getattr(model, "base_model", None)
    layers = getattr(body, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find decoder layers to freeze in {type(model).__name__}")
    if n_layers > len(layers):
        raise ValueError(f"freeze_layers={n_layers} but the model has {len(layers)} layers")
    frozen = [body.get_input_embeddings(), *layers[:n_layers]]
    count = 0
    for module in frozen:
        for param in module.parameters():
            param.requires_grad = False
            count += param.numel()
    return count


class PRMCollator:
    """Right-pad ``input_ids`` (pad id), ``attention_mask`` (0), ``labels`` (-100) and, when
    present, ``soft_labels`` (-1.0). Extra keys (``n_steps_kept``...) are dropped."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)

        def pad(key: str, value, dtype) -> torch.Tensor:
            return torch.tensor(
                [list(f[key]) + [value] * (width - len(f[key])) for f in features], dtype=dtype
            )

        batch = {
            "input_ids": pad("input_ids", self.pad_token_id, torch.long),
            "attention_mask": pad("attention_mask", 0, torch.long),
            "labels": pad("labels", IGNORE_INDEX, torch.long),
        }
        if all("soft_labels" in f for f in features):
            batch["soft_labels"] = pad("soft_labels", SOFT_IGNORE, torch.float32)
        return batch


def prm_loss(
    logits: torch.Tensor, labels: torch.Tensor, soft_labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over label positions (``labels != -100``). With ``soft_labels`` the
    target at each label position is the distribution [1 - v, v] instead of the hard class;
    positions whose soft value is unknown (SOFT_IGNORE, a null value) are masked out."""
    mask = labels != IGNORE_INDEX
    if soft_labels is not None:
        mask = mask & (soft_labels >= 0)
    picked = logits[mask].float()
    if picked.numel() == 0:
        return logits.sum() * 0.0
    if soft_labels is None:
        return F.cross_entropy(picked, labels[mask])
    v = soft_labels[mask].to(picked.dtype)
    target = torch.stack([1.0 - v, v], dim=-1)
    return -(target * F.log_softmax(picked, dim=-1)).sum(-1).mean()


class PRMTrainer(transformers.Trainer):
    """``transformers.Trainer`` with the PRM loss (:func:`prm_loss`): hard cross-entropy at label
    positions, or soft cross-entropy when the batch carries ``soft_labels``."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        soft = inputs.pop("soft_labels", None)
        outputs = model(**inputs)
        loss = prm_loss(outputs.logits, labels, soft)
        return (loss, outputs) if return_outputs else loss


@torch.no_grad()
def evaluate_step_accuracy(
    model, features: list[dict], collator: PRMCollator, batch_size: int = 8, threshold: float = 0.0
) -> dict:
    """Step accuracy of ``model`` on tokenized features: a step is predicted correct when
    logit[1] - logit[0] > ``threshold`` (0.0 = argmax, P(correct) > 0.5), compared to the hard
    label. Also returns the mean PRM loss (hard or soft as the features carry)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    loss_sum = 0.0
    n_batches = 0
    for start in range(0, len(features), batch_size):
        batch = {k: v.to(device) for k, v in collator(features[start : start + batch_size]).items()}
        labels = batch.pop("labels")
        soft = batch.pop("soft_labels", None)
        logits = model(**batch).logits
        loss_sum += float(prm_loss(logits, labels, soft))
        n_batches += 1
        mask = labels != IGNORE_INDEX
        pred = (logits[..., 1] - logits[..., 0] > threshold).long()
        correct += int((pred[mask] == labels[mask]).sum())
        total += int(mask.sum())
    if was_training:
        model.train()
    return {
        "step_accuracy": correct / total if total else float("nan"),
        "n_steps": total,
        "loss": loss_sum / n_batches if n_batches else float("nan"),
    }


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def train_prm(
    rows: list[dict],
    base: str,
    out_dir: str | Path,
    *,
    labels: str = "hard",
    lora: dict | None = None,
    epochs: float = 1,
    lr: float = 1e-4,
    batch_size: int = 8,
    max_length: int = 512,
    eval_fraction: float = 0.1,
    seed: int = 0,
    threshold: float = 0.0,
    callbacks: list | None = None,
    separator: str = "\n\n",
    max_steps: int = -1,
    freeze_layers: int = 0,
    bf16: bool = False,
) -> dict:
    """Train a PRM on TRL-format rows and save it to ``out_dir``.

    Rows are tokenized with :func:`tokenize_prm_row` (rows whose first step does not fit in
    ``max_length`` are dropped, longer ones cut at a step boundary; both are counted). A
    held-out split of ``round(eval_fraction * n)`` rows (at least 1 when ``eval_fraction > 0``
    and at least 2 rows remain) is drawn with ``random.Random(seed)``. Training uses
    :class:`PRMTrainer` (CPU when CUDA is absent, no reporting, no checkpoints); ``max_steps``
    > 0 caps the optimizer steps; ``freeze_layers`` > 0 (full fine-tuning only) keeps the
    embeddings and that many bottom layers frozen (:func:`freeze_bottom_layers`). The model (LoRA merged in), tokenizer and ``amcs_prm.json``
    are saved. Returns metrics: train_loss, eval_step_accuracy, eval_loss, row/step counts and
    truncation counts (rows_dropped, rows_truncated, steps_dropped). ``bf16`` trains with
    bfloat16 autocast (on a GPU that has it).
    """
    if labels not in ("hard", "soft"):
        raise ValueError(f"labels must be 'hard' or 'soft', got {labels!r}")
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    features: list[dict] = []
    rows_dropped = rows_truncated = steps_dropped = 0
    for row in rows:
        feat = tokenize_prm_row(row, tokenizer, separator, max_length, labels)
        if feat is None:
            rows_dropped += 1
            steps_dropped += len(row["completions"])
            continue
        if feat["n_steps_kept"] < feat["n_steps"]:
            rows_truncated += 1
            steps_dropped += feat["n_steps"] - feat["n_steps_kept"]
        features.append(feat)
    if not features:
        raise ValueError("no training rows left after tokenization")

    order = list(range(len(features)))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if eval_fraction > 0 and len(features) >= 2:
        n_eval = min(len(features) - 1, max(1, round(eval_fraction * len(features))))
    eval_features = [features[i] for i in order[:n_eval]]
    train_features = [features[i] for i in order[n_eval:]]

    transformers.set_seed(seed)
    model = build_prm_model(base, lora)
    if freeze_layers:
        if lora is not None:
            raise ValueError("freeze_layers is for full fine-tuning; LoRA already freezes the base")
        freeze_bottom_layers(model, freeze_layers)
    collator = PRMCollator(tokenizer.pad_token_id)
    scratch = tempfile.TemporaryDirectory(prefix="amcs-prm-")
    args = TrainingArguments(
        output_dir=scratch.name,  # nothing is saved there (save_strategy="no")
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10,
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=bf16,
    )
    trainer = PRMTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=_ListDataset(train_features),
        callbacks=callbacks,
    )
    try:
        result = trainer.train()
    finally:
        scratch.cleanup()
    trained = trainer.model
    evaluation = (
        evaluate_step_accuracy(trained, eval_features, collator, batch_size, threshold)
        if eval_features
        else {"step_accuracy": float("nan"), "n_steps": 0, "loss": float("nan")}
    )

    if lora is not None:
        trained = trained.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    prm_config = {
        "separator": separator,
        "label_meaning": LABEL_MEANING,
        "base_model": str(base),
        "labels": labels,
    }
    (out_dir / PRM_CONFIG_FILE).write_text(json.dumps(prm_config, indent=2) + "\n")

    train_loss = float(result.training_loss)
    return {
        "train_loss": train_loss if math.isfinite(train_loss) else float("nan"),
        "train_steps": int(result.global_step),
        "eval_step_accuracy": evaluation["step_accuracy"],
        "eval_loss": evaluation["loss"],
        "eval_steps": evaluation["n_steps"],
        "n_rows": len(rows),
        "n_train_rows": len(train_features),
        "n_eval_rows": len(eval_features),
        "rows_dropped": rows_dropped,
        "rows_truncated": rows_truncated,
        "steps_dropped": steps_dropped,
        "labels": labels,
        "out_dir": str(out_dir),
    }


def load_prm_config(path: str | Path) -> dict[str, Any]:
    """Read ``amcs_prm.json`` from a saved PRM directory."""
    return json.loads((Path(path) / PRM_CONFIG_FILE).read_text())
