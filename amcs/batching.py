"""One worker thread that gathers concurrent asyncio requests into batches: shared by the PRM
scorer (:class:`amcs.prm.PRMScorer`) and the transformers backend (:class:`amcs.backends.hf.HFBackend`).

Callers on any event loop queue requests (:meth:`BatchWorker.submit`) and await their futures; the
worker thread, started on the first request, repeats one round::

    wait until requests wait, the job is busy, or the worker is closed
    take up to job.room() waiting requests, skipping those whose caller gave up (cancelled)
    job.run(taken)            # the job resolves what it finishes, from this thread

so requests that arrive while a round runs go together into the next one. A job that keeps work
in flight between rounds (the backend's running decode batch) says so with ``busy`` and takes
new requests only as its ``room`` allows. An exception out of ``run`` fails the requests of that
round and those in flight (every caller in the batch gets it); the worker goes on. Closing
(:meth:`BatchWorker.aclose`) stops the thread after its current round; requests still queued or
in flight then fail with RuntimeError("<what> closed"), and new ones with "<what> is closed".
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from amcs.threads import hand_over


@dataclass(eq=False)
class Waiter:
    """A request whose caller awaits ``future`` on ``loop``; resolved from the worker thread."""

    future: asyncio.Future
    loop: asyncio.AbstractEventLoop

    def resolve(self, result) -> None:
        """Hand a result or an exception to the caller's event loop (a no-op when the caller
        has given up or its loop is closed)."""
        hand_over(self.loop, self.future, result)


W = TypeVar("W", bound=Waiter)


class BatchJob(Generic[W]):
    """What a :class:`BatchWorker` runs. The defaults fit a job that handles each group of
    waiting requests at once and keeps nothing in flight: up to ``max_batch_size`` per round."""

    max_batch_size: int = 1

    def room(self) -> int:
        """How many waiting requests the next round takes."""
        return self.max_batch_size

    def busy(self) -> bool:
        """Whether work is in flight, so the next round runs without waiting for requests."""
        return False

    def abandon(self) -> list[W]:
        """The requests in flight, dropped by the job (they are failed by the worker)."""
        return []

    def run(self, taken: list[W]) -> None:
        """One round with the newly taken requests (possibly none while busy); resolves each
        request it finishes."""
        raise NotImplementedError


class BatchWorker(Generic[W]):
    """The worker thread running ``job`` (see the module docstring); ``name`` names the thread,
    ``what`` the owner in the closed errors ("backend", "PRM scorer")."""

    def __init__(self, job: BatchJob[W], *, name: str, what: str) -> None:
        self.job = job
        self.name = name
        self.what = what
        self._pending: deque[W] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        """Whether the worker thread has been started and not yet stopped."""
        return self._thread is not None

    def submit(self, requests: Iterable[W]) -> None:
        """Queue ``requests`` for the next round; RuntimeError when the worker is closed."""
        with self._wake:
            if self._closed:
                raise RuntimeError(f"{self.what} is closed")
            self._pending.extend(requests)
            self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    async def aclose(self) -> None:
        """Stop the worker after its current round; queued and in-flight requests fail."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self.job.busy() and not self._closed:
                    self._wake.wait()
                if self._closed:
                    break
                room = self.job.room()
                taken: list[W] = []
                while self._pending and len(taken) < room:
                    request = self._pending.popleft()
                    if not request.future.cancelled():
                        taken.append(request)
            try:
                self.job.run(taken)
            except Exception as exc:  # noqa: BLE001 - every caller in the batch gets it
                for request in self.job.abandon() + taken:
                    request.resolve(exc)
        closed = RuntimeError(f"{self.what} closed")
        with self._wake:
            leftover, self._pending = list(self._pending), deque()
        for request in self.job.abandon() + leftover:
            request.resolve(closed)
