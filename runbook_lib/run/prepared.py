"""A kernel started before its run is known, and the one-slot hand-over to the run that uses it.

`runbook serve --warm` (run/standby.py) starts a kernel in a standby process and `offer`s it;
`run_notebook` `claim`s it for its run and `bind`s it: the kernel is moved into the record folder
and given the run's environment by one silent execution (no execution count, no history, no
output), and its watchdog is armed with the run's bound. A kernel that no longer answers is
discarded and the run starts a cold one, as it always does.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from .kernel import RunKernel
from .watchdog import RunWatchdog

READY_TIMEOUT_S = 60.0  # a prepared kernel must answer within this (it has booted)
# What a runbook's cells import, imported by a prepared kernel while it waits (`preload`): in a burst of
# ten incidents on two cores, each import is CPU the other verdicts wait for. Modules only: no name is
# bound, nothing runs but their import; a notebook that forgets an import fails warm as it does cold.
PRELOAD = {"triage": ("httpx", "runbook_lib.runbooks.triage", "runbook_lib.sources.probes", "runbook_lib.record",
                      "runbook_lib.display", "runbook_lib.analysis.decision", "runbook_lib.analysis.severity",
                      "runbook_lib.paths",
                      # httpx's async transport imports these at its first request
                      "httpcore", "httpcore._backends.auto", "httpcore._backends.anyio",
                      "anyio._backends._asyncio", "anyio.streams.tls", "anyio.streams.stapled", "anyio.to_thread")}
_offered: list[PreparedKernel] = []


def offer(prepared: PreparedKernel) -> None:
    """Make `prepared` the kernel the next run of its kernel name uses (in this process, once)."""
    _offered.append(prepared)


def claim(kernel_name: str) -> PreparedKernel | None:
    """The offered kernel for `kernel_name`, taken (no other run gets it), or None: start a cold one."""
    for prepared in list(_offered):
        if prepared.kernel_name == kernel_name:
            _offered.remove(prepared)
            return prepared
    return None


class PreparedKernel:
    """A kernel started before its run is known; `bind` hands it to one run, `discard` ends it unused."""

    def __init__(self, kernel_name: str) -> None:
        self.kernel_name = kernel_name
        self.scratch = Path(tempfile.mkdtemp(prefix="runbook-standby-"))  # its cwd until bound: empty
        self.watchdog = RunWatchdog(None)  # armed by bind with the run's bound
        self.kernel = RunKernel(self.watchdog.kernel_manager_class(), kernel_name, self.scratch)
        self.html: Any = None  # an execute.HtmlWarmup made while waiting (nbconvert imported, templates built)
        self.used = False

    def start(self, output_fd: int | None = None) -> None:
        launch = {} if output_fd is None else {"stdout": output_fd, "stderr": output_fd}
        self.kernel.start(**launch)

    @property
    def pid(self) -> int | None:
        provisioner = getattr(self.kernel.km, "provisioner", None)
        return getattr(getattr(provisioner, "process", None), "pid", None)

    def alive(self) -> bool:
        process = getattr(getattr(self.kernel.km, "provisioner", None), "process", None)
        return process is not None and process.poll() is None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the kernel answers (it has booted); raises when it does not within `timeout_s`."""
        from jupyter_core.utils import run_sync

        run_sync(self._ready)(timeout_s)

    async def _ready(self, timeout_s: float) -> None:
        kc = self.kernel.km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=timeout_s)
        finally:
            kc.stop_channels()

    def preload(self, notebook: str, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """Import the modules `notebook`'s cells import (`PRELOAD`) in the kernel, binding no name."""
        from jupyter_core.utils import run_sync

        modules = PRELOAD.get(notebook, ())
        if not modules:
            return True
        code = "; ".join(f"__import__('importlib').import_module({m!r})" for m in modules)
        return bool(run_sync(self._execute)(code, timeout_s))

    def bind(self, record_dir: Path, env: dict[str, str], bound_s: float) -> RunKernel | None:
        """Give the kernel to the run writing `record_dir`: its watchdog armed with `bound_s`, its cwd the
        record folder and `env` in its environment, as a cold kernel starts with. None (the kernel is
        discarded) when it no longer answers: the run then starts a cold one."""
        from jupyter_core.utils import run_sync

        self.used = True
        cwd, old = str(Path(record_dir).resolve()), str(self.scratch)
        # one silent statement binding no name: no execution count, no history, no output
        code = (f"__import__('os').chdir({cwd!r}); __import__('os').environ.update({dict(env)!r}); "
                f"__import__('sys').path[:] = [{cwd!r} if p == {old!r} else p for p in __import__('sys').path]")
        try:
            if not self.alive():
                raise RuntimeError("the prepared kernel is gone")
            self.watchdog.arm(bound_s)
            ok = run_sync(self._execute)(code, 10.0)
        except Exception:  # noqa: BLE001 - dead or stuck: the run starts a cold kernel instead
            ok = False
        if not ok:
            self.discard()
            return None
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.kernel.cwd = Path(cwd)
        return self.kernel

    async def _execute(self, code: str, timeout_s: float) -> bool:
        """Run `code` silently and wait for its reply on the shell channel only: the kernel answered
        `wait_ready` before, and a silent execution sends nothing worth reading on IOPub (no wait for
        IOPub to connect or to go quiet, ~0.2 s each)."""
        import time
        from queue import Empty

        kc = self.kernel.km.client()
        kc.start_channels(iopub=False, stdin=False, hb=False, control=False)
        try:
            msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    reply = await kc.get_shell_msg(timeout=left)
                except Empty:
                    break
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    return bool(reply.get("content", {}).get("status") == "ok")
            return False
        finally:
            kc.stop_channels()

    def discard(self) -> None:
        """Stop the kernel, its watchdog and its scratch folder (unused, dead, or at exit)."""
        try:
            self.kernel.stop()
        except Exception:  # noqa: BLE001 - stopping what may already be gone
            pass
        self.watchdog.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
