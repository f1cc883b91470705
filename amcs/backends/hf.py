"""The transformers backend: the CPU default, also runs on CUDA.

Concurrent ``sample`` calls become rows (one per requested rollout) that a single worker thread
decodes together with a KV cache, by continuous batching: rows that arrive while others are being
decoded are prefilled and join the running batch at the next step, and finished rows leave it at
once, so many searches share every forward pass and the event loop never blocks.

A seeded rollout does not depend on which other rows shared its batch, down to the last bit of its
logprob_sum: each row draws its random numbers from its own seed, and (batch_invariant, the CPU
default) every number computed for a row is a function of that row alone. Plain batched kernels
break that: a float32 matrix product gives a row different last bits depending on how many rows
it is multiplied with (BLAS picks its blocking by shape), and attention sums a row's cache in an
order set by its left padding, which its company decides. Three rules make the row's arithmetic
its own:

1. Prefill runs per distinct prompt, alone and unpadded (the rows of one request share it); a
   padded multi-prompt prefill changed a row's bits in 3 of 30 random trials even at block widths.
2. Every ``nn.Linear`` multiplies as a batched product with one matrix per row (``torch.bmm`` of
   (1, K) by (K, N) for each row in decode), whose per-row result does not change with the batch.
   Models whose products are not ``nn.Linear`` (GPT-2's Conv1D) are not covered.
3. Attention is eager (a ``bmm`` per row and head, softmax over the cache) over a left-padded
   cache whose width is always a multiple of COLUMN_BLOCK (64): a row's entries then sit at the
   same offsets modulo 64 whatever the width, and the kernels give the same bits for it (checked
   in tests/test_backend_hf.py); at arbitrary widths 257 of 300 random cases differed.

The price is a forward pass per prompt, eager attention and up to 63 padding columns per row.
Measured (tiny policy, 2 shared cores): ``benchmarks/backend_hf.py`` (one-rollout requests, 200
tokens, 32 distinct prompts) gives 0.19 to 0.24 of the plain throughput on a quiet machine (0.57
to 0.83 under load); ``benchmarks/hf_batch_invariance.py`` (``amcs generate``, 20 problems) gives
1.23 to 1.39, the same tokens in both modes. The first gap is not yet explained.
"""

from __future__ import annotations

import asyncio
import random
import threading
import types
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from amcs.assets import TINY_POLICY
from amcs.backends.base import Rollout, SamplingParams
from amcs.threads import hand_over

COLUMN_BLOCK = 64  # batch_invariant: the cache width is always a multiple of this


def row_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for rollout `index` of a request seeded with `seed`."""
    return random.Random(f"{seed}:{index}").getrandbits(63)


@dataclass(eq=False)
class _Row:
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    budget: int = 0
    uniforms: list[float] = field(default_factory=list)
    out_ids: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0
    tail: str = ""

    def resolve(self, result: Rollout | BaseException) -> None:
        """Hand the result to the caller's event loop (called from the worker thread)."""
        hand_over(self.loop, self.future, result)


@dataclass(eq=False)
class _Batch:
    """The rows being decoded: their KV cache, attention mask (left padding), the position of
    each row's last token, and the logits for each row's next token."""

    rows: list[_Row]
    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor


def _row_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear as one (T, K) x (K, N) product per row of x (B, T, K): the row's result does not
    depend on how many rows are multiplied with it, unlike a (B*T, K) x (K, N) product."""
    shape = x.shape
    x3 = x.reshape(-1, shape[-2], shape[-1]) if x.dim() > 2 else x[:, None, :]
    out = torch.bmm(x3, self.weight.T.expand(x3.shape[0], -1, -1))
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*shape[:-1], out.shape[-1])


class HFBackend:
    """Sample from any local or hub causal LM with transformers.

    max_batch_size bounds the rows decoded together; a request for n rollouts adds n rows.
    batch_invariant (default: on CPU) makes a seeded rollout bit-identical whatever its batch
    company (see the module docstring). It is verified on CPU in float32; on CUDA it is off by
    default, as it is unmeasured there.
    """

    def __init__(
        self,
        model: str | Path = TINY_POLICY,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        max_batch_size: int = 128,
        seed: int = 0,
        batch_invariant: bool | None = None,
    ) -> None:
        self.model_name = str(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        if batch_invariant is None:
            batch_invariant = self.device.type == "cpu"
        self.batch_invariant = batch_invariant
        self.model = (
            AutoModelForCausalLM.from_pretrained(
                model, dtype=dtype, **({"attn_implementation": "eager"} if batch_invariant else {})
            )
            .to(self.device)
            .eval()
        )
        self.max_batch_size = max_batch_size
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        if batch_invariant:
            for module in self.model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.forward = types.MethodType(_row_linear, module)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._eos = torch.tensor(sorted(self.eos_ids), device=self.device)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.eos_ids), 0)
        self._rng = random.Random(seed)
        self._pending: deque[_Row] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pieces: list[str] | None = None  # decoded tokens, for stop strings
        # How much batching happens: forward passes run, and the most rows in one.
        self.forward_passes = 0
        self.peak_rows = 0

    # --- the protocol -----------------------------------------------------------------------

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        if self._closed:
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
                row_seed(params.seed, i) if params.seed is not None else self._rng.getrandbits(63)
            )
            rows.append(_Row(list(prompt_ids), params, seed, loop.create_future(), loop, budget))
        with self._wake:
            self._pending.extend(rows)
            self._wake.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="amcs-hf", daemon=True)
            self._thread.start()
        try:
            return list(await asyncio.gather(*(r.future for r in rows)))
        except asyncio.CancelledError:
            for r in rows:
                r.future.cancel()  # the worker drops cancelled rows at its next step
            raise

    async def aclose(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # --- the worker thread ------------------------------------------------------------------

    def _serve(self) -> None:
        batch: _Batch | None = None
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._pending and batch is None and not self._closed:
                        self._wake.wait()
                    if self._closed:
                        break
                    room = self.max_batch_size - (len(batch.rows) if batch else 0)
                    # Joining costs a prefill and a copy of the running cache, so rows join in
                    # groups: when the batch is empty or has at least half its room free.
                    if batch is not None and room < self.max_batch_size // 2:
                        room = 0
                    new = []
                    while self._pending and len(new) < room:
                        row = self._pending.popleft()
                        if not row.future.cancelled():
                            new.append(row)
                try:
                    if new:
                        batch = self._merge(batch, self._prefill(new))
                    if batch is not None:
                        batch = self._step(batch)
                except Exception as exc:  # noqa: BLE001 - every caller in the batch gets it
                    for row in (batch.rows if batch else []) + new:
                        row.resolve(exc)
                    batch = None
        closed = RuntimeError("backend closed")
        for row in (batch.rows if batch else []) + list(self._pending):
            row.resolve(closed)

    def _forward(self, ids, mask, positions, cache, **kw) -> torch.Tensor:
        self.forward_passes += 1
        self.peak_rows = max(self.peak_rows, ids.shape[0])
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
        for row in rows:
            gen = torch.Generator().manual_seed(row.seed)
            row.uniforms = torch.rand(row.budget, generator=gen, dtype=torch.float64).tolist()
        if self.batch_invariant:
            return self._prefill_alone(rows)
        dev = self.device
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            mask[i, width - len(row.prompt_ids) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, positions, cache, logits_to_keep=1)
        return _Batch(rows, cache, mask, positions[:, -1:], logits)

    def _prefill_alone(self, rows: list[_Row]) -> _Batch:
        """Rule 1: one unpadded forward per distinct prompt, its cache repeated for each row that
        asked for that prompt."""
        dev = self.device
        groups: dict[tuple[int, ...], list[_Row]] = {}
        for row in rows:
            groups.setdefault(tuple(row.prompt_ids), []).append(row)
        parts = []
        for prompt, members in groups.items():
            n, length = len(members), len(prompt)
            ids = torch.tensor([prompt], device=dev)
            positions = torch.arange(length, device=dev)[None, :]
            cache = DynamicCache(config=self.model.config)
            logits = self._forward(ids, torch.ones_like(ids), positions, cache, logits_to_keep=1)
            for layer in cache.layers:
                layer.keys = layer.keys.repeat(n, 1, 1, 1)
                layer.values = layer.values.repeat(n, 1, 1, 1)
            parts.append(
                _Batch(
                    members,
                    cache,
                    torch.ones((n, length), dtype=torch.long, device=dev),
                    positions[:, -1:].repeat(n, 1),
                    logits.repeat(n, 1),
                )
            )
        return self._stack(parts)

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
            if not self.batch_invariant:
                # Drop leading columns that are padding for every remaining row.
                self._pad_columns(batch, -int((batch.mask.cumsum(-1) == 0).sum(-1).min()))
        if self.batch_invariant:
            # Rule 3: with the new column, the width becomes the least multiple of COLUMN_BLOCK
            # that holds every row.
            longest = int(batch.mask.sum(-1).max()) + 1
            width = -(-longest // COLUMN_BLOCK) * COLUMN_BLOCK
            self._pad_columns(batch, width - 1 - batch.mask.shape[1])
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
    tempered, top-k and top-p filtered distribution with the row's own uniform number u."""
    greedy = logprobs.argmax(-1)
    temp = temperature.clamp(min=1e-5)[:, None]
    probs = torch.softmax(logprobs / temp, dim=-1).double()
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    rank = torch.arange(probs.shape[-1], device=probs.device)[None, :]
    k = torch.where(top_k > 0, top_k, probs.shape[-1])[:, None]
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the higher-ranked tokens
    keep = (rank < k) & ((before < top_p[:, None]) | (rank == 0))
    cdf = (sorted_probs * keep).cumsum(-1)
    index = (cdf <= u[:, None] * cdf[:, -1:]).sum(-1).clamp(max=probs.shape[-1] - 1)
    sampled = order.gather(1, index[:, None]).squeeze(1)
    return torch.where(temperature > 0, sampled, greedy)
