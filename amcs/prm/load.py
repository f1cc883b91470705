"""Loading step scorers: a PRM checkpoint in any input format (:func:`load_prm`), the
policy-confidence baseline (:func:`load_policy_confidence`), and the one loader every command's
``--prm`` / ``--judge`` goes through (:func:`load_scorer`, names in :mod:`amcs.prm.names`)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from amcs.domains import oracle_domain
from amcs.hub import resolve_checkpoint
from amcs.prm.names import (
    POLICY_CONFIDENCE,
    SCORER_NAMES,
    TINY_PRM_NAME,
    ScorerError,
    is_policy_confidence,
)
from amcs.prm.registry import detect_prm_format, format_named
from amcs.prm.remote import SERVED_FORMAT, is_url, load_served_prm
from amcs.prm.scorer import PRMScorer
from amcs.prm.step_tag import DEFAULT_BAD_TOKEN, DEFAULT_GOOD_TOKEN, DEFAULT_STEP_TAG
from amcs.prm.token_cls import TokenClassification
from amcs.step_features import PolicyConfidence
from amcs.steps import DEFAULT_SEPARATOR


def _device_and_dtype(device: str | None, dtype: torch.dtype | None):
    """``device`` or CUDA when available, else CPU; ``dtype`` or bfloat16 on CUDA, float32 on
    CPU."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, dtype


def load_prm(
    path: str | Path,
    prm_format: str | None = None,
    *,
    device: str | None = None,
    max_batch_size: int = 32,
    dtype: torch.dtype | None = None,
    step_tag: str = DEFAULT_STEP_TAG,
    good_token: str = DEFAULT_GOOD_TOKEN,
    bad_token: str = DEFAULT_BAD_TOKEN,
) -> PRMScorer:
    """Load a PRM checkpoint directory as a :class:`PRMScorer`.

    ``path`` is a directory or a hub id (:func:`amcs.hub.resolve_checkpoint`). ``prm_format``
    None detects it (:func:`amcs.prm.registry.detect_prm_format`). ``device`` defaults to CUDA
    when available, else CPU; ``dtype`` to bfloat16 on CUDA and float32 on CPU.
    """
    path = resolve_checkpoint(path)
    if prm_format is None:
        prm_format = detect_prm_format(path, step_tag=step_tag)
    format_class = format_named(prm_format)
    dev, dtype = _device_and_dtype(device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model, options = format_class.load(path, dtype)
    return PRMScorer(
        model.to(dev),
        tokenizer,
        prm_format,
        max_batch_size=max_batch_size,
        step_tag=step_tag,
        good_token=good_token,
        bad_token=bad_token,
        **options,
    )


def load_policy_confidence(
    policy: str | Path,
    *,
    device: str | None = None,
    max_batch_size: int = 32,
    dtype: torch.dtype | None = None,
    separator: str = DEFAULT_SEPARATOR,
) -> PRMScorer:
    """The training-free baseline scorer (:class:`amcs.step_features.PolicyConfidence`): a
    step's score is the policy's lowest probability for one of the step's own tokens, read from
    the causal LM ``policy`` (a directory or hub id) on the sequence it saw."""
    path = resolve_checkpoint(policy, "model")
    dev, dtype = _device_and_dtype(device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    base = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return PRMScorer(
        PolicyConfidence(base).to(dev),
        tokenizer,
        TokenClassification.name,
        max_batch_size=max_batch_size,
        separator=separator,
        step_inputs=True,
    )


def load_scorer(
    spec: str | None,
    *,
    prm_format: str | None = None,
    policy: str | Path | None = None,
    separator: str | None = None,
    max_batch_size: int = 32,
    device: str | None = None,
):
    """The step scorer ``spec`` names, the same for every command:

    - None or ``tiny-prm``: the bundled PRM (:data:`amcs.assets.TINY_PRM`);
    - ``arith-oracle`` (``NAME-oracle`` of any domain with step truth): the domain's exact
      checker (:class:`amcs.verification.DomainOracleScorer`);
    - ``policy-confidence`` (from ``policy``, default the bundled tiny policy) or
      ``policy-confidence:MODEL``: the training-free baseline, on steps joined by ``separator``;
    - ``http://host:port`` (or https): a PRM that vLLM serves (:mod:`amcs.prm.remote`);
    - anything else: a PRM checkpoint directory or hub id for :func:`load_prm`, in
      ``prm_format`` or the one its files show.

    Raises :class:`ScorerError` naming the spec and the names that work."""
    from amcs.assets import TINY_POLICY, TINY_PRM

    if is_url(spec):
        if prm_format not in (None, SERVED_FORMAT):
            raise ScorerError(
                f"--prm-format {prm_format}: a PRM served by vLLM ({spec}) is scored as "
                f"{SERVED_FORMAT} only"
            )
        return load_served_prm(spec, max_batch_size=max_batch_size)
    domain = oracle_domain(spec)
    if domain is not None:
        from amcs.verification import DomainOracleScorer

        return DomainOracleScorer(domain)
    if is_policy_confidence(spec):
        model = spec.partition(":")[2] or policy or TINY_POLICY
        try:
            return load_policy_confidence(
                model,
                device=device,
                max_batch_size=max_batch_size,
                separator=separator or DEFAULT_SEPARATOR,
            )
        except (OSError, ValueError) as exc:
            raise ScorerError(
                f"{POLICY_CONFIDENCE} reads the policy's probabilities: cannot load the policy "
                f"{model} with transformers ({exc})"
            ) from None
    path = TINY_PRM if spec in (None, TINY_PRM_NAME) else spec
    try:
        return load_prm(path, prm_format, device=device, max_batch_size=max_batch_size)
    except (OSError, ValueError) as exc:
        raise ScorerError(
            f"cannot load the PRM {spec or TINY_PRM_NAME}: {exc} ({SCORER_NAMES})"
        ) from None
