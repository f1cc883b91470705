"""What the policy itself says about a step: its token probabilities, as PRM inputs and as a
training-free scorer.

A policy that writes ``3 + 4 = 8`` is usually surprised by its own ``8``: the probability it
gave that token is low. The models here read that signal from any causal LM (the base) on the
sequence the policy saw: its prompt (:func:`amcs.prompts.prompt_ids`), then each step followed
by the separator. With the policy itself as the base they see the errors the policy doubts; an
error it makes confidently (``50 + 165 = 115`` at p = 0.73) needs a base that knows better (a
larger model, or the policy trained further: recipes/tiny-arith/train_base.py).

Per token t (ids x, logits z_t predicting x_{t+1}; computed by :func:`token_statistics`)::

    logprob_t = z_{t-1}[x_t] - logsumexp(z_{t-1})          log p(x_t | x_<t)
    margin_t  = z_{t-1}[x_t] - max_v z_{t-1}[v]            log p(x_t) - log p(argmax), <= 0
    entropy_t = -sum_v p_v log p_v  with p = softmax(z_{t-1})

Per step s, over its own tokens S (the separator's tokens excluded: after the last step the
policy expects end-of-text, not a separator, so they say nothing of the step;
:func:`step_features`), scaled by 1/5 to keep them near unit size::

    min_logprob       = min_{t in S} logprob_t
    mean_logprob      = mean_{t in S} logprob_t
    separator_logprob = min over the separator's tokens of logprob_t
    log_length        = log |S|
    min_margin        = min_{t in S} margin_t
    max_entropy       = max_{t in S} entropy_t

:class:`StepFeaturePRM` (``amcs train --policy-features``) keeps the base frozen and trains a
small head on [these features, a projection of the base's last hidden state] at each step's
label position. :class:`PolicyConfidence` (``--prm policy-confidence``) trains nothing: a
step's score is exp(min_logprob), the policy's lowest probability for one of the step's tokens.
Both return token-classification logits (batch, seq, 2), so the trainer, the loss and
:class:`amcs.prm.PRMScorer` treat them as any token-classification PRM (their checkpoint entry:
:mod:`amcs.prm.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.modeling_outputs import TokenClassifierOutput

FEATURES = (
    "min_logprob",
    "mean_logprob",
    "separator_logprob",
    "log_length",
    "min_margin",
    "max_entropy",
)
FEATURE_SCALE = 5.0
LOGPROB_FLOOR = -20.0  # a token the policy all but ruled out; keeps features finite
STATISTICS_CHUNK = 256  # positions per float32 slice of the logits in token_statistics
HEAD_FILE = "step_head.safetensors"
# Extra per-token inputs (see amcs.training tokenization): the step a token belongs to (-1 for
# prompt and padding) and whether it is one of that step's separator tokens.
STEP_INPUTS = ("step_owner", "step_separator")
# Their padding: no step, not a separator.
STEP_INPUT_PAD = {"step_owner": -1, "step_separator": 0}


def encode_steps(
    tokenizer, question: str, steps: list[str], separator: str, max_length: int | None = None
) -> dict:
    """The sequence the policy saw, with the step inputs: ``input_ids`` = the policy's prompt
    (:func:`amcs.prompts.prompt_ids`: its chat template, or the plain one) + ids(step +
    separator) per step; ``step_owner`` (step index, -1 on the prompt), ``step_separator`` (1 on
    the separator's tokens) and ``positions`` (each step's last token, where its label and score
    sit). Steps that would pass ``max_length`` are left out (``kept`` counts those that fit)."""
    from amcs.prompts import prompt_ids

    input_ids = list(prompt_ids(tokenizer, question))
    owner = [-1] * len(input_ids)
    is_separator = [0] * len(input_ids)
    positions: list[int] = []
    for index, step in enumerate(steps):
        piece, flags = _step_piece(tokenizer, step, separator)
        if not piece:
            raise ValueError(f"step {index} tokenizes to nothing")
        if max_length is not None and len(input_ids) + len(piece) > max_length:
            break
        input_ids += piece
        owner += [index] * len(piece)
        is_separator += flags
        positions.append(len(input_ids) - 1)
    return {
        "input_ids": input_ids,
        "step_owner": owner,
        "step_separator": is_separator,
        "positions": positions,
        "kept": len(positions),
    }


def _step_piece(tokenizer, step: str, separator: str) -> tuple[list[int], list[int]]:
    """ids(step + separator) and 1 for each token that starts inside the separator (by character
    offsets where the tokenizer gives them, else by the step's own token count)."""
    text = step + separator
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        flags = [int(start >= len(step)) for start, _ in enc["offset_mapping"]]
        if ids and not any(flags):
            flags[-1] = 1  # the separator merged into the step's last token
        return ids, flags
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    own = min(len(ids) - 1, len(tokenizer(step, add_special_tokens=False)["input_ids"]))
    return ids, [0] * own + [1] * (len(ids) - own)


def token_statistics(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(batch, seq, 3): logprob_t, margin_t, entropy_t as in the module docstring (position 0,
    which nothing predicts, gets zeros). Computed in float32 on STATISTICS_CHUNK positions at a
    time, so a large vocabulary never needs a full-size float32 copy of the logits (a 2k-token
    row at a 152k vocabulary would take 1.2 GB per copy; a chunk takes 156 MB)."""
    rows = []
    for row_logits, row_ids in zip(logits, input_ids, strict=True):
        targets = row_ids[1:]
        pieces = [row_logits.new_zeros(1, 3, dtype=torch.float32)]
        for start in range(0, targets.shape[0], STATISTICS_CHUNK):
            stop = min(start + STATISTICS_CHUNK, targets.shape[0])
            z = row_logits[start:stop].float()
            picked = z.gather(-1, targets[start:stop, None])[:, 0]
            log_z = z.logsumexp(-1)
            logprob = picked - log_z
            margin = picked - z.max(-1).values
            entropy = log_z - (z.softmax(-1) * z).sum(-1)
            pieces.append(torch.stack([logprob, margin, entropy], -1))
        rows.append(torch.cat(pieces, 0))
    return torch.stack(rows)


def step_features(
    stats: torch.Tensor, step_owner: torch.Tensor, step_separator: torch.Tensor
) -> torch.Tensor:
    """(batch, seq, len(FEATURES)): the features of the step each token belongs to (zeros for
    prompt and padding), from :func:`token_statistics` and the step inputs."""
    batch, _ = step_owner.shape
    slots = int(step_owner.max().clamp(min=0)) + 2  # one per step, the last for "no step"
    nowhere = slots - 1
    slot = torch.where(step_owner >= 0, step_owner, nowhere)
    own = (step_owner >= 0) & (step_separator == 0)
    sep = (step_owner >= 0) & (step_separator == 1)
    logprob = stats[..., 0].clamp(min=LOGPROB_FLOOR)
    margin = stats[..., 1].clamp(min=LOGPROB_FLOOR)
    entropy = stats[..., 2]

    def reduce(values: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
        index = torch.where(mask, slot, nowhere)
        start = values.new_zeros(batch, slots)
        if how == "sum":
            return start.scatter_add(1, index, torch.where(mask, values, 0.0))
        return start.scatter_reduce(1, index, torch.where(mask, values, 0.0), how)

    length = reduce(torch.ones_like(logprob), own, "sum").clamp(min=1)
    table = torch.stack(
        [
            reduce(logprob, own, "amin"),
            reduce(logprob, own, "sum") / length,
            reduce(logprob, sep, "amin"),
            length.log(),
            reduce(margin, own, "amin"),
            reduce(entropy, own, "amax"),
        ],
        -1,
    )
    table[:, nowhere] = 0.0
    table = table / FEATURE_SCALE
    return table.gather(1, slot[..., None].expand(-1, -1, table.shape[-1]))


class _FrozenBase(nn.Module):
    """A causal LM kept frozen whose token statistics and last hidden state feed a step model."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        for param in self.base.parameters():
            param.requires_grad = False

    @property
    def config(self):
        return self.base.config

    def read(self, input_ids, attention_mask, hidden: bool = True):
        """The base's last hidden state (None unless ``hidden``) and token statistics (no
        gradient: the base stays frozen)."""
        with torch.no_grad():
            out = self.base(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=hidden,
                use_cache=False,
            )
            last = out.hidden_states[-1] if hidden else None
            return last, token_statistics(out.logits, input_ids)

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # no dropout in what the features are read from
        return self


class StepFeaturePRM(_FrozenBase):
    """A PRM reading the base LM's own view of each step (module docstring): logits =
    MLP([step_features, W LayerNorm(h_t)]) at every token; only the head trains.

    ``hidden_projection`` is the width W projects the hidden state to (0 leaves the hidden state
    out: the head then sees only the features); ``width`` the MLP's hidden width."""

    def __init__(self, base: nn.Module, hidden_projection: int = 8, width: int = 64) -> None:
        super().__init__(base)
        hidden = base.config.hidden_size
        self.hidden_projection = hidden_projection
        self.width = width
        self.project = (
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden_projection))
            if hidden_projection
            else None
        )
        self.head = nn.Sequential(
            nn.Linear(len(FEATURES) + hidden_projection, width), nn.GELU(), nn.Linear(width, 2)
        )
        self.head.to(next(base.parameters()).dtype)
        if self.project is not None:
            self.project.to(next(base.parameters()).dtype)

    def forward(self, input_ids, attention_mask=None, step_owner=None, step_separator=None, **_):
        if step_owner is None or step_separator is None:
            raise ValueError("StepFeaturePRM needs step_owner and step_separator inputs")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden, stats = self.read(input_ids, attention_mask)
        parts = [step_features(stats, step_owner, step_separator).to(hidden.dtype)]
        if self.project is not None:
            parts.append(self.project(hidden))
        return TokenClassifierOutput(logits=self.head(torch.cat(parts, -1)))

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}

    def save_pretrained(self, out_dir: str | Path, **kwargs) -> dict:
        """The base (unchanged) as a causal LM checkpoint, the head in HEAD_FILE; returns the
        ``policy_features`` entry for amcs_prm.json."""
        out_dir = Path(out_dir)
        self.base.save_pretrained(str(out_dir), **kwargs)
        save_file({k: v.contiguous() for k, v in self.head_state().items()}, out_dir / HEAD_FILE)
        return {
            "features": list(FEATURES),
            "hidden_projection": self.hidden_projection,
            "width": self.width,
        }

    @classmethod
    def from_pretrained(cls, path: str | Path, settings: dict, dtype=None) -> StepFeaturePRM:
        """Rebuild from a directory :meth:`save_pretrained` wrote (``settings``: its
        amcs_prm.json ``policy_features`` entry)."""
        if list(settings.get("features", FEATURES)) != list(FEATURES):
            raise ValueError(
                f"{path}: this PRM was trained on the step features {settings.get('features')}, "
                f"this version computes {list(FEATURES)}"
            )
        base = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        model = cls(base, int(settings["hidden_projection"]), int(settings["width"]))
        state = load_file(str(Path(path) / HEAD_FILE))
        missing = set(model.head_state()) - set(state)
        if missing:
            raise ValueError(f"{path}/{HEAD_FILE} lacks {sorted(missing)}")
        model.load_state_dict(state, strict=False)
        return model.to(dtype) if dtype is not None else model


class PolicyConfidence(_FrozenBase):
    """The training-free baseline: a step's score is exp(min_logprob), the base's lowest
    probability for one of the step's own tokens. Returned as logits [log(1 - p), log p], so
    softmax(logits)[..., 1] = p wherever a step ends."""

    def forward(self, input_ids, attention_mask=None, step_owner=None, step_separator=None, **_):
        if step_owner is None or step_separator is None:
            raise ValueError("PolicyConfidence needs step_owner and step_separator inputs")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        _, stats = self.read(input_ids, attention_mask, hidden=False)
        features = step_features(stats, step_owner, step_separator)
        log_p = (features[..., FEATURES.index("min_logprob")] * FEATURE_SCALE).clamp(max=-1e-6)
        return TokenClassifierOutput(logits=torch.stack([torch.log1p(-log_p.exp()), log_p], -1))
