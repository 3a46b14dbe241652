"""The whole-run deadline: a watchdog that kills the kernel when a run outlives its bound.

papermill bounds each cell, not the run; a notebook stuck between cells, or in a long series of
short ones, would run forever. `run_notebook` starts one `RunWatchdog` per run and hands papermill
its kernel manager class, which also keeps the kernel's sockets private to the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from typing import Any


class RunWatchdog:
    """Kill the kernel (its whole process group) when the run outlives `bound_s` seconds.

    papermill only bounds cells. nbclient creates the kernel manager from `kernel_manager_class`,
    so a subclass made here hands the watchdog the manager (hence the kernel's pid); nbclient then
    sees the dead kernel within about a second and the run ends with the partial record saved.

    The same subclass talks to the kernel over Unix sockets in a private folder (transport "ipc")
    instead of TCP ports on 127.0.0.1: concurrent runs cannot race for a port (a kernel that lost
    the race died at start), and other local users cannot reach the kernel.
    """

    def __init__(self, bound_s: float | None) -> None:
        self.bound_s = bound_s or 0.0
        self.km: Any = None
        self.fired = False
        self._sockets = tempfile.mkdtemp(prefix="runbook-kernel-")  # 0700; short: socket paths max 107 bytes
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="runbook-run-watchdog", daemon=True)
        if bound_s is not None:
            self._thread.start()

    def arm(self, bound_s: float) -> None:
        """Start the clock of a watchdog made unarmed (`bound_s` None) for a kernel started before its run
        was known (run/standby.py): the run's bound counts from here, as it does from a cold run's start."""
        self.bound_s = bound_s
        self._thread.start()

    def kernel_manager_class(self) -> type:
        """The class papermill must start the kernel with: it reports the kernel to this watchdog."""
        from jupyter_client.manager import AsyncKernelManager

        watchdog = self

        class WatchedKernelManager(AsyncKernelManager):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.transport = "ipc"
                self.ip = os.path.join(watchdog._sockets, "kernel")  # sockets kernel-1 ... kernel-5
                self.connection_file = os.path.join(watchdog._sockets, "kernel.json")  # removed with them
                watchdog.km = self

        return WatchedKernelManager

    def _watch(self) -> None:
        if self._done.wait(self.bound_s):
            return
        self.fired = True
        while not self._done.is_set():  # until the run has ended: the kernel may still be starting
            self._kill()
            self._done.wait(0.5)

    def _kill(self) -> None:
        provisioner = getattr(self.km, "provisioner", None)
        pid = getattr(provisioner, "pid", None) or getattr(getattr(provisioner, "process", None), "pid", None)
        if not pid:
            return
        try:
            pgid = os.getpgid(pid)
            if pgid == pid:  # jupyter_client starts kernels in their own session: kill their children too
                os.killpg(pgid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        """The run has ended: stop watching and remove the kernel's socket folder."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(2)
        shutil.rmtree(self._sockets, ignore_errors=True)
