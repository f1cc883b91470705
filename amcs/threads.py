"""Handing results from a worker thread to the asyncio caller that waits for them."""

from __future__ import annotations

import asyncio
import contextlib


def _settle(future: asyncio.Future, result) -> None:
    if future.done():  # cancelled by the caller meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def hand_over(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result) -> None:
    """Resolve `future` (of `loop`) with a result or an exception, from any thread. A closed
    loop means nobody waits any more, so that is not an error."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, result)
