"""Load a process reward model (PRM) and score solution steps with it.

A step's score is the PRM's probability that the step is correct, in [0, 1]. Three checkpoint
layouts are understood (``prm_format``):

``token-cls``
    Our own PRMs from ``amcs train`` (and TRL-style token-classification PRMs): an
    ``AutoModelForTokenClassification`` with 2 labels (1 = step correct), its tokenizer and,
    for ours, ``amcs_prm.json`` (separator, label meaning, base model, label kind). Inputs are
    built exactly as in training (:func:`amcs.training.tokenize.tokenize_prm_row`): prompt ids, then the
    ids of ``step + separator`` for each step; a step's score is softmax(logits)[1] on the last
    token of ``step + separator``. Without ``amcs_prm.json`` the separator is ``"\\n\\n"``.

``step-tag``
    Math-Shepherd / OpenR-style causal LMs. The input text is
    ``question + " " + "\\n".join(step + " " + tag for step in steps)`` (tag ``"ки"`` by
    default), and a step's score is P(good) from the next-token logits at the tag's position,
    restricted to the good and bad tokens (``"+"`` and ``"-"``).

``qwen-prm``
    The Qwen2.5-Math-PRM layout: a chat (system prompt, user = question, assistant = the steps
    each followed by ``"<extra_0>"``) rendered with the tokenizer's chat template; the model
    returns (batch, seq, 2) logits and a step's score is softmax(logits)[..., 1] at its
    ``"<extra_0>"`` token. Real checkpoints load with remote code (``AutoModel`` +
    ``trust_remote_code``, when config.json has an ``auto_map``); otherwise the checkpoint loads
    as ``AutoModelForTokenClassification``.

:func:`detect_prm_format` guesses the format from the files; a plain causal LM whose vocabulary
happens to hold the step tag looks like a step-tag PRM, so pass the format when unsure.

:class:`PRMScorer` scores synchronously (:meth:`PRMScorer.score_batch`) or from asyncio
(:meth:`PRMScorer.score`): concurrent ``score`` calls are queued and one worker thread runs them
together in padded batches of up to ``max_batch_size`` sequences, so many searches share each
forward pass and the event loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import inspect
import json
import logging
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from amcs.prm_remote import is_url, load_served_prm
from amcs.prompts import DEFAULT_SYSTEM_PROMPT
from amcs.scorer_names import (
    ARITH_ORACLE,
    POLICY_CONFIDENCE,
    SCORER_NAMES,
    TINY_PRM_NAME,
    ScorerError,
    is_policy_confidence,
)
from amcs.step_features import (
    STEP_INPUT_PAD,
    STEP_INPUTS,
    PolicyConfidence,
    StepFeaturePRM,
    encode_steps,
    read_policy_features,
)
from amcs.steps import DEFAULT_SEPARATOR
from amcs.threads import hand_over
from amcs.training.save import PRM_CONFIG_FILE, load_prm_config
from amcs.training.tokenize import IGNORE_INDEX, tokenize_prm_row

PRM_FORMATS = ("token-cls", "step-tag", "qwen-prm")
DEFAULT_STEP_TAG = "ки"
DEFAULT_GOOD_TOKEN = "+"
DEFAULT_BAD_TOKEN = "-"
QWEN_STEP_TOKEN = "<extra_0>"


def _token_id(tokenizer, text: str) -> int | None:
    """The id of ``text`` when it encodes (without special tokens) to one token, else None.

    A leading token that decodes to only whitespace is ignored (sentencepiece tokenizers may put
    a lone prefix-space piece first); the unknown token does not count."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) > 1 and not tokenizer.decode(ids[:1]).strip():
        ids = ids[1:]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    return ids[0]


def _required_token_id(tokenizer, text: str, role: str) -> int:
    token_id = _token_id(tokenizer, text)
    if token_id is None:
        raise ValueError(f"the {role} {text!r} is not a single token in the PRM's vocabulary")
    return token_id


@dataclass
class Encoded:
    """One sequence to score: its ids, the position of each step's score, and extra
    per-token inputs for step-input models (amcs.step_features.STEP_INPUTS)."""

    ids: list[int]
    positions: list[int]
    extra: dict[str, list[int]]


@dataclass(eq=False)
class _Request:
    question: str
    steps: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop

    def resolve(self, result) -> None:
        """Hand a result or an exception to the caller's event loop (from the worker thread)."""
        hand_over(self.loop, self.future, result)


class PRMScorer:
    """Scores the steps of solutions with a loaded PRM (see the module docstring for formats).

    ``calls`` counts the (question, steps) sequences scored so far and ``forward_passes`` the
    batched model forward passes run for them.
    """

    def __init__(
        self,
        model,
        tokenizer,
        prm_format: str,
        *,
        max_batch_size: int = 32,
        separator: str = DEFAULT_SEPARATOR,
        step_tag: str = DEFAULT_STEP_TAG,
        good_token: str = DEFAULT_GOOD_TOKEN,
        bad_token: str = DEFAULT_BAD_TOKEN,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        step_inputs: bool = False,
    ) -> None:
        if prm_format not in PRM_FORMATS:
            raise ValueError(f"unknown PRM format {prm_format!r}; expected one of {PRM_FORMATS}")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prm_format = prm_format
        self.max_batch_size = max_batch_size
        self.separator = separator
        self.step_tag = step_tag
        self.system_prompt = system_prompt
        # Models reading the policy's view of each step (amcs.step_features) get the policy's
        # prompt and the step_owner / step_separator inputs.
        self.step_inputs = step_inputs
        if step_inputs and prm_format != "token-cls":
            raise ValueError("step inputs go with token-classification PRMs only")
        self.device = next(model.parameters()).device
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        if prm_format == "step-tag":
            self.marker_id = _required_token_id(tokenizer, step_tag, "step tag")
            self.good_id = _required_token_id(tokenizer, good_token, "good token")
            self.bad_id = _required_token_id(tokenizer, bad_token, "bad token")
            if self.good_id == self.bad_id:
                raise ValueError("the good and bad tokens have the same id")
            forward_params = inspect.signature(model.forward).parameters
            self._keeps_logits = "logits_to_keep" in forward_params
        elif prm_format == "qwen-prm":
            self.marker_id = _required_token_id(tokenizer, QWEN_STEP_TOKEN, "step token")
        self.calls = 0
        self.forward_passes = 0
        self._lock = threading.Lock()  # one forward pass at a time; guards the counters
        self._pending: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- inputs ----------------------------------------------------------------------------

    def encode(self, question: str, steps: list[str]) -> Encoded:
        """Token ids of one sequence, the position whose logits score each step and, for
        step-input models, their extra per-token inputs."""
        steps = list(steps)
        extra: dict[str, list[int]] = {}
        if self.step_inputs:
            enc = encode_steps(self.tokenizer, question, steps, self.separator)
            ids, positions = enc["input_ids"], enc["positions"]
            extra = {key: enc[key] for key in STEP_INPUTS}
        elif self.prm_format == "token-cls":
            row = {"prompt": question, "completions": steps, "labels": [True] * len(steps)}
            feat = tokenize_prm_row(row, self.tokenizer, self.separator, max_length=None)
            ids = feat["input_ids"]
            positions = [i for i, label in enumerate(feat["labels"]) if label != IGNORE_INDEX]
        else:
            if self.prm_format == "step-tag":
                text = question + " " + "\n".join(f"{step} {self.step_tag}" for step in steps)
                ids = list(self.tokenizer(text)["input_ids"])
            else:
                text = self._qwen_text(question, steps)
                ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            positions = [i for i, token in enumerate(ids) if token == self.marker_id]
            if len(positions) != len(steps):
                marker = self.step_tag if self.prm_format == "step-tag" else QWEN_STEP_TOKEN
                raise ValueError(
                    f"found {len(positions)} {marker!r} tokens for {len(steps)} steps: the "
                    f"question or a step contains the marker, or it does not tokenize to the "
                    f"same token inside the text"
                )
        if self.max_positions and len(ids) > self.max_positions:
            raise ValueError(
                f"a solution of {len(steps)} steps is {len(ids)} tokens long, more than the "
                f"PRM's {self.max_positions} positions; shorten it (steps are never dropped)"
            )
        return Encoded(ids, positions, extra)

    def _qwen_text(self, question: str, steps: list[str]) -> str:
        messages = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": question})
        content = "".join(step + QWEN_STEP_TOKEN for step in steps)
        messages.append({"role": "assistant", "content": content})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )

    # --- scoring ---------------------------------------------------------------------------

    def score_batch(self, items: list[tuple[str, list[str]]]) -> list[list[float]]:
        """P(step correct) for every step of every (question, steps) item, in order."""
        encoded = [self.encode(question, steps) for question, steps in items]
        scores = self._score_encoded(encoded)
        with self._lock:
            self.calls += len(items)
        return scores

    def _score_encoded(self, encoded: list[Encoded]) -> list[list[float]]:
        """Score encoded sequences in padded batches of similar length."""
        results: list[list[float]] = [[] for _ in encoded]
        order = sorted(
            (i for i, e in enumerate(encoded) if e.positions), key=lambda i: -len(encoded[i].ids)
        )
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            scores = self._run_model([encoded[i] for i in chunk])
            for i, row in zip(chunk, scores, strict=True):
                results[i] = row
        return results

    def _run_model(self, batch: list[Encoded]) -> list[list[float]]:
        """One forward pass over right-padded sequences; the step scores of each."""
        width = max(len(e.ids) for e in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        extra = {
            key: torch.full((len(batch), width), STEP_INPUT_PAD[key]) for key in batch[0].extra
        }
        for row, e in enumerate(batch):
            input_ids[row, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
            mask[row, : len(e.ids)] = 1
            for key, values in e.extra.items():
                extra[key][row, : len(values)] = torch.tensor(values, dtype=torch.long)
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        inputs |= {key: value.to(self.device) for key, value in extra.items()}
        # Where each row's step scores sit in the logits' sequence dimension.
        columns = [e.positions for e in batch]
        if self.prm_format == "step-tag":
            inputs["use_cache"] = False
            if self._keeps_logits:
                # Only the tag positions need vocabulary-sized logits.
                keep = sorted({p for e in batch for p in e.positions})
                inputs["logits_to_keep"] = torch.tensor(keep, device=self.device)
                columns = [[bisect.bisect_left(keep, p) for p in e.positions] for e in batch]
        with self._lock, torch.inference_mode():
            out = self.model(**inputs)
            self.forward_passes += 1
        logits = out.logits if getattr(out, "logits", None) is not None else out[0]
        scores = []
        for row, cols in enumerate(columns):
            picked = logits[row, cols].float()
            if self.prm_format == "step-tag":
                pair = picked[:, [self.good_id, self.bad_id]]
                probs = pair.softmax(-1)[:, 0]
            else:
                probs = picked.softmax(-1)[:, 1]
            scores.append(probs.tolist())
        return scores

    # --- asyncio ---------------------------------------------------------------------------

    async def score(self, question: str, steps: list[str]) -> list[float]:
        """P(step correct) for each step; concurrent calls share batched forward passes."""
        steps = list(steps)
        loop = asyncio.get_running_loop()
        request = _Request(question, steps, loop.create_future(), loop)
        with self._wake:
            if self._closed:
                raise RuntimeError("PRM scorer is closed")
            if not steps:
                with self._lock:
                    self.calls += 1
                return []
            self._pending.append(request)
            self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="amcs-prm", daemon=True)
                self._thread.start()
        return await request.future

    async def aclose(self) -> None:
        """Stop the worker thread; queued calls fail with RuntimeError."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    break
                requests = []
                while self._pending and len(requests) < self.max_batch_size:
                    request = self._pending.popleft()
                    if not request.future.cancelled():
                        requests.append(request)
            live, encoded = [], []
            for request in requests:
                try:
                    encoded.append(self.encode(request.question, request.steps))
                    live.append(request)
                except Exception as exc:  # noqa: BLE001 - this caller's own input is at fault
                    request.resolve(exc)
            try:
                scores = self._score_encoded(encoded)
            except Exception as exc:  # noqa: BLE001 - every caller in the batch gets it
                for request in live:
                    request.resolve(exc)
                continue
            with self._lock:
                self.calls += len(live)
            for request, row in zip(live, scores, strict=True):
                request.resolve(row)
        closed = RuntimeError("PRM scorer closed")
        with self._wake:
            leftover, self._pending = list(self._pending), deque()
        for request in leftover:
            request.resolve(closed)


# --- loading -------------------------------------------------------------------------------


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(path: str | Path, what: str = "PRM") -> Path:
    """A local directory as is; a hub id ("org/name") downloaded to the local cache (needs the
    hub, or a cache that already holds it). Anything else: ValueError naming it (and ``what`` it
    should have been)."""
    local = Path(path).expanduser()
    if local.exists():
        return local
    if _HUB_ID.match(str(path)):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(path)))
        except Exception as exc:  # noqa: BLE001 - offline, gated, missing: say which
            raise ValueError(f"cannot fetch {what} {path} from the hub: {exc}") from exc
    raise ValueError(f"{path}: no such {what} directory")


def _read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _num_labels(config: dict) -> int:
    """The label count of a config.json (transformers leaves out the default of 2 labels)."""
    if isinstance(config.get("id2label"), dict):
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def detect_prm_format(path: str | Path, *, step_tag: str = DEFAULT_STEP_TAG) -> str:
    """Guess a checkpoint's PRM format from its files (see the module docstring).

    Raises ValueError, naming the path, when the directory matches none of the formats."""
    path = Path(path)
    hint = f"pass --prm-format (one of {', '.join(PRM_FORMATS)})"
    if (path / PRM_CONFIG_FILE).is_file():
        return "token-cls"
    if not (path / "config.json").is_file():
        raise ValueError(f"cannot tell the PRM format of {path}: no config.json there; {hint}")
    config = _read_config(path)
    architectures = config.get("architectures") or [""]
    arch = architectures[0] or ""
    num_labels = _num_labels(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means we cannot tell
        raise ValueError(f"cannot tell the PRM format of {path}: {exc}; {hint}") from exc
    has_step_token = QWEN_STEP_TOKEN in tokenizer.get_vocab()
    two_label_classifier = arch.endswith("ForTokenClassification") and num_labels == 2
    if has_step_token and (
        any("ProcessRewardModel" in a for a in architectures if a) or two_label_classifier
    ):
        return "qwen-prm"
    if two_label_classifier:
        return "token-cls"
    has_tag = _token_id(tokenizer, step_tag) is not None
    if arch.endswith("ForCausalLM") and has_tag:
        return "step-tag"
    raise ValueError(
        f"cannot tell the PRM format of {path}: architecture {arch or 'unknown'!r} with "
        f"{num_labels} labels, no {PRM_CONFIG_FILE}, {QWEN_STEP_TOKEN!r} token "
        f"{'present' if has_step_token else 'absent'}, step tag {step_tag!r} "
        f"{'present' if has_tag else 'absent'}; {hint}"
    )


@contextlib.contextmanager
def _held_load_report():
    """Hold back what transformers logs while a checkpoint loads (its load report, a warning
    several lines long), yielding the held records: a refused checkpoint then ends in one error
    line, and a kept one gets its report shown as before (:func:`_load_trained`)."""
    logger = logging.getLogger("transformers.modeling_utils")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)


def _load_trained(loader, path: Path, prm_format: str, **kwargs):
    """``loader.from_pretrained(path)``, refused (ValueError) when the checkpoint lacks weights
    the model needs: transformers would initialise them at random (a policy or base model loaded
    as a classifier gets a random score head) and every score would be noise, with exit code 0.
    The loader's own missing-keys report decides, so the model loads once."""
    with _held_load_report() as held:
        model, info = loader.from_pretrained(str(path), output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise ValueError(
            f"cannot use {path} as a {prm_format} PRM: its checkpoint has no trained weights for "
            f"{shown} (a policy or base model, not a PRM?); train one with amcs train, or pass "
            f"the --prm-format it was trained for (one of {', '.join(PRM_FORMATS)})"
        )
    logger = logging.getLogger("transformers.modeling_utils")
    for record in held:
        logger.handle(record)
    return model


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

    ``path`` is a directory or a hub id (:func:`resolve_checkpoint`). ``prm_format`` None
    detects it (:func:`detect_prm_format`). ``device`` defaults to CUDA
    when available, else CPU; ``dtype`` to bfloat16 on CUDA and float32 on CPU.
    """
    path = resolve_checkpoint(path)
    if prm_format is None:
        prm_format = detect_prm_format(path, step_tag=step_tag)
    if prm_format not in PRM_FORMATS:
        raise ValueError(f"unknown PRM format {prm_format!r}; expected one of {PRM_FORMATS}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    separator = DEFAULT_SEPARATOR
    step_inputs = False
    if prm_format == "token-cls":
        settings = None
        if (path / PRM_CONFIG_FILE).is_file():
            separator = load_prm_config(path).get("separator", DEFAULT_SEPARATOR)
            settings = read_policy_features(path / PRM_CONFIG_FILE)
        if settings is not None:
            model = StepFeaturePRM.from_pretrained(path, settings, dtype=dtype)
            step_inputs = True
        else:
            model = _load_trained(AutoModelForTokenClassification, path, prm_format, dtype=dtype)
    elif prm_format == "step-tag":
        model = _load_trained(AutoModelForCausalLM, path, prm_format, dtype=dtype)
    elif (path / "config.json").is_file() and _read_config(path).get("auto_map"):
        model = _load_trained(AutoModel, path, prm_format, dtype=dtype, trust_remote_code=True)
    else:
        model = _load_trained(AutoModelForTokenClassification, path, prm_format, dtype=dtype)
    return PRMScorer(
        model.to(dev),
        tokenizer,
        prm_format,
        max_batch_size=max_batch_size,
        separator=separator,
        step_tag=step_tag,
        good_token=good_token,
        bad_token=bad_token,
        step_inputs=step_inputs,
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
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    base = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return PRMScorer(
        PolicyConfidence(base).to(dev),
        tokenizer,
        "token-cls",
        max_batch_size=max_batch_size,
        separator=separator,
        step_inputs=True,
    )


# --- one loader for every scorer name a command takes (eval, eval steps, filter) ---------------


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
    - ``arith-oracle``: the exact arithmetic checker (:class:`amcs.verification.ArithOracleScorer`);
    - ``policy-confidence`` (from ``policy``, default the bundled tiny policy) or
      ``policy-confidence:MODEL``: the training-free baseline, on steps joined by ``separator``;
    - ``http://host:port`` (or https): a PRM that vLLM serves (:mod:`amcs.prm_remote`);
    - anything else: a PRM checkpoint directory or hub id for :func:`load_prm`, in
      ``prm_format`` or the one its files show.

    Raises :class:`ScorerError` naming the spec and the names that work."""
    from amcs.assets import TINY_POLICY, TINY_PRM

    if is_url(spec):
        return load_served_prm(spec, max_batch_size=max_batch_size)
    if spec == ARITH_ORACLE:
        from amcs.verification import ArithOracleScorer

        return ArithOracleScorer()
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
