"""Run a coroutine to completion from sync code, inside Jupyter or not.

ipykernel executes cells while its own event loop runs, so `asyncio.run` would fail there; a
short-lived worker thread with its own loop works in both places.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
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
