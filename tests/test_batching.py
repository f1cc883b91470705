"""amcs.batching: the worker that gathers concurrent requests into rounds (shared by the PRM
scorer and the hf backend). Rounds are counted, never timed."""

import asyncio
import threading
from dataclasses import dataclass

import pytest

from amcs.batching import BatchJob, BatchWorker, Waiter

HANG_GUARD = 120  # seconds: a request never resolved fails the test instead of hanging it


@dataclass(eq=False, kw_only=True)
class Item(Waiter):
    value: int


def items(loop, values):
    return [Item(future=loop.create_future(), loop=loop, value=v) for v in values]


def serve_all(job: BatchJob, values, cancelled=()) -> list:
    """Queue items of ``values`` at once (those at the ``cancelled`` indexes given up), on a
    worker running ``job``; their results (exceptions as values), the worker closed."""
    worker = BatchWorker(job, name="test-batching", what="test")

    async def main():
        loop = asyncio.get_running_loop()
        queued = items(loop, values)
        for index in cancelled:
            queued[index].future.cancel()
        worker.submit(queued)  # all queued before the worker's first round
        results = await asyncio.gather(*(i.future for i in queued), return_exceptions=True)
        await worker.aclose()
        assert not worker.running
        return results

    return asyncio.run(main())


class Doubling(BatchJob[Item]):
    """Each round doubles its items' values; a negative value fails the whole round."""

    def __init__(self, size: int) -> None:
        self.max_batch_size = size
        self.rounds: list[list[int]] = []

    def run(self, taken: list[Item]) -> None:
        self.rounds.append([item.value for item in taken])
        if any(item.value < 0 for item in taken):
            raise RuntimeError("negative")
        for item in taken:
            item.resolve(2 * item.value)


def test_waiting_requests_go_in_rounds_of_the_jobs_room_and_cancelled_ones_are_skipped():
    job = Doubling(3)
    results = serve_all(job, range(7), cancelled=[4])
    assert job.rounds == [[0, 1, 2], [3, 5, 6]]
    assert [r for i, r in enumerate(results) if i != 4] == [0, 2, 4, 6, 10, 12]
    assert isinstance(results[4], asyncio.CancelledError)


def test_a_failing_round_fails_its_callers_only_and_the_worker_goes_on():
    job = Doubling(2)
    worker = BatchWorker(job, name="test-batching", what="test")

    async def main():
        loop = asyncio.get_running_loop()
        first = items(loop, [1, -1, 5])
        worker.submit(first)
        got = await asyncio.wait_for(
            asyncio.gather(*(i.future for i in first), return_exceptions=True), HANG_GUARD
        )
        later = items(loop, [7])
        worker.submit(later)
        got.append(await later[0].future)
        await worker.aclose()
        with pytest.raises(RuntimeError, match="test is closed"):
            worker.submit(items(loop, [8]))
        return got

    first, second, third, later = asyncio.run(main())
    assert job.rounds == [[1, -1], [5], [7]]
    assert all(isinstance(r, RuntimeError) and "negative" in str(r) for r in (first, second))
    assert (third, later) == (10, 14)


def test_closing_fails_what_is_still_queued():
    started, release = threading.Event(), threading.Event()

    class Blocking(Doubling):
        def run(self, taken):
            started.set()
            release.wait()
            super().run(taken)

    job = Blocking(1)
    worker = BatchWorker(job, name="test-batching", what="test")

    async def main():
        loop = asyncio.get_running_loop()
        queued = items(loop, [1, 2, 3])
        worker.submit(queued)
        await asyncio.to_thread(started.wait)
        closing = asyncio.create_task(worker.aclose())
        await asyncio.sleep(0)  # aclose has marked the worker closed and waits for its thread
        assert worker.closed
        release.set()
        await closing
        return await asyncio.wait_for(
            asyncio.gather(*(i.future for i in queued), return_exceptions=True), HANG_GUARD
        )

    done, *left = asyncio.run(main())
    assert done == 2 and job.rounds == [[1]]  # the round under way finishes
    assert all(isinstance(r, RuntimeError) and str(r) == "test closed" for r in left)


class Countdown(BatchJob[Item]):
    """Work in flight between rounds, like the hf backend's decode batch: an item stays for
    ``value`` rounds and is resolved with the round it finished in; new items join only while
    the batch has room. A round that takes a negative item fails."""

    def __init__(self, size: int) -> None:
        self.max_batch_size = size
        self.in_flight: list[Item] = []
        self.left: dict[int, int] = {}
        self.rounds = 0

    def room(self) -> int:
        return self.max_batch_size - len(self.in_flight)

    def busy(self) -> bool:
        return bool(self.in_flight)

    def abandon(self) -> list[Item]:
        dropped, self.in_flight = self.in_flight, []
        return dropped

    def run(self, taken: list[Item]) -> None:
        self.rounds += 1
        for item in taken:
            self.left[id(item)] = item.value
        self.in_flight += taken
        if any(item.value < 0 for item in taken):
            raise RuntimeError("a negative item joined")
        for item in list(self.in_flight):
            self.left[id(item)] -= 1
            if self.left[id(item)] == 0:
                self.in_flight.remove(item)
                item.resolve(self.rounds)


def test_a_busy_job_runs_rounds_without_new_requests_and_takes_only_its_room():
    job = Countdown(2)
    results = serve_all(job, [3, 1, 2])
    # Rounds 1-3: the 3-round item; the 1-round one ends in round 1, so the 2-round one joins in
    # round 2 (no room in round 1) and ends in round 3.
    assert results == [3, 1, 3]
    assert job.rounds == 3


def test_an_error_fails_the_requests_in_flight_too():
    job = Countdown(4)
    worker = BatchWorker(job, name="test-batching", what="test")

    async def main():
        loop = asyncio.get_running_loop()
        first = items(loop, [10**9])  # in flight until the error
        worker.submit(first)
        while job.rounds < 1:
            await asyncio.sleep(0.001)
        second = items(loop, [-1])
        worker.submit(second)
        results = await asyncio.wait_for(
            asyncio.gather(first[0].future, second[0].future, return_exceptions=True), HANG_GUARD
        )
        await worker.aclose()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "negative item" in str(r) for r in results)
    assert job.in_flight == [] and job.rounds > 1
