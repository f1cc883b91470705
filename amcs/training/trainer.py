"""Training a PRM: ``transformers.Trainer`` with the PRM loss, run from a PRMTrainingConfig."""

from __future__ import annotations

import contextlib
import copy
import math
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from amcs.cards import prm_card
from amcs.training.collator import PRMCollator
from amcs.training.config import PRMTrainingConfig
from amcs.training.loss import balanced_class_weights, prm_loss
from amcs.training.model import build_prm_model, freeze_bottom_layers
from amcs.training.save import save_prm
from amcs.training.tokenize import IGNORE_INDEX, tokenize_rows


class PRMTrainer(transformers.Trainer):
    """``transformers.Trainer`` with the PRM loss (:func:`prm_loss`): hard cross-entropy at label
    positions, or soft cross-entropy when the batch carries ``soft_labels``.

    The loss is a mean over one micro-batch's label positions, so the Trainer must divide it by
    the gradient accumulation steps. The Trainer skips that division when the model's forward
    takes ``**kwargs`` (it then expects a loss already summed over ``num_items_in_batch``), which
    every decoder model does; without the settings below, gradient_accumulation_steps=N would
    make gradients and the logged loss N times too large."""

    loss_is_scaled_for_ga = False

    def __init__(self, *args, class_weights: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights  # [w_wrong, w_correct] with class_balance
        # Also for transformers releases before loss_is_scaled_for_ga: no num_items_in_batch.
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        soft = inputs.pop("soft_labels", None)
        outputs = model(**inputs)
        loss = prm_loss(outputs.logits, labels, soft, self.class_weights)
        return (loss, outputs) if return_outputs else loss


@torch.no_grad()
def evaluate_step_accuracy(
    model, features: list[dict], collator: PRMCollator, batch_size: int = 8
) -> dict:
    """Step accuracy of ``model`` on tokenized features: a step is predicted correct when
    P(correct) > 0.5 (logit[1] > logit[0]), compared to the hard label (which ``threshold``
    already decided when the features were built). Also returns the mean PRM loss (hard or soft
    as the features carry) and, per feature, its steps' P(correct) and hard labels
    (``step_scores``, ``step_labels``) for first-error F1 (:func:`held_out_f1`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    loss_sum = 0.0
    n_batches = 0
    step_scores: list[list[float]] = []
    step_labels: list[list[int]] = []
    for start in range(0, len(features), batch_size):
        batch = {k: v.to(device) for k, v in collator(features[start : start + batch_size]).items()}
        labels = batch.pop("labels")
        soft = batch.pop("soft_labels", None)
        logits = model(**batch).logits
        loss_sum += float(prm_loss(logits, labels, soft))
        n_batches += 1
        mask = labels != IGNORE_INDEX
        pred = (logits[..., 1] > logits[..., 0]).long()
        correct += int((pred[mask] == labels[mask]).sum())
        total += int(mask.sum())
        p_correct = logits.float().softmax(-1)[..., 1]
        for row in range(labels.shape[0]):
            step_scores.append(p_correct[row][mask[row]].tolist())
            step_labels.append(labels[row][mask[row]].tolist())
    if was_training:
        model.train()
    return {
        "step_accuracy": correct / total if total else float("nan"),
        "n_steps": total,
        "loss": loss_sum / n_batches if n_batches else float("nan"),
        "step_scores": step_scores,
        "step_labels": step_labels,
    }


def held_out_f1(step_scores: list[list[float]], step_labels: list[list[int]]) -> dict:
    """ProcessBench's first-error F1 (:func:`amcs.stepeval.first_error_f1`) of held-out paths:
    predicted first error = first step with P(correct) < 0.5, reference = first step labelled 0
    (-1 when none). Every held-out path counts, an all-"+" one as a correct solution."""
    from amcs.stepeval import first_error_f1, first_minus, predict_first_error

    predictions = [predict_first_error(scores) for scores in step_scores]
    return first_error_f1(predictions, [first_minus(labels) for labels in step_labels])


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@contextlib.contextmanager
def _trainer_args(config: PRMTrainingConfig) -> Iterator[PRMTrainingConfig]:
    """The config the Trainer runs with: ``config`` itself, or, when its output_dir was left
    unset, a copy pointed at a temporary directory that is removed afterwards (the Trainer
    creates its output_dir even when it saves nothing)."""
    if not config.output_dir_is_scratch:
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="amcs-prm-trainer-") as scratch:
        args = copy.copy(config)
        args.output_dir = scratch
        yield args


def split_features(
    features: list[dict], eval_fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """(train, eval), split by problem: the features of one problem (one ``problem`` key, the
    row's prompt; a feature without one is a problem of its own) stay on one side, so runs over
    the same problems pooled for training never score a problem the PRM trained on. Problems
    are shuffled with ``random.Random(seed)`` and held out one by one until the held-out side
    has ``round(eval_fraction * n)`` features (at least 1 when ``eval_fraction`` > 0), but never
    every problem: data of one problem is all for training."""
    groups: dict[object, list[int]] = {}
    for i, feature in enumerate(features):
        groups.setdefault(feature.get("problem", ("row", i)), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    held: set[int] = set()
    if eval_fraction > 0 and len(features) >= 2:
        wanted = max(1, round(eval_fraction * len(features)))
        for group in order[:-1]:  # never every problem
            if len(held) >= wanted:
                break
            held.update(group)
    train = [f for i, f in enumerate(features) if i not in held]
    return train, [f for i, f in enumerate(features) if i in held]


def train_prm(
    rows: list[dict],
    base: str,
    out_dir: str | Path,
    config: PRMTrainingConfig | None = None,
    callbacks: list | None = None,
    data_files: list[str] | None = None,
) -> dict:
    """Train a PRM on TRL-format rows with ``config`` (defaults: ``PRMTrainingConfig()``) as the
    Trainer's args, and save it to ``out_dir``.

    Rows get their hard labels re-derived at ``config.threshold`` and are tokenized
    (:func:`amcs.training.tokenize.tokenize_rows`: rows whose first step does not fit in
    ``max_length`` are dropped, longer ones cut at a step boundary; both are counted). A
    held-out split of ``eval_fraction`` of them (:func:`split_features`) reports step accuracy
    and loss after training. ``freeze_layers`` > 0 keeps the embeddings and that many bottom
    layers frozen; ``lora_r`` > 0 trains LoRA adapters. The model (LoRA merged in), tokenizer and
    ``amcs_prm.json`` are saved by the main process only (:func:`amcs.training.save.save_prm`);
    under ``accelerate launch``/``torchrun`` every rank trains and returns the same metrics.
    A ``README.md`` model card (:func:`amcs.cards.prm_card`) is saved with them: base, format,
    ``data_files`` (the sources of ``rows``) with their fingerprints, the changed training
    settings and the held-out numbers.

    Returns: train_loss, train_steps (optimizer steps), eval_step_accuracy, eval_loss,
    eval_steps, row counts and truncation counts (rows_dropped, rows_truncated, steps_dropped).
    """
    config = config if config is not None else PRMTrainingConfig()
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    features, counts = tokenize_rows(rows, tokenizer, config)
    if not features:
        raise ValueError("no training rows left after tokenization")
    train_features, eval_features = split_features(features, config.eval_fraction, config.seed)

    transformers.set_seed(config.seed)
    model = build_prm_model(base, config)
    freeze_bottom_layers(model, config.freeze_layers)
    collator = PRMCollator(tokenizer.pad_token_id)
    with _trainer_args(config) as args:
        trainer = PRMTrainer(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=_ListDataset(train_features),
            callbacks=callbacks,
            class_weights=balanced_class_weights(train_features) if config.class_balance else None,
        )
        if callbacks:
            # The caller reports progress (amcs train's bar); transformers' PrinterCallback,
            # added when tqdm is off, would also print every log dict to stdout.
            trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        result = trainer.train()
    evaluation = (
        evaluate_step_accuracy(
            trainer.model, eval_features, collator, config.per_device_eval_batch_size
        )
        if eval_features
        else {"step_accuracy": float("nan"), "n_steps": 0, "loss": float("nan")}
    )
    nan = float("nan")
    f1 = held_out_f1(evaluation["step_scores"], evaluation["step_labels"]) if eval_features else {}
    train_loss = float(result.training_loss)
    metrics = {
        "train_loss": train_loss if math.isfinite(train_loss) else float("nan"),
        "train_steps": int(result.global_step),
        "eval_step_accuracy": evaluation["step_accuracy"],
        "eval_f1": f1.get("f1", nan),
        "eval_a1": f1.get("a1_erroneous", nan),
        "eval_a2": f1.get("a2_correct", nan),
        "eval_loss": evaluation["loss"],
        "eval_steps": evaluation["n_steps"],
        "n_rows": len(rows),
        "n_train_rows": len(train_features),
        "n_eval_rows": len(eval_features),
        **counts,
        "labels": config.labels,
        "out_dir": str(out_dir),
    }
    card = prm_card(base, config, metrics, data_files or [])
    save_prm(trainer, tokenizer, out_dir, base, config, card)
    return metrics
