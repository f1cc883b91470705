"""The asyncio scheduler behind `amcs generate`: many searches at once over one backend.

Up to ``concurrency`` searches run as coroutines; every backend request passes one global limit on
requests in flight, a per-request timeout and bounded retries with backoff. One writer commits
finished problems in input order, so a run's data file does not depend on which search finished
first, and a resumed run continues exactly where the file's last committed problem ended. A problem
whose search fails (after retries) is committed as failed with the reason, and the run goes on.
Cancellation (Ctrl-C) never interrupts a write: writes are synchronous, between awaits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amcs.backends.base import Backend, Rollout, SamplingParams
from amcs.problems import Problem
from amcs.prompts import prompt_ids as default_prompt_ids
from amcs.records import RecordWriter
from amcs.search import AnswerChecker, SearchConfig, SearchResult, derive_seed, run_search
from amcs.steps import StepSplitter

log = logging.getLogger("amcs.engine")


@dataclass
class RunCounters:
    """Live totals of a run, read by progress displays."""

    total: int = 0
    skipped: int = 0  # already done in the output file (resume)
    done: int = 0
    failed: int = 0
    rollouts: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    retries: int = 0
    labels_positive: int = 0
    labels_negative: int = 0
    paths: int = 0
    early_exits: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def cache_hit_ratio(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.cached_tokens else None


class LimitedBackend:
    """A backend behind a global in-flight limit, a timeout and retries with backoff.

    ValueError and TypeError mean a bad request, so they are not retried."""

    def __init__(
        self,
        backend: Backend,
        counters: RunCounters,
        max_inflight: int = 128,
        retries: int = 3,
        timeout: float | None = None,
        backoff: float = 0.5,
    ) -> None:
        self.inner = backend
        self.tokenizer = backend.tokenizer
        self.counters = counters
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self._gate = asyncio.Semaphore(max_inflight)

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        attempt = 0
        while True:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a Ctrl-C
                # cancellation that lands as the request completes, and the run goes on.
                async with self._gate, asyncio.timeout(self.timeout):
                    rollouts = await self.inner.sample(prompt_ids, n, params)
                break
            except (ValueError, TypeError):
                raise
            except Exception as exc:  # noqa: BLE001 - transient until retries run out
                if attempt >= self.retries:
                    raise
                attempt += 1
                self.counters.retries += 1
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning(
                    "request failed (%s: %s); retry %d in %.1fs",
                    type(exc).__name__,
                    exc,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
        c = self.counters
        c.requests += 1
        c.rollouts += len(rollouts)
        c.tokens += sum(r.num_tokens for r in rollouts)
        # Per rollout: each one's prompt is either served from the cache or computed.
        c.prompt_tokens += len(prompt_ids) * len(rollouts)
        c.cached_tokens += sum(r.cached_tokens for r in rollouts)
        return rollouts

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class _Outcome:
    problem: Problem
    result: SearchResult | None
    reason: str | None
    seconds: float


async def generate(
    problems: list[Problem],
    backend: Backend,
    checker: AnswerChecker,
    config: SearchConfig,
    writer: RecordWriter,
    *,
    prompt_ids: Callable[[Problem], list[int]] | None = None,
    model_name: str,
    seed: int = 0,
    concurrency: int = 64,
    max_inflight: int = 128,
    retries: int = 3,
    request_timeout: float | None = None,
    counters: RunCounters | None = None,
) -> RunCounters:
    """Label every problem not already committed in `writer`'s file; returns the run's totals.

    prompt_ids turns a problem into the model's prompt (default: amcs.prompts.prompt_ids, the
    chat template when the tokenizer has one)."""
    counters = counters or RunCounters()
    if prompt_ids is None:

        def prompt_ids(problem: Problem) -> list[int]:
            return default_prompt_ids(backend.tokenizer, problem.question)

    todo = [p for p in problems if p.id not in writer.done_ids]
    counters.total = len(problems)
    counters.skipped = len(problems) - len(todo)
    limited = LimitedBackend(backend, counters, max_inflight, retries, request_timeout)
    splitter = StepSplitter(backend.tokenizer, config.separator)

    finished: dict[int, _Outcome] = {}
    progressed = asyncio.Event()
    slots = asyncio.Semaphore(concurrency)
    # Finished problems wait for earlier ones before they are written; bound how far ahead
    # searches may run so that buffer stays small.
    window = max(4 * concurrency, 16)
    next_to_write = 0

    async def search_one(index: int, problem: Problem) -> None:
        start = time.monotonic()
        result, reason = None, None
        try:
            ids = prompt_ids(problem)
            result = await run_search(
                problem, limited, checker, config, ids, derive_seed(seed, problem.id), splitter
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded as this problem's failure
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("problem %s failed: %s", problem.id, reason)
        finally:
            slots.release()
        finished[index] = _Outcome(problem, result, reason, time.monotonic() - start)
        progressed.set()

    def record(outcome: _Outcome) -> dict:
        p, r = outcome.problem, outcome.result
        base = {"problem_id": p.id, "question": p.question, "answer": p.answer}
        if r is None:
            counters.failed += 1
            stats = {"wall_time": round(outcome.seconds, 3)}
            return base | {
                "paths": [],
                "status": "failed",
                "reason": outcome.reason,
                "stats": stats,
            }
        paths = [dict(path, method=config.method, model=model_name) for path in r.paths]
        stats = r.stats.to_dict() | {
            "wall_time": round(outcome.seconds, 3),
            "labels_positive": r.labels_positive,
            "labels_negative": r.labels_negative,
        }
        counters.done += 1
        counters.paths += len(paths)
        counters.labels_positive += r.labels_positive
        counters.labels_negative += r.labels_negative
        counters.early_exits += r.stats.early_exits
        return base | {"paths": paths, "stats": stats, "tree": r.tree}

    async def write_in_order() -> None:
        nonlocal next_to_write
        while next_to_write < len(todo):
            while next_to_write not in finished:
                progressed.clear()
                await progressed.wait()
            # Everything finished in order so far goes out in one commit (one fsync per file).
            batch = []
            while next_to_write in finished:
                batch.append(record(finished.pop(next_to_write)))
                next_to_write += 1
            writer.write_problems(batch)
            progressed.set()  # the launcher may be waiting for the window to move

    async def launch_all(tg: asyncio.TaskGroup) -> None:
        for index, problem in enumerate(todo):
            while index >= next_to_write + window:
                progressed.clear()
                await progressed.wait()
            await slots.acquire()
            tg.create_task(search_one(index, problem))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(launch_all(tg))
        tg.create_task(write_in_order())
    return counters


async def generate_to_file(
    problems: list[Problem],
    backend: Backend,
    checker: AnswerChecker,
    config: SearchConfig,
    out: str | Path,
    **options,
) -> RunCounters:
    """`generate` into the file `out` (resumed if it exists); options as for `generate`."""
    with RecordWriter(out) as writer:
        return await generate(problems, backend, checker, config, writer, **options)
