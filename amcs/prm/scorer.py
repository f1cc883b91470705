"""Scoring solution steps with a loaded PRM, synchronously or from asyncio.

A step's score is the PRM's probability that the step is correct, in [0, 1]; how a (question,
steps) pair becomes model inputs and how the scores are read from the output is the PRM's input
format's (:mod:`amcs.prm.registry`).

:class:`PRMScorer` scores synchronously (:meth:`PRMScorer.score_batch`) or from asyncio
(:meth:`PRMScorer.score`): concurrent ``score`` calls are queued and one worker thread
(:mod:`amcs.batching`) runs them together in padded batches of up to ``max_batch_size``
sequences, so many searches share each forward pass and the event loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import torch

from amcs.batching import BatchJob, BatchWorker, Waiter
from amcs.prm.format import Encoded, FormatOptions
from amcs.prm.registry import format_named
from amcs.prm.step_tag import DEFAULT_BAD_TOKEN, DEFAULT_GOOD_TOKEN, DEFAULT_STEP_TAG
from amcs.prompts import DEFAULT_SYSTEM_PROMPT
from amcs.step_features import STEP_INPUT_PAD
from amcs.steps import DEFAULT_SEPARATOR


@dataclass(eq=False, kw_only=True)
class _Request(Waiter):
    question: str
    steps: list[str]


class PRMScorer:
    """Scores the steps of solutions with a loaded PRM in the input format ``prm_format`` (one
    of :data:`amcs.prm.PRM_FORMATS`; the keyword options are those of
    :class:`amcs.prm.format.FormatOptions`).

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
        format_class = format_named(prm_format)
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prm_format = prm_format
        self.max_batch_size = max_batch_size
        self.separator = separator
        options = FormatOptions(
            separator=separator,
            step_inputs=step_inputs,
            step_tag=step_tag,
            good_token=good_token,
            bad_token=bad_token,
            system_prompt=system_prompt,
        )
        self.format = format_class(model, tokenizer, options)
        self.device = next(model.parameters()).device
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        self.calls = 0
        self.forward_passes = 0
        self._lock = threading.Lock()  # one forward pass at a time; guards the counters
        self.worker = BatchWorker(_Scoring(self), name="amcs-prm", what="PRM scorer")

    # --- inputs ----------------------------------------------------------------------------

    def encode(self, question: str, steps: list[str]) -> Encoded:
        """Token ids of one sequence, the position whose logits score each step and, for
        step-input models, their extra per-token inputs."""
        steps = list(steps)
        encoded = self.format.encode(question, steps)
        if self.max_positions and len(encoded.ids) > self.max_positions:
            raise ValueError(
                f"a solution of {len(steps)} steps is {len(encoded.ids)} tokens long, more than "
                f"the PRM's {self.max_positions} positions; shorten it (steps are never dropped)"
            )
        return encoded

    # --- scoring ---------------------------------------------------------------------------

    def score_batch(self, items: list[tuple[str, list[str]]]) -> list[list[float]]:
        """P(step correct) for every step of every (question, steps) item, in order."""
        encoded = [self.encode(question, steps) for question, steps in items]
        scores = self.score_encoded(encoded)
        with self._lock:
            self.calls += len(items)
        return scores

    def score_encoded(self, encoded: list[Encoded]) -> list[list[float]]:
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
        columns = self.format.prepare(batch, inputs)
        with self._lock, torch.inference_mode():
            out = self.model(**inputs)
            self.forward_passes += 1
        logits = out.logits if getattr(out, "logits", None) is not None else out[0]
        return [
            self.format.pick_scores(logits[row, cols].float()).tolist()
            for row, cols in enumerate(columns)
        ]

    # --- asyncio ---------------------------------------------------------------------------

    async def score(self, question: str, steps: list[str]) -> list[float]:
        """P(step correct) for each step; concurrent calls share batched forward passes."""
        steps = list(steps)
        if self.worker.closed:
            raise RuntimeError("PRM scorer is closed")
        if not steps:
            with self._lock:
                self.calls += 1
            return []
        loop = asyncio.get_running_loop()
        request = _Request(future=loop.create_future(), loop=loop, question=question, steps=steps)
        self.worker.submit([request])
        return await request.future

    async def aclose(self) -> None:
        """Stop the worker thread; queued calls fail with RuntimeError."""
        await self.worker.aclose()


class _Scoring(BatchJob[_Request]):
    """The scorer's job on its batching worker: up to max_batch_size waiting calls per round,
    encoded (a call whose own input is at fault gets its error) and scored together."""

    def __init__(self, scorer: PRMScorer) -> None:
        self.scorer = scorer
        self.max_batch_size = scorer.max_batch_size

    def run(self, taken: list[_Request]) -> None:
        scorer = self.scorer
        live, encoded = [], []
        for request in taken:
            try:
                encoded.append(scorer.encode(request.question, request.steps))
                live.append(request)
            except Exception as exc:  # noqa: BLE001 - this caller's own input is at fault
                request.resolve(exc)
        scores = scorer.score_encoded(encoded)  # an error here reaches every caller (the worker)
        with scorer._lock:
            scorer.calls += len(live)
        for request, row in zip(live, scores, strict=True):
            request.resolve(row)
