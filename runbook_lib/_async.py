"""Run a coroutine to completion from sync code, inside Jupyter or not.

ipykernel executes cells while its own event loop runs, so `asyncio.run` would fail there; a
short-lived worker thread with its own loop works in both places.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` and return its result; callers bound it with their own timeouts."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _thread_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # a worker thread with no loop set
        return None


@contextlib.contextmanager
def closing_thread_loop() -> Iterator[None]:
    """Close the event loop that a notebook run leaves set in a worker thread.

    nbclient (through jupyter_core's `run_sync`) creates a loop per thread and never closes it, so
    each run from a pool thread (`runbook serve`, parallel runs) kept its self-pipe sockets open
    until garbage collection: two descriptors per run in a long-lived server.
    """
    if threading.current_thread() is threading.main_thread():
        yield
        return
    before = _thread_loop()
    try:
        yield
    finally:
        after = _thread_loop()
        if after is not None and after is not before and not after.is_running():
            after.close()
            asyncio.set_event_loop(before)
