"""Wait for Ctrl-C or a supervisor's SIGTERM: how every foreground command of ours ends.

`runbook serve` and `runbook stack` block here until asked to stop, then shut down within their
own bounds. It lives beside `_time` and `_async` (helpers private to the package) rather than in
`sim/`, because product code must not build on the simulators.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def wait_for_stop_signal(max_s: float | None = None) -> None:
    """Block until SIGINT/SIGTERM (or `max_s` seconds), then restore the previous handlers.

    Handlers can only be installed from the main thread; elsewhere this just waits `max_s`.
    """
    with stop_signals() as stop:
        stop.wait(max_s)


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """While inside: SIGINT/SIGTERM set the yielded event instead of ending the process.

    For a command that must stop its children itself (`runbook lab`): a signal arriving at any
    moment, even while it is still starting them, ends in its own clean shutdown. Another thread
    may set the event too (a child that exited). The previous handlers come back on exit.
    """
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
