"""JupyterLab + headless Chromium for the browser tests: isolated, bounded, always cleaned up.

Why a helper module: starting JupyterLab so that nothing leaks into the repo or `~` (settings,
workspaces, runtime files, checkpoints, `.virtual_documents`, IPython history, a `~/.kube/config`
read by step 4) takes more set-up than the test itself, and every process it starts (the server
and the kernels it spawns) must be gone when the test ends, however it ends.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/ensure-test-servers.sh); never a download
# From the toolchain notes. `--user-data-dir` is left out: Playwright refuses it in launch() and
# gives every launch its own throw-away profile; `--headless`/`--no-sandbox` it adds itself.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KERNEL_NAME = "mistral-runbooks"
KERNEL_DISPLAY = "Python (mistral-runbooks)"
# The "Would you like to get notified about official Jupyter news?" toast covers the notebook.
DISABLED_PLUGINS = ["@jupyterlab/apputils-extension:announcements"]


def require_chromium() -> str:
    """Debian's Chromium, or fail under CI (the test command installs it) / skip on a dev machine."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is not installed: the test command must install it (scripts/ensure-test-servers.sh)")
    pytest.skip(f"{CHROMIUM} not installed (make test installs it)")
    raise AssertionError("unreachable")  # pragma: no cover - pytest.skip raises


def isolated_jupyter_env(home: Path) -> dict[str, str]:
    """This process's environment with HOME and every Jupyter/IPython directory under `home`.

    The kernel inherits it (and so MISTRAL_API_KEY). The page config there disables the
    announcements plugin. Kernelspecs are still found in the venv (`sys.prefix`/share/jupyter).
    """
    dirs = {"HOME": home, "JUPYTER_CONFIG_DIR": home / "jupyter-config", "JUPYTER_DATA_DIR": home / "jupyter-data",
            "JUPYTER_RUNTIME_DIR": home / "jupyter-runtime", "JUPYTERLAB_SETTINGS_DIR": home / "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": home / "lab-workspaces", "IPYTHONDIR": home / "ipython",
            "MPLCONFIGDIR": home / "matplotlib"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    labconfig = dirs["JUPYTER_CONFIG_DIR"] / "labconfig"
    labconfig.mkdir(exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": dict.fromkeys(DISABLED_PLUGINS, True)}), "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.pop("KUBECONFIG", None)  # step 4 reads only the kubeconfig the test passes
    env.update({k: str(v) for k, v in dirs.items()})
    return env


@contextmanager
def chromium_page(base_url: str, viewport: tuple[int, int] = (1280, 900)) -> Iterator[tuple[Any, list[str]]]:
    """(Playwright page in Debian's Chromium, offsite): requests off `base_url` are aborted and listed.

    The test then needs no network, and a page that reaches out (news, CDN assets) shows up.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            offsite: list[str] = []

            def block(route: Any) -> None:
                offsite.append(route.request.url)
                route.abort()

            page.route(lambda url: not url.startswith(base_url), block)
            yield page, offsite
        finally:
            browser.close()


class RunbookCommand:
    """A `runbook ...` command (open, lab) run as a real process, its output read line by line.

    `wait_for(pattern)` returns the first output line matching it (bounded); `children()` lists
    every process it started (JupyterLab, its kernels, Prometheus); `stop()` sends SIGTERM, waits,
    and then kills whatever it started that is still alive, so a failing test leaves nothing behind.
    """

    def __init__(self, args: list[str], env: Mapping[str, str], cwd: Path) -> None:
        import queue
        import threading

        self.args = args
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen([sys.executable, "-m", "runbook_lib", *args], env=dict(env), cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self._seen: dict[int, Any] = {}

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        import queue

        regex = re.compile(pattern)
        for line in list(self.lines):
            if m := regex.search(line):
                return m
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"`runbook {' '.join(self.args)}` exited ({self.proc.wait()}) before "
                                     f"printing /{pattern}/:\n{self.output()}")
            if m := regex.search(line):
                return m
        raise AssertionError(f"`runbook {' '.join(self.args)}` printed no /{pattern}/ within {timeout_s:g} s:\n"
                             f"{self.output()}")

    def children(self) -> list[Any]:
        """Every live descendant now (also remembered, for the final sweep)."""
        import psutil

        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        for p in found:
            self._seen.setdefault(p.pid, p)
        return found

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait for the command itself to end: its exit code."""
        self.children()
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        import psutil

        self.children()
        try:
            self.terminate(timeout_s=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        alive = [p for p in self._seen.values() if p.is_running()]
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)

    def __enter__(self) -> RunbookCommand:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
