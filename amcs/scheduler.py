"""The asyncio scheduler behind `amcs generate`: many searches at once over one backend.

Up to ``concurrency`` searches run as coroutines; every backend request passes one global limit on
requests in flight and a per-request timeout. One writer commits finished problems in input order,
so a run's data file does not depend on which search finished first, and a resumed run continues
exactly where the file's last committed problem ended. Cancellation (Ctrl-C) never interrupts a
write: writes are synchronous, between awaits.

What a failed request means decides what happens (``LimitedBackend``):

- the server is unreachable (``BackendUnavailableError``, a refused or reset connection, or a
  server-side failure while the backend's ``health()`` check fails too): the run waits for it with
  bounded patience — one request probes (the health check, then the request) with capped
  exponential backoff, the others wait for it, the progress line says "waiting for the server" —
  and goes on when it answers;
  after ``patience`` seconds without an answer the run stops (``ServerGoneError``), every
  committed problem safe, and resuming continues it. No problem fails because a server restarted.
- the configuration is wrong (``BackendConfigError``: an unknown model, a refused parameter):
  the run stops at once with the message; nothing is recorded as failed.
- the request itself is bad (``ValueError``/``TypeError``, e.g. a prompt longer than the context):
  that problem fails, with the reason, and the run goes on.
- anything else is retried ``retries`` times with backoff, then fails that problem.

Failed problems are committed with their reason and retried when the run is resumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amcs.backends.base import (
    Backend,
    BackendConfigError,
    BackendUnavailableError,
    Rollout,
    SamplingParams,
)
from amcs.problems import Problem
from amcs.prompts import prompt_ids as default_prompt_ids
from amcs.records import RecordWriter, run_fingerprint
from amcs.redaction import redact
from amcs.search import AnswerChecker, SearchConfig, SearchResult, run_search
from amcs.seeds import derive_seed
from amcs.steps import StepSplitter

log = logging.getLogger("amcs.scheduler")


class ServerGoneError(RuntimeError):
    """The backend did not answer for longer than the run's patience; the run stops (resumable)."""


# Errors that stop the whole run instead of failing one problem.
RUN_ERRORS = (BackendConfigError, ServerGoneError)


@dataclass
class RunCounters:
    """Live totals of a run, read by progress displays."""

    total: int = 0
    skipped: int = 0  # already done in the output file (resume)
    retried: int = 0  # failed in an earlier run, searched again
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
    grading_retried: int = 0  # grading deadlines missed and tried again (amcs.grading.Grader)
    grading_unresolved: int = 0  # checks with no verdict after the last attempt: graded wrong
    outages: int = 0  # times the server stopped answering and the run waited
    waiting_since: float | None = None  # monotonic time the current outage began
    waiting_reason: str = ""
    failure_reasons: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def cache_hit_ratio(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.cached_tokens else None


def failure_kind(reason: str) -> str:
    """A failure reason without its details, to group failures in a summary."""
    return reason.split(":", 1)[0] if reason else "unknown"


class LimitedBackend:
    """A backend behind a global in-flight limit and a timeout, with the error rules of the
    module docstring: patience for an unreachable server, retries with backoff otherwise."""

    def __init__(
        self,
        backend: Backend,
        counters: RunCounters,
        max_inflight: int = 128,
        retries: int = 3,
        timeout: float | None = None,
        backoff: float = 0.5,
        patience: float = 600.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.inner = backend
        self.tokenizer = backend.tokenizer
        self.counters = counters
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.patience = patience
        self.max_backoff = max_backoff
        self._gate = asyncio.Semaphore(max_inflight)
        # Outage state: while the server is down, one request (the prober) retries with capped
        # backoff and every other request waits for it to get through.
        self._down_since: float | None = None
        self._up = asyncio.Event()
        self._up.set()
        self._prober: asyncio.Task | None = None
        self._probe_delay = backoff
        self._recovered_at = float("-inf")  # when the last outage ended

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        attempt = 0
        while True:
            await self._wait_while_down()
            sent = time.monotonic()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a Ctrl-C
                # cancellation that lands as the request completes, and the run goes on.
                async with self._gate, asyncio.timeout(self.timeout):
                    rollouts = await self.inner.sample(prompt_ids, n, params)
            except (BackendConfigError, ValueError, TypeError):
                raise
            except Exception as exc:  # noqa: BLE001 - an outage, or transient until retries run out
                if await self._is_outage(exc):
                    if sent >= self._recovered_at:  # not a request sent before the recovery
                        await self._server_down(exc)
                    continue
                if attempt >= self.retries:
                    raise
                attempt += 1
                self.counters.retries += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                log.warning(
                    "request failed (%s: %s); retry %d in %.1fs",
                    type(exc).__name__,
                    exc,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._server_up(sent)
            break
        c = self.counters
        c.requests += 1
        c.rollouts += len(rollouts)
        c.tokens += sum(r.num_tokens for r in rollouts)
        # Per rollout: each one's prompt is either served from the cache or computed.
        c.prompt_tokens += len(prompt_ids) * len(rollouts)
        c.cached_tokens += sum(r.cached_tokens for r in rollouts)
        return rollouts

    async def _healthy(self) -> bool | None:
        """The backend's own health check (``async health() -> bool``, e.g. a server's /health),
        or None when it has none."""
        check = getattr(self.inner, "health", None)
        if check is None:
            return None
        try:
            async with asyncio.timeout(30):
                return bool(await check())
        except Exception:  # noqa: BLE001 - a failing health check means not healthy
            return False

    async def _is_outage(self, exc: Exception) -> bool:
        """Whether a failed request means the server is away: it said so (unreachable, refused,
        BackendUnavailableError), or it failed in a server-side way (an HTTP 500, a broken
        answer) and its health check fails too. A server that fails one request while healthy
        has a problem with that request: it is retried, then that problem fails."""
        if not isinstance(exc, ConnectionError):
            return False
        if isinstance(exc, BackendUnavailableError | ConnectionRefusedError | ConnectionResetError):
            return True
        return await self._healthy() is not True

    def _gone(self, exc: object) -> ServerGoneError:
        return ServerGoneError(
            f"the backend has not answered for {self.patience:.0f} s (last error: {exc}); every "
            "committed problem is safe: run the same command again to resume"
        )

    async def _server_down(self, exc: Exception) -> None:
        """A request could not reach the server: start or continue the outage, and either probe
        again after a capped backoff (one request does) or wait for the probe to get through."""
        now = time.monotonic()
        c = self.counters
        if self._down_since is None:
            self._down_since = now
            self._up.clear()
            self._probe_delay = self.backoff
            c.outages += 1
            c.waiting_since = now
            log.warning("waiting for the server: %s", exc)
        c.waiting_reason = redact(str(exc))
        if now - self._down_since > self.patience:
            raise self._gone(exc)
        me = asyncio.current_task()
        if self._prober is None or self._prober.done() or self._prober is me:
            self._prober = me
            # Probe after a capped backoff: with the backend's health check when it has one
            # (cheap), then with the request itself.
            while True:
                left = self.patience - (time.monotonic() - self._down_since)
                await asyncio.sleep(max(0.0, min(self._probe_delay, left + 0.01)))
                self._probe_delay = min(self.max_backoff, self._probe_delay * 2)
                if await self._healthy() is not False:
                    return
                if time.monotonic() - self._down_since > self.patience:
                    raise self._gone(exc)

    async def _wait_while_down(self) -> None:
        me = asyncio.current_task()
        while self._down_since is not None and self._prober is not me:
            if self._prober is None or self._prober.done():
                self._prober = me  # the prober went away (its search ended): take over
                return
            try:
                async with asyncio.timeout(1.0):
                    await self._up.wait()
            except TimeoutError:
                if time.monotonic() - self._down_since > self.patience + self.max_backoff:
                    raise self._gone(self.counters.waiting_reason) from None

    def _server_up(self, sent: float) -> None:
        """A request sent at ``sent`` got through: the outage is over if it was sent during it
        (an answer to a request sent before the outage proves nothing)."""
        if self._down_since is not None and sent >= self._down_since:
            log.warning(
                "the server answers again after %.1f s", time.monotonic() - self._down_since
            )
            self._down_since = None
            self._recovered_at = time.monotonic()
            self.counters.waiting_since = None
            self._up.set()
        if self._prober is asyncio.current_task():
            self._prober = None

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class _Outcome:
    problem: Problem
    result: SearchResult | None
    reason: str | None
    seconds: float
    policy_prompt: str | None = None  # the prompt ids decoded: what the policy was given


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
    patience: float = 600.0,
    counters: RunCounters | None = None,
    keep_rollouts: bool = False,
) -> RunCounters:
    """Label every problem not already committed in `writer`'s file; returns the run's totals.

    prompt_ids turns a problem into the model's prompt (default: amcs.prompts.prompt_ids, the
    chat template when the tokenizer has one); its ids decoded are written as each problem's
    ``policy_prompt``. keep_rollouts stores every estimated node's rollouts in the meta file's
    search tree (``amcs.search.tree.Node.kept``); it changes no label."""
    counters = counters or RunCounters()
    if prompt_ids is None:

        def prompt_ids(problem: Problem) -> list[int]:
            return default_prompt_ids(backend.tokenizer, problem.question)

    # The committed problems must be these problems' first ones, unchanged (a problem file
    # edited under the run would mix labels of two problem sets); `amcs generate` checks this
    # before it loads a model, library callers get it here.
    writer.check_problems(problems)
    todo = [p for p in problems if p.id not in writer.done_ids]
    counters.total = len(problems)
    counters.skipped = len(problems) - len(todo)
    counters.retried = sum(p.id in writer.failed_ids for p in todo)
    limited = LimitedBackend(
        backend, counters, max_inflight, retries, request_timeout, patience=patience
    )
    splitter = StepSplitter.for_config(backend.tokenizer, config)
    # How this session decodes, on every meta line: resume can then say whether the file will
    # equal an uninterrupted run's (deterministic hf decoding) or be a valid continuation.
    decoding = "deterministic" if getattr(backend, "deterministic", False) else "batched"

    finished: dict[int, _Outcome] = {}
    progressed = asyncio.Event()
    slots = asyncio.Semaphore(concurrency)
    # Finished problems wait for earlier ones before they are written; bound how far ahead
    # searches may run so that buffer stays small.
    window = max(4 * concurrency, 16)
    next_to_write = 0

    async def search_one(index: int, problem: Problem) -> None:
        start = time.monotonic()
        result, reason, shown = None, None, None
        try:
            ids = prompt_ids(problem)
            shown = backend.tokenizer.decode(ids)
            result = await run_search(
                problem,
                limited,
                checker,
                config,
                ids,
                derive_seed(seed, problem.id),
                splitter,
                keep_rollouts=keep_rollouts,
            )
        except (asyncio.CancelledError, *RUN_ERRORS):
            raise
        except Exception as exc:  # noqa: BLE001 - recorded as this problem's failure
            reason = redact(f"{type(exc).__name__}: {exc}")
            log.warning("problem %s failed: %s", problem.id, reason)
        finally:
            slots.release()
        finished[index] = _Outcome(problem, result, reason, time.monotonic() - start, shown)
        progressed.set()

    def record(outcome: _Outcome) -> dict:
        p, r = outcome.problem, outcome.result
        base = {
            "problem_id": p.id,
            "question": p.question,
            "answer": p.answer,
            "policy_prompt": outcome.policy_prompt,
            "decoding": decoding,
        }
        if r is None:
            counters.failed += 1
            kind = failure_kind(outcome.reason or "")
            counters.failure_reasons[kind] = counters.failure_reasons.get(kind, 0) + 1
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
        counters.grading_retried += r.stats.grading_retried
        counters.grading_unresolved += r.stats.grading_unresolved
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

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(launch_all(tg))
            tg.create_task(write_in_order())
    except BaseExceptionGroup as group:
        # A run-level error (or a bug) stopped the run: raise it as itself, not as a group.
        stop = group.subgroup(RUN_ERRORS) or group
        while isinstance(stop, BaseExceptionGroup):
            stop = stop.exceptions[0]
        raise stop from None
    finally:
        counters.waiting_since = None
    return counters


async def generate_to_file(
    problems: list[Problem],
    backend: Backend,
    checker: AnswerChecker,
    config: SearchConfig,
    out: str | Path,
    **options,
) -> RunCounters:
    """`generate` into the file `out` (resumed if it exists); options as for `generate`, plus
    ``fingerprint`` (default: method, model, seed and search config; see
    ``amcs.records.run_fingerprint``) and ``retry_failed`` (default True).

    For problems given as a list, with no source to record (``problems="library"``): such a run
    resumes from here only. :func:`amcs.generation.run` takes the options of `amcs generate`
    and writes its fingerprint, so a run started there resumes from the command line and back."""
    fingerprint = options.pop("fingerprint", None) or run_fingerprint(
        method=config.method,
        model=options["model_name"],
        seed=options.get("seed", 0),
        search=config.to_dict(),
        problems="library",
    )
    retry_failed = options.pop("retry_failed", True)
    with RecordWriter(
        out, fingerprint=fingerprint, retry_failed=retry_failed, problems=problems
    ) as writer:
        return await generate(problems, backend, checker, config, writer, **options)
