"""The transformers backend: the CPU default, also runs on CUDA.

Concurrent ``sample`` calls become rows (one per requested rollout) that a single worker thread
(:mod:`amcs.batching`, the job ``_Decoding``) decodes together with a KV cache, by continuous batching: rows that arrive while others are being
decoded are prefilled and join the running batch at the next step, and finished rows leave it at
once, so many searches share every forward pass and the event loop never blocks. Rows of one
request share one prefill of their prompt. The cache grows in place (``_GrowingLayer``: spare
columns, no copy of the whole cache per generated token).

Deterministic decoding (``deterministic``, the CPU default): a seeded rollout does not depend on
which other rows shared its batch, down to the last bit of its logprob_sum, so a resumed or sharded
run writes the same bytes as an uninterrupted one. Each row draws its random numbers from its own
seed, and every number computed for a row is a function of that row alone. Plain batched kernels
break that: a float32 matrix product gives a row different last bits depending on how many rows
it is multiplied with (BLAS picks its kernels by shape), and attention sums a row's cache in an
order set by its left padding, which its company decides. Three rules make the row's arithmetic
its own:

1. Prompts are prefilled together, left-padded to a common width that is a multiple of
   ``row_block``, and each prompt's queries attend over its own positions only (rule 3), so a
   prompt's cache and logits are those it gets prefilled alone (checked: 0 of 30 random groups of
   2-9 prompts differed in any bit, where plain batched kernels changed most of them).
2. Every ``nn.Linear`` multiplies a row count padded to a multiple of ``row_block``: BLAS then
   runs every row through full micro-tiles and a row's bits do not depend on the row count or its
   position (MKL on x86, measured: at 2 threads rows differ only for counts below 12 that are not
   a multiple of 4). The block is not assumed: ``calibrate_row_block`` checks candidate blocks on
   the model's own weight shapes at start-up (random rows at every multiple of the block up to 64,
   then 96 to 256, shifted by a block, against a reference); if none holds, each row is multiplied
   alone (one (1, K) x (K, N) product per row, the slow and always-exact fallback). Models whose
   products are not ``nn.Linear`` (GPT-2's Conv1D) are not covered.
3. Attention runs per row over exactly that row's cache columns (``_attention``, PyTorch's
   scaled_dot_product_attention on the unpadded slice), so padding and company never enter it.

The price is up to row_block - 1 padding rows per product and a small attention call per row and
layer. Off (``deterministic=False``, ``--no-deterministic``): batched SDPA attention with a
padding mask, plain products; a resumed run is then a valid
continuation but not byte-identical. ``benchmarks/generate_speed.py`` measures both against vLLM's
CPU server on a real instruct model.
"""

from __future__ import annotations

import asyncio
import logging
import random
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    AttentionInterface,
    AttentionMaskInterface,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
)
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import sdpa_mask

from amcs.assets import TINY_POLICY
from amcs.backends.base import Rollout, SamplingParams
from amcs.batching import BatchJob, BatchWorker, Waiter
from amcs.seeds import derive_seed

log = logging.getLogger("amcs.backends.hf")

ATTENTION = "amcs"  # the backend's attention (_attention), registered with transformers
ROW_BLOCKS = (4, 8, 16, 32)  # rule 2: the row blocks calibrate_row_block tries, smallest first
SPARE_COLUMNS = 64  # the cache grows by this many columns at a time


@dataclass(eq=False, kw_only=True)
class _Row(Waiter):
    """One requested rollout, resolved with its Rollout by the worker thread."""

    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    budget: int
    uniforms: list[float] = field(default_factory=list)
    out_ids: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0
    tail: str = ""


@dataclass(eq=False)
class _Batch:
    """The rows being decoded: their KV cache, attention mask (left padding), the position of
    each row's last token, and the logits for each row's next token."""

    rows: list[_Row]
    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor


class _GrowingLayer(DynamicLayer):
    """A cache layer that appends in place: keys/values are views of a buffer with spare columns
    on the right, so a decode step writes one column instead of copying the whole cache (the
    DynamicLayer's torch.cat, ~20% of a step at 32 rows x 300 columns). Code that replaces
    ``keys``/``values`` (padding, stacking, dropping rows) simply gets a new buffer at the next
    update."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            empty = key_states.shape[:-2] + (0, key_states.shape[-1])
            self.keys, self.values = key_states.new_empty(empty), value_states.new_empty(empty)
        used, new = self.keys.shape[-2], key_states.shape[-2]
        kb, vb = self._key_buffer, self._value_buffer
        if (
            kb is None
            or kb.data_ptr() != self.keys.data_ptr()
            or vb.data_ptr() != self.values.data_ptr()
            or kb.shape[:-2] != key_states.shape[:-2]
            or kb.shape[-2] < used + new
        ):
            shape = key_states.shape[:-2] + (used + new + SPARE_COLUMNS, key_states.shape[-1])
            kb, vb = key_states.new_empty(shape), value_states.new_empty(shape)
            kb[..., :used, :] = self.keys
            vb[..., :used, :] = self.values
            self._key_buffer, self._value_buffer = kb, vb
        kb[..., used : used + new, :] = key_states
        vb[..., used : used + new, :] = value_states
        self.keys, self.values = kb[..., : used + new, :], vb[..., : used + new, :]
        return self.keys, self.values


def _new_cache(config) -> DynamicCache:
    cache = DynamicCache(config=config)
    cache.layers = [_GrowingLayer() if type(x) is DynamicLayer else x for x in cache.layers]
    return cache


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The backend's attention (registered with transformers as ATTENTION), PyTorch's
    scaled_dot_product_attention with grouped key/value heads read in place (transformers' own
    SDPA path copies them once per query head when there is a padding mask).

    Deterministic (rule 3, ``amcs_row_lengths`` given): each row attends over its own cache
    columns only (the last ``amcs_row_lengths[b]`` of row b; the rest is left padding), one call
    per row, so neither the padding nor the other rows can change a row's bits; in a prefill
    (several query positions) a row's queries are its own last positions, causal, and the padding
    positions' outputs are zeros. Otherwise one batched call with the padding mask."""
    lengths = kwargs.get("amcs_row_lengths")
    rows, heads, steps, dim = query.shape
    gqa = key.shape[1] != heads
    if lengths is None:
        if attention_mask is not None and attention_mask.ndim == 4:
            attention_mask = attention_mask[:, :, :, : key.shape[-2]]
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            is_causal=attention_mask is None and steps > 1,
            scale=scaling,
            enable_gqa=gqa,
        )
        return out.transpose(1, 2).contiguous(), None
    out = query.new_zeros(rows, steps, heads, dim)
    for b, n in enumerate(lengths):
        q = min(n, steps)  # a prefill's queries are the row's own last n positions
        o = F.scaled_dot_product_attention(
            query[b : b + 1, :, -q:],
            key[b : b + 1, :, -n:],
            value[b : b + 1, :, -n:],
            is_causal=q > 1,
            scale=scaling,
            enable_gqa=gqa,
        )
        out[b, -q:] = o[0].transpose(0, 1)
    return out, None


AttentionInterface.register(ATTENTION, _attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def _blocked_product(x: torch.Tensor, weight_t: torch.Tensor, block: int) -> torch.Tensor:
    """x (M, K) @ weight_t (K, N) with M padded to a multiple of ``block`` (rule 2)."""
    pad = -x.shape[0] % block
    if pad:
        return (F.pad(x, (0, 0, 0, pad)) @ weight_t)[: x.shape[0]]
    return x @ weight_t


def _block_is_exact(in_features: int, out_features: int, block: int, dtype, device) -> bool:
    """Whether products padded to ``block`` rows give every row the same bits at any row count
    and position: random rows at counts block, 2 block, ... 64, then 96 to 256, and shifted by one
    block, against the rows of one 256-row product."""
    gen = torch.Generator(device="cpu").manual_seed(block)
    w = torch.randn(in_features, out_features, generator=gen).to(device, dtype)
    x = torch.randn(256 + block, in_features, generator=gen).to(device, dtype)
    reference = _blocked_product(x[:256], w, block)
    counts = [*range(block, 65, block), 96, 128, 192, 256]
    for m in counts:
        if not torch.equal(_blocked_product(x[:m], w, block), reference[:m]):
            return False
    shifted = _blocked_product(x[block : block + 64], w, block)
    return torch.equal(shifted[: 64 - block], reference[block:64])


_CALIBRATED: dict[tuple, int | None] = {}


def calibrate_row_block(model: torch.nn.Module) -> int | None:
    """The smallest block of ROW_BLOCKS for which every ``nn.Linear`` shape of the model gives
    exact per-row products (rule 2), or None when none does. Cached per shape set, dtype, device
    and thread count."""
    shapes = sorted(
        {(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    )
    weight = next(model.parameters())
    key = (tuple(shapes), weight.dtype, str(weight.device), torch.get_num_threads())
    if key not in _CALIBRATED:
        _CALIBRATED[key] = next(
            (
                block
                for block in ROW_BLOCKS
                if all(_block_is_exact(i, o, block, weight.dtype, weight.device) for i, o in shapes)
            ),
            None,
        )
    return _CALIBRATED[key]


def _exact_linear(block: int | None):
    """nn.Linear's forward under rule 2: rows padded to ``block``, or with block None one
    (1, K) x (K, N) product per row."""

    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if block is None:
            out = torch.bmm(flat[:, None, :], self.weight.T.expand(flat.shape[0], -1, -1))[:, 0]
        else:
            out = _blocked_product(flat, self.weight.T, block)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return forward


class _Decoding(BatchJob[_Row]):
    """The backend's job on its batching worker (amcs.batching): each round lets waiting rows join
    the running batch (prefilled together) and decodes one step of every row."""

    def __init__(self, backend: HFBackend) -> None:
        self.backend = backend
        self.batch: _Batch | None = None

    def room(self) -> int:
        size = self.backend.max_batch_size
        if self.batch is None:
            return size
        # Joining costs a prefill and a copy of the running cache, so rows join in groups: when
        # the batch is empty or has at least half its room free.
        room = size - len(self.batch.rows)
        return room if room >= size // 2 else 0

    def busy(self) -> bool:
        return self.batch is not None

    def abandon(self) -> list[_Row]:
        rows = self.batch.rows if self.batch is not None else []
        self.batch = None
        return rows

    def run(self, taken: list[_Row]) -> None:
        backend = self.backend
        with torch.inference_mode():
            if taken:
                self.batch = backend._merge(self.batch, backend._prefill(taken))
            if self.batch is not None:
                self.batch = backend._step(self.batch)


class HFBackend:
    """Sample from any local or hub causal LM with transformers.

    max_batch_size bounds the rows decoded together; a request for n rollouts adds n rows.
    deterministic (default: on CPU) makes a seeded rollout bit-identical whatever its batch
    company (see the module docstring); it is verified on CPU in float32 and off by default on
    CUDA, where it is unmeasured. ``batch_invariant`` is its former name.
    """

    def __init__(
        self,
        model: str | Path = TINY_POLICY,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        max_batch_size: int = 128,
        seed: int = 0,
        deterministic: bool | None = None,
        batch_invariant: bool | None = None,
    ) -> None:
        self.model_name = str(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        if deterministic is None:
            deterministic = batch_invariant
        if deterministic is None:
            deterministic = self.device.type == "cpu"
        self.deterministic = bool(deterministic)
        self.model = (
            AutoModelForCausalLM.from_pretrained(model, dtype=dtype, attn_implementation=ATTENTION)
            .to(self.device)
            .eval()
        )
        self.max_batch_size = max_batch_size
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.row_block: int | None = None
        if deterministic:
            self.row_block = calibrate_row_block(self.model)
            if self.row_block is None:
                log.warning(
                    "deterministic decoding: no row block gives exact products here; every row "
                    "is multiplied alone (slow)"
                )
            forward = _exact_linear(self.row_block)
            for module in self.model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.forward = types.MethodType(forward, module)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._eos = torch.tensor(sorted(self.eos_ids), device=self.device)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.eos_ids), 0)
        self._rng = random.Random(seed)
        self._worker = BatchWorker(_Decoding(self), name="amcs-hf", what="backend")
        self._pieces: list[str] | None = None  # decoded tokens, for stop strings
        # How much batching happens: forward passes run, and the most rows in one.
        self.forward_passes = 0
        self.peak_rows = 0

    @property
    def batch_invariant(self) -> bool:
        """The former name of ``deterministic``."""
        return self.deterministic

    # --- the protocol -----------------------------------------------------------------------

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        if self._worker.closed:
            raise RuntimeError("backend is closed")
        if n < 1:
            return []
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        budget = params.max_new_tokens
        if self.max_positions:
            budget = min(budget, self.max_positions - len(prompt_ids))
        if budget < 1:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens leaves no room to generate "
                f"(model context {self.max_positions})"
            )
        loop = asyncio.get_running_loop()
        rows = []
        for i in range(n):
            seed = (
                derive_seed(params.seed, i, mixer="mt")
                if params.seed is not None
                else self._rng.getrandbits(63)
            )
            rows.append(
                _Row(
                    future=loop.create_future(),
                    loop=loop,
                    prompt_ids=list(prompt_ids),
                    params=params,
                    seed=seed,
                    budget=budget,
                )
            )
        self._worker.submit(rows)
        try:
            return list(await asyncio.gather(*(r.future for r in rows)))
        except asyncio.CancelledError:
            for r in rows:
                r.future.cancel()  # the worker drops cancelled rows at its next step
            raise

    async def aclose(self) -> None:
        await self._worker.aclose()

    # --- the worker thread (amcs.batching, job _Decoding) -----------------------------------

    def _forward(self, ids, mask, positions, cache, **kw) -> torch.Tensor:
        self.forward_passes += 1
        self.peak_rows = max(self.peak_rows, ids.shape[0])
        if self.deterministic:
            kw["amcs_row_lengths"] = mask.sum(-1).tolist()
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            **kw,
        )
        return out.logits[:, -1, :].float()

    def _prefill(self, rows: list[_Row]) -> _Batch:
        """One padded forward for the distinct prompts (rule 1 when deterministic), each prompt's
        cache repeated for every row that asked for it."""
        for row in rows:
            gen = torch.Generator().manual_seed(row.seed)
            row.uniforms = torch.rand(row.budget, generator=gen, dtype=torch.float64).tolist()
        groups: dict[tuple[int, ...], list[_Row]] = {}
        for row in rows:
            groups.setdefault(tuple(row.prompt_ids), []).append(row)
        prompts = list(groups)
        return self._prefill_prompts(prompts, [groups[p] for p in prompts])

    def _prefill_prompts(self, prompts: list[tuple[int, ...]], members: list[list[_Row]]) -> _Batch:
        """Prefill ``prompts`` (left-padded to the longest) in one forward; the batch holds one row
        per member, each prompt's cache, mask, position and logits repeated for its members."""
        dev = self.device
        width = max(len(p) for p in prompts)
        if self.deterministic and len(prompts) > 1 and self.row_block:
            width += -width % self.row_block  # every prompt's tokens start on a row block
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache(self.model.config)
        logits = self._forward(ids, mask, positions, cache, logits_to_keep=1)
        counts = torch.tensor([len(m) for m in members], device=dev)
        if int(counts.max()) > 1:
            for layer in cache.layers:
                layer.keys = layer.keys.repeat_interleave(counts, dim=0)
                layer.values = layer.values.repeat_interleave(counts, dim=0)
            mask = mask.repeat_interleave(counts, dim=0)
            positions = positions.repeat_interleave(counts, dim=0)
            logits = logits.repeat_interleave(counts, dim=0)
        rows = [row for group in members for row in group]
        return _Batch(rows, cache, mask, positions[:, -1:], logits)

    @staticmethod
    def _merge(a: _Batch | None, b: _Batch) -> _Batch:
        """One batch from two; see _stack."""
        return b if a is None else HFBackend._stack([a, b])

    @staticmethod
    def _stack(parts: list[_Batch]) -> _Batch:
        """One batch from several: left-pad each to the longest one's length, stack the rows."""
        if len(parts) == 1:
            return parts[0]
        length = max(x.mask.shape[1] for x in parts)
        for x in parts:
            HFBackend._pad_columns(x, length - x.mask.shape[1])
        first = parts[0]
        for i, layer in enumerate(first.cache.layers):
            layer.keys = torch.cat([x.cache.layers[i].keys for x in parts])
            layer.values = torch.cat([x.cache.layers[i].values for x in parts])
        return _Batch(
            [row for x in parts for row in x.rows],
            first.cache,
            torch.cat([x.mask for x in parts]),
            torch.cat([x.positions for x in parts]),
            torch.cat([x.logits for x in parts]),
        )

    def _stop_pieces(self) -> list[str]:
        if self._pieces is None:
            self._pieces = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
        return self._pieces

    def _step(self, batch: _Batch) -> _Batch | None:
        """Sample one token for every row, finish the rows that are done, then run the model one
        step for the rest. Returns the batch that goes on, or None when it is empty."""
        dev = self.device
        rows = batch.rows
        logprobs = torch.log_softmax(batch.logits, dim=-1)
        tokens = _choose(
            logprobs,
            torch.tensor([r.params.temperature for r in rows], device=dev),
            torch.tensor([r.params.top_p for r in rows], device=dev),
            torch.tensor([r.params.top_k for r in rows], device=dev),
            torch.tensor(
                [r.uniforms[len(r.out_ids)] for r in rows], device=dev, dtype=torch.float64
            ),
        )
        chosen = logprobs.gather(1, tokens[:, None]).squeeze(1).tolist()
        is_eos = torch.isin(tokens, self._eos).tolist()
        keep = []
        for j, (row, tok, lp, end) in enumerate(
            zip(rows, tokens.tolist(), chosen, is_eos, strict=True)
        ):
            if row.future.cancelled():
                continue
            finish = "stop" if end else None
            if not end:
                row.out_ids.append(tok)
                row.logprob_sum += lp
                if row.params.stop and self._hits_stop(row, tok):
                    finish = "stop"
                elif len(row.out_ids) >= row.budget:
                    finish = "length"
            if finish is None:
                keep.append(j)
            else:
                row.resolve(
                    Rollout(
                        token_ids=row.out_ids,
                        text=self.tokenizer.decode(row.out_ids),
                        logprob_sum=row.logprob_sum,
                        finish_reason=finish,
                    )
                )
        if not keep:
            return None
        if len(keep) < len(rows):
            sel = torch.tensor(keep, device=dev)
            batch.cache.reorder_cache(sel)
            batch.rows = [rows[j] for j in keep]
            batch.mask, batch.positions, tokens = batch.mask[sel], batch.positions[sel], tokens[sel]
            # Drop leading columns that are padding for every remaining row.
            self._pad_columns(batch, -int((batch.mask.cumsum(-1) == 0).sum(-1).min()))
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
        batch.positions = batch.positions + 1
        batch.logits = self._forward(tokens[:, None], batch.mask, batch.positions, batch.cache)
        return batch

    @staticmethod
    def _pad_columns(batch: _Batch, count: int) -> None:
        """Add `count` padding columns on the left of the mask and cache, or drop -count."""
        if count > 0:
            batch.mask = F.pad(batch.mask, (count, 0))
            for layer in batch.cache.layers:
                layer.keys = F.pad(layer.keys, (0, 0, count, 0))
                layer.values = F.pad(layer.values, (0, 0, count, 0))
        elif count < 0:
            batch.mask = batch.mask[:, -count:]
            for layer in batch.cache.layers:
                layer.keys = layer.keys[:, :, -count:]
                layer.values = layer.values[:, :, -count:]

    def _hits_stop(self, row: _Row, token: int) -> bool:
        longest = max(len(s) for s in row.params.stop)
        row.tail = (row.tail + self._stop_pieces()[token])[-(longest + 16) :]
        return any(s in row.tail for s in row.params.stop)


def _choose(
    logprobs: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    top_k: torch.Tensor,
    u: torch.Tensor,
) -> torch.Tensor:
    """Pick one token per row: argmax where temperature is 0, else inverse-CDF sampling of the
    tempered, top-k and top-p filtered distribution with the row's own uniform number u.

    The CDF runs over the tokens by descending probability when a row filters (top_k > 0 or
    top_p < 1), and in vocabulary order when it does not: the same distribution without a sort of
    the vocabulary per row and step (at 32 rows x 49k tokens the sort cost a third of a step)."""
    greedy = logprobs.argmax(-1)
    temp = temperature.clamp(min=1e-5)[:, None]
    probs = torch.softmax(logprobs / temp, dim=-1).double()
    vocab = probs.shape[-1]
    filters = (top_k > 0) | (top_p < 1)
    sampled = torch.empty_like(greedy)
    plain = (~filters).nonzero().flatten()
    if len(plain):
        cdf = probs[plain].cumsum(-1)
        index = (cdf <= u[plain, None] * cdf[:, -1:]).sum(-1).clamp(max=vocab - 1)
        sampled[plain] = index
    filtered = filters.nonzero().flatten()
    if len(filtered):
        sorted_probs, order = probs[filtered].sort(dim=-1, descending=True)
        rank = torch.arange(vocab, device=probs.device)[None, :]
        k = torch.where(top_k[filtered] > 0, top_k[filtered], vocab)[:, None]
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the higher-ranked tokens
        keep = (rank < k) & ((before < top_p[filtered, None]) | (rank == 0))
        cdf = (sorted_probs * keep).cumsum(-1)
        index = (cdf <= u[filtered, None] * cdf[:, -1:]).sum(-1).clamp(max=vocab - 1)
        sampled[filtered] = order.gather(1, index[:, None]).squeeze(1)
    return torch.where(temperature > 0, sampled, greedy)
