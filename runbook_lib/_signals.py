"""Wait for Ctrl-C or a supervisor's SIGTERM: how every foreground command of ours ends.

`runbook serve` and `runbook stack` block here until asked to stop, then shut down within their
own bounds. It lives beside `_time` and `_async` (helpers private to the package) rather than in
`sim/`, because product code must not build on the simulators.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def wait_for_stop_signal(max_s: float | None = None) -> None:
    """Block until SIGINT/SIGTERM (or `max_s` seconds), then restore the previous handlers.

    Handlers can only be installed from the main thread; elsewhere this just waits `max_s`. While
    waiting, `kill -USR1` writes every thread's stack to stderr (a command that does not stop can say why).
    """
    import faulthandler

    if threading.current_thread() is threading.main_thread():
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (OSError, ValueError, AttributeError):
            pass  # stderr without a file descriptor (captured, e.g. under pytest): no stack dumps then
    with stop_signals() as stop:
        stop.wait(max_s)


STOPS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """While inside: SIGINT/SIGTERM set the yielded event instead of ending the process.

    For a command that must stop its children itself (`runbook lab`): a signal arriving at any
    moment, even while it is still starting them, ends in its own clean shutdown. Another thread
    may set the event too (a child that exited). The previous handlers come back on exit.

    The event is set by a thread reading the signal wakeup fd, not by the Python handler: that
    handler runs only when the main thread next executes bytecode, which a main thread blocked in
    `Event.wait()` never does when the kernel delivers the signal to another thread (serve has
    many), and an `Event.set()` inside it could deadlock on the lock the interrupted main thread holds.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    hit: list[int] = []
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    done = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        hit.append(signum)  # no lock taken here; the pump sets the event

    def pump() -> None:
        while not done.is_set():
            if hit:
                stop.set()
            try:
                readable = select.select([read_fd], [], [], 0.25)[0]
                data = os.read(read_fd, 64) if readable else b""
            except OSError:
                return
            if any(b in STOPS for b in data):
                stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOPS}
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    thread = threading.Thread(target=pump, name="stop-signals", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        done.set()
        thread.join(1)
        os.close(read_fd)
        os.close(write_fd)
