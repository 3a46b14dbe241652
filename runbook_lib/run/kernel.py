"""One run's kernel, started before papermill is loaded so its boot overlaps ours.

A kernel takes ~0.7 s to boot (IPython's import) and papermill's import and the notebook's
parameterisation take ~0.35 s; started by nbclient, the two happen one after the other. Here the
kernel process is launched first (launching returns at once; the boot goes on in the child) and
handed to papermill (`km=`: nbclient's documented way to run against an existing kernel). Since
nbclient then leaves the kernel and its client to their owner, `stop()` does what nbclient's own
cleanup would: the client's channels closed, the kernel stopped, its connection files removed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# nbclient starts its kernels with IPython's history in memory (no ~/.ipython/…/history.sqlite
# written outside the record); a kernel started here must be given the same.
HISTORY_IN_MEMORY = "--HistoryManager.hist_file=:memory:"


def notebook_kernel_name(source: Path, given: str | None) -> str:
    """The kernel papermill would pick: the one given, else the notebook's kernelspec (read as JSON)."""
    if given:
        return given
    meta = json.loads(source.read_text("utf-8")).get("metadata", {})
    return str((meta.get("kernelspec") or {}).get("name") or "python3")


def prompt_client_class() -> type:
    """An AsyncKernelClient whose `wait_for_ready` returns when the kernel has answered, not 0.2 s later.

    jupyter_client 8's `wait_for_ready` asks for kernel_info until the reply and one IOPub message
    have come (the channels are connected), then waits until IOPub has been silent for 0.2 s, a
    flush. nbclient calls it before every run: 0.2 s of nothing in every verdict. The flush protects
    a reader that takes any IOPub message as its own; nbclient does not (it reads only the messages
    whose parent is the request it sent), so here what is already queued is drained without waiting.
    """
    import asyncio
    import time
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient

    class PromptKernelClient(AsyncKernelClient):  # type: ignore[misc]
        async def wait_for_ready(self, timeout: float | None = None) -> None:
            deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
            while True:
                self.kernel_info()
                try:
                    msg = await self.shell_channel.get_msg(timeout=1)
                except Empty:
                    msg = None
                if msg is not None and msg["msg_type"] == "kernel_info_reply":
                    try:
                        await self.iopub_channel.get_msg(timeout=0.2)  # IOPub connected: its status came
                    except Empty:
                        pass
                    else:
                        self._handle_kernel_info_reply(msg)
                        break
                if not await self.is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")
                await asyncio.sleep(0)
            while True:  # what is queued now, without waiting for more
                try:
                    await self.iopub_channel.get_msg(timeout=0)
                except Empty:
                    break

    return PromptKernelClient


def tracking_clients(manager_class: type) -> type:
    """`manager_class` remembering the clients made from it, so their channels can be closed; its
    clients are `prompt_client_class()`'s."""
    prompt = prompt_client_class()

    class ClientTrackingKernelManager(manager_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.client_factory = prompt
            self.run_clients: list[Any] = []

        def client(self, **kwargs: Any) -> Any:
            kc = super().client(**kwargs)
            self.run_clients.append(kc)
            return kc

    return ClientTrackingKernelManager


class RunKernel:
    """A kernel for one run: `start()` it early, pass `km` to papermill, `stop()` it afterwards."""

    def __init__(self, manager_class: type, kernel_name: str, cwd: Path) -> None:
        self.km = tracking_clients(manager_class)(kernel_name=kernel_name)
        self.cwd = cwd

    def start(self, **launch: Any) -> None:
        """Launch the kernel process (jupyter_client's start returns once it is spawned). `launch`: more
        of jupyter_client's launch arguments (a standby gives stdout/stderr, run/standby.py)."""
        from jupyter_core.utils import run_sync

        run_sync(self.km.start_kernel)(cwd=str(self.cwd), extra_arguments=[HISTORY_IN_MEMORY], **launch)

    def stop(self) -> None:
        """Close the clients' channels, stop the kernel at once (every cell has ended), clean up."""
        from jupyter_core.utils import run_sync

        for kc in self.km.run_clients:
            kc.stop_channels()
        run_sync(self._kill_and_clean)()

    async def _kill_and_clean(self) -> None:
        # Not km.shutdown_kernel(now=True): it sends SIGINT first, and an idle kernel then prints
        # "KeyboardInterrupt caught in kernel" on the run's stderr. The provisioner's kill is
        # jupyter_client's public way to stop the process outright (SIGKILL), reaped by wait().
        import asyncio

        try:
            provisioner = self.km.provisioner
            if provisioner is not None and await provisioner.poll() is None:
                await provisioner.kill()
                # the provisioner's wait() polls every 0.1 s, and a killed process is rarely gone at its
                # first look: 0.1 s on every run's record. Gone within milliseconds, seen here first.
                for _ in range(200):
                    if await provisioner.poll() is not None:
                        break
                    await asyncio.sleep(0.005)
                await provisioner.wait()
        finally:
            await self.km.cleanup_resources()
