"""The PRM model: a 2-label token classifier on a causal-LM checkpoint, fully fine-tuned, with
its bottom layers frozen, or with LoRA adapters."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

from amcs.step_features import StepFeaturePRM
from amcs.training.config import PRMTrainingConfig

_HEAD_NAMES = ("score", "classifier")


def build_prm_model(base: str, config: PRMTrainingConfig | None = None):
    """The model ``config`` asks for: a policy-feature PRM (:class:`StepFeaturePRM` on the
    frozen causal LM ``base``) with ``policy_features``, else a token classifier
    (:func:`build_token_classifier`)."""
    if config is not None and config.policy_features:
        return StepFeaturePRM(AutoModelForCausalLM.from_pretrained(str(base)))
    return build_token_classifier(base, config)


def build_token_classifier(base: str, config: PRMTrainingConfig | None = None):
    """Load ``base`` as a 2-label token classifier (the score head is new when ``base`` is a
    causal-LM checkpoint). With ``config.lora_r`` > 0, wrap it in a peft TOKEN_CLS LoRA model
    (``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules`` become peft's
    ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``): peft adds the classification
    head ("score" / "classifier") to ``modules_to_save``, so the head trains fully while base
    weights are frozen.
    """
    model = AutoModelForTokenClassification.from_pretrained(
        str(base),
        num_labels=2,
        id2label={0: "wrong", 1: "correct"},
        label2id={"wrong": 0, "correct": 1},
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    if config is None or not config.uses_lora:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        # "all-linear" would also put LoRA on the new head, which then cannot be a fully trained
        # module in modules_to_save; keep the head out of the LoRA targets.
        exclude_modules=[name for name in _HEAD_NAMES if hasattr(model, name)],
    )
    return get_peft_model(model, lora)


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
