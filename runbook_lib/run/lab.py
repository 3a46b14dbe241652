"""JupyterLab for incident work: our save hooks, a checked port, and nothing left running after it.

`runbook open` and `runbook lab` start JupyterLab on 127.0.0.1 over the output root (the incident
folders, never the tracked runbooks), with the project kernel and `run.interactive`'s hooks, which
seal each copy when it is saved. The server runs in its own session, so Ctrl-C reaches only us:
SIGINT or SIGTERM to the command stops JupyterLab (which shuts its kernels down), seals the copies
once more, and the caller then stops the embedded stack. A port already taken is a clear
`PortInUse` before anything starts, never a traceback.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from .. import KERNEL_NAME
from .._signals import stop_signals
from ..errors import ParameterError, PortInUse, RunbookError
from ..paths import OUTPUTS_ENV
from .interactive import Opened, seal

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
HOOKS = ("--ContentsManager.pre_save_hook=runbook_lib.run.interactive.pre_save_hook",
         "--FileContentsManager.post_save_hook=runbook_lib.run.interactive.post_save_hook")


def check_port_free(what: str, port: int, host: str = HOST, key: str | None = None) -> None:
    """PortInUse when something already listens on `port` (0: any free port, always fine).

    Bound the way our servers bind (SO_REUSEADDR), so a port in TIME_WAIT is not refused.
    """
    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUse(what, port, host, key) from None


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def parse_ports(text: str | None, names: Mapping[str, int], option: str = "--ports") -> dict[str, int]:
    """`--ports`: `free` (every one chosen by the system), or `name=port,...` over the `names` defaults.

    Returns the ports to use, one per name (0 = a free one). Anything else names the option and
    the accepted names.
    """
    ports = dict(names)
    if text is None or text == "":
        return ports
    accepted = (f"'free', or NAME=PORT[,NAME=PORT...] with NAME one of {', '.join(names)} and PORT 1-65535 "
                f"(0 = any free port), e.g. {next(iter(names))}=28080")
    if text.strip() == "free":
        return dict.fromkeys(names, 0)
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in names or not value.strip().isdigit() or int(value) > 65535:
            raise ParameterError(option, text, accepted)
        ports[name] = int(value)
    return ports


class JupyterLab:
    """`jupyter lab` over `root_dir` with our hooks, on a known port, ready within a bound."""

    def __init__(self, root_dir: Path, output_root: Path, port: int, env: Mapping[str, str] | None = None) -> None:
        self.root_dir, self.output_root = root_dir.resolve(), output_root.resolve()
        self.port = port or free_port()
        self.token = secrets.token_hex(16)
        self.env = {**os.environ, **(env or {}), OUTPUTS_ENV: str(self.output_root)}  # the hooks' root
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}/lab/tree/{path}?token={self.token}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> JupyterLab:
        import importlib.util

        import httpx

        if importlib.util.find_spec("jupyterlab") is None:  # an extra: production images leave it out
            raise RunbookError("JupyterLab is not installed here: pip install 'mistral-runbooks[lab]' "
                               "(make install does), or run the runbooks headless with `runbook run`")

        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", HOST, "--port", str(self.port),
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root_dir}", f"--MultiKernelManager.default_kernel_name={KERNEL_NAME}",
               *HOOKS]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        # its own session: a terminal's Ctrl-C reaches us only (JupyterLab would ask "shut down? y/n")
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.root_dir, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunbookError(f"JupyterLab exited with code {self.proc.returncode} while starting "
                                   "(its messages are above)")
            try:
                status = httpx.get(f"http://{HOST}:{self.port}/api/status", params={"token": self.token}, timeout=2)
                if status.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RunbookError(f"JupyterLab was not ready within {timeout_s:g} s on port {self.port}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (JupyterLab shuts its kernels down), SIGKILL to its whole session if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=timeout_s)


def serve(opened: list[Opened], *, output_root: str | Path, port: int, env: Mapping[str, str] | None = None,
          stopping: threading.Event | None = None) -> int:
    """JupyterLab until it exits or SIGINT/SIGTERM; then the copies are sealed once more.

    `stopping`: the event of the caller's own `stop_signals()` (`runbook lab` holds it while it
    starts the stack too); without one, the handlers are installed here. Prints the URL of each
    copy. Returns 0, or 1 when JupyterLab failed by itself.
    """
    if stopping is None:
        with stop_signals() as own:
            return serve(opened, output_root=output_root, port=port, env=env, stopping=own)
    output_root = Path(output_root).resolve()
    check_port_free("JupyterLab", port)
    if stopping.is_set():
        return 0
    lab = JupyterLab(output_root, output_root, port, env).start()
    try:
        for item in opened:
            print(f"\nJupyterLab: {lab.url(item.path.resolve().relative_to(lab.root_dir).as_posix())}", flush=True)
        print("Work in this copy: saving it seals the record (run.json, HTML, incident index) in "
              f"{', '.join(sorted({str(o.folder) for o in opened}))}.\n"
              "Ctrl-C (or SIGTERM) stops JupyterLab and everything started with it.", flush=True)
        proc = lab.proc
        assert proc is not None
        threading.Thread(target=lambda: (proc.wait(), stopping.set()), daemon=True).start()
        stopping.wait()
        code = proc.poll()
    finally:
        lab.stop()
    for item in opened:  # the copies this command opened, as last saved (others were sealed when saved)
        record = seal(item.path, output_root)
        if record is not None:
            print(f"sealed: {record['notebook_path']} ({record['status']})", flush=True)
    return 1 if code not in (None, 0) else 0
