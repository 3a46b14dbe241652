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
import secrets
import shutil
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


def set_parameter_defaults(notebook: Path, values: Mapping[str, str]) -> None:
    """Rewrite string defaults in the `parameters` cell of `notebook` (a copy), nothing else.

    Each `name = "..."` assignment must exist exactly once; the value is written as a JSON string
    literal, which is also a valid Python one.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook.name}: expected one cell tagged 'parameters', found {len(cells)}"
    source = cells[0].source
    for name, value in values.items():
        pattern = re.compile(rf'^({re.escape(name)}\s*=\s*)"[^"\n]*"', re.MULTILINE)
        source, count = pattern.subn(lambda m: m.group(1) + json.dumps(value), source)
        assert count == 1, f"{notebook.name}: string default for {name!r} found {count} times in the parameters cell"
    cells[0].source = source
    nbformat.write(nb, notebook)


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


class JupyterLab:
    """`jupyter lab` on 127.0.0.1, a free port (port 0: read back from the runtime file) and a token."""

    def __init__(self, root_dir: Path, home: Path, *, kernel: str = KERNEL_NAME) -> None:
        self.root_dir, self.home, self.kernel = root_dir, home, kernel
        self.token = secrets.token_hex(16)
        self.log_path = home / "jupyterlab.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._spawned: list[Any] = []  # psutil.Process: the server's children (kernels), for the sweep

    def start(self, timeout_s: float = 30.0) -> JupyterLab:
        env = isolated_jupyter_env(self.home)
        runtime = Path(env["JUPYTER_RUNTIME_DIR"])
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", "--port", "0",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root_dir}", f"--MultiKernelManager.default_kernel_name={self.kernel}",
               # if this process dies without stop(): idle kernels are culled, then the server exits
               "--MappingKernelManager.cull_idle_timeout=600", "--ServerApp.shutdown_no_activity_timeout=600"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, cwd=self.root_dir, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        info_file = runtime / f"jpserver-{self.proc.pid}.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            if info_file.exists():
                try:
                    info = json.loads(info_file.read_text("utf-8"))
                except ValueError:  # being written
                    info = None
                if info and self._ready(info["url"]):
                    self.url = info["url"].rstrip("/")
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"jupyter lab not ready within {timeout_s:g} s:\n{self.log_tail()}")

    def _ready(self, url: str) -> bool:
        import httpx

        try:
            answer = httpx.get(f"{url.rstrip('/')}/api/status", params={"token": self.token}, timeout=2)
            return answer.status_code == 200
        except httpx.HTTPError:
            return False

    def lab_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def remember_children(self) -> None:
        """Note the server's child processes (kernels) now, so stop() can end them if they outlive it."""
        import psutil

        if self.proc is not None and self.proc.poll() is None:
            try:
                self._spawned += psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                pass

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the server shuts its kernels down), then SIGKILL; then any child still alive."""
        import psutil

        if self.proc is None:
            return
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        alive = [p for p in self._spawned if p.is_running()]
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=timeout_s)

    def __enter__(self) -> JupyterLab:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


def copy_notebooks(src: Path, dst: Path) -> Path:
    """The shipped notebooks copied to `dst` (JupyterLab writes checkpoints and more beside them)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints", ".virtual_documents"))
    return dst
