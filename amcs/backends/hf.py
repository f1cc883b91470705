"""The transformers backend: the CPU default, also runs on CUDA.

Concurrent ``sample`` calls are queued as rows (one per requested rollout) and gathered into
left-padded batches that a single worker thread decodes with a KV cache, so the event loop never
blocks and many searches share every forward pass. Each row draws its random numbers from its own
seed, so a rollout does not depend on which other requests happened to share its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from amcs.assets import TINY_POLICY
from amcs.backends.base import Rollout, SamplingParams

_MASK = 2**63 - 1


def row_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for rollout `index` of a request seeded with `seed`."""
    return random.Random(f"{seed}:{index}").getrandbits(63)


@dataclass
class _Row:
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    future: asyncio.Future


class HFBackend:
    """Sample from any local or hub causal LM with transformers.

    max_batch_size bounds the rows decoded together; a request for n rollouts adds n rows.
    """

    def __init__(
        self,
        model: str | Path = TINY_POLICY,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        max_batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.model_name = str(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        self.max_batch_size = max_batch_size
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else next(iter(self.eos_ids), 0)
        )
        self._rng = random.Random(seed)
        self._pending: list[_Row] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amcs-hf")
        # Token pieces for stop-string checks, decoded once.
        self._pieces: list[str] | None = None
        # Counters for progress displays and benchmarks.
        self.batches_run = 0
        self.rows_run = 0
        self.tokens_generated = 0

    # --- the protocol -----------------------------------------------------------------------

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        if n < 1:
            return []
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._serve(), name="amcs-hf-batcher")
        futures = []
        for i in range(n):
            seed = (
                row_seed(params.seed, i) if params.seed is not None else self._rng.getrandbits(63)
            )
            future = loop.create_future()
            self._pending.append(_Row(list(prompt_ids), params, seed, future))
            futures.append(future)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*futures))
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()
            raise

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    # --- batching ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._pending = [r for r in self._pending if not r.future.done()]
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                # Let every caller that is ready right now enqueue before the batch is cut.
                await asyncio.sleep(0)
                continue
            batch = self._pending[: self.max_batch_size]
            self._pending = self._pending[self.max_batch_size :]
            try:
                results = await loop.run_in_executor(self._executor, self._generate, batch)
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                for row in batch:
                    if not row.future.done():
                        row.future.set_exception(exc)
                continue
            for row, rollout in zip(batch, results, strict=True):
                if not row.future.done():
                    row.future.set_result(rollout)

    # --- decoding (worker thread) -----------------------------------------------------------

    def _stop_pieces(self) -> list[str]:
        if self._pieces is None:
            vocab = len(self.tokenizer)
            self._pieces = [self.tokenizer.decode([i]) for i in range(vocab)]
        return self._pieces

    @torch.inference_mode()
    def _generate(self, rows: list[_Row]) -> list[Rollout]:
        dev = self.device
        b = len(rows)
        budgets = []
        for row in rows:
            budget = row.params.max_new_tokens
            if self.max_positions:
                budget = min(budget, self.max_positions - len(row.prompt_ids))
            if budget < 1:
                raise ValueError(
                    f"prompt of {len(row.prompt_ids)} tokens leaves no room to generate "
                    f"(model context {self.max_positions})"
                )
            budgets.append(budget)
        steps = max(budgets)

        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            mask[i, width - len(row.prompt_ids) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)

        temperature = torch.tensor([r.params.temperature for r in rows], device=dev)
        top_p = torch.tensor([r.params.top_p for r in rows], device=dev)
        top_k = torch.tensor([r.params.top_k for r in rows], device=dev)
        uniforms = torch.stack(
            [
                torch.rand(steps, generator=torch.Generator().manual_seed(r.seed & _MASK))
                for r in rows
            ]
        ).to(dev)
        eos = torch.tensor(sorted(self.eos_ids), device=dev)

        cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]

        out_ids: list[list[int]] = [[] for _ in rows]
        logprob_sums = [0.0] * b
        finish = [""] * b
        stops = [r.params.stop for r in rows]
        pieces = self._stop_pieces() if any(stops) else None
        tails = [""] * b
        active = torch.arange(b, device=dev)  # which original rows are still in the batch
        for t in range(steps):
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            tokens = _choose(
                logprobs, temperature[active], top_p[active], top_k[active], uniforms[active, t]
            )
            chosen_lp = logprobs.gather(1, tokens[:, None]).squeeze(1)
            is_eos = torch.isin(tokens, eos)
            keep = []
            for j, (row_idx, tok, lp, end) in enumerate(
                zip(
                    active.tolist(),
                    tokens.tolist(),
                    chosen_lp.tolist(),
                    is_eos.tolist(),
                    strict=True,
                )
            ):
                if end:
                    finish[row_idx] = "stop"
                    continue
                out_ids[row_idx].append(tok)
                logprob_sums[row_idx] += lp
                if pieces is not None and stops[row_idx]:
                    longest = max(len(s) for s in stops[row_idx])
                    tails[row_idx] = (tails[row_idx] + pieces[tok])[-(longest + 16) :]
                    if any(s in tails[row_idx] for s in stops[row_idx]):
                        finish[row_idx] = "stop"
                        continue
                if len(out_ids[row_idx]) >= budgets[row_idx]:
                    finish[row_idx] = "length"
                    continue
                keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):
                # Drop finished rows from the batch so later steps only pay for live ones.
                sel = torch.tensor(keep, device=dev)
                cache.reorder_cache(sel)
                active, tokens, mask, positions = (
                    active[sel],
                    tokens[sel],
                    mask[sel],
                    positions[sel],
                )
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            positions = positions[:, -1:] + 1
            logits = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1, :]

        self.batches_run += 1
        self.rows_run += b
        self.tokens_generated += sum(len(x) for x in out_ids)
        return [
            Rollout(
                token_ids=out_ids[i],
                text=self.tokenizer.decode(out_ids[i]),
                logprob_sum=logprob_sums[i],
                finish_reason=finish[i] or "length",
            )
            for i in range(b)
        ]


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
    probs = torch.softmax(logprobs / temp, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    rank = torch.arange(probs.shape[-1], device=probs.device)[None, :]
    k = torch.where(top_k > 0, top_k, probs.shape[-1])[:, None]
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of higher-ranked tokens
    keep = (rank < k) & ((before < top_p[:, None]) | (rank == 0))
    sorted_probs = sorted_probs * keep
    cdf = sorted_probs.cumsum(-1)
    target = u[:, None] * cdf[:, -1:]
    index = (cdf <= target).sum(-1).clamp(max=probs.shape[-1] - 1)
    sampled = order.gather(1, index[:, None]).squeeze(1)
    return torch.where(temperature > 0, sampled, greedy)
