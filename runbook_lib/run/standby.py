"""A pre-started responder for `runbook serve --warm N`: imports done, a fresh kernel up, one job.

A cold `respond` pays ~1.3 CPU-seconds before its first cell (a Python process, papermill's and
nbconvert's imports, the kernel's boot); ten alerts at once on two cores queue behind that. A
standby pays it before the alert: serve starts `python -m runbook_lib _standby` (runbook_lib/__main__.py
hands the CLI's `main` to `main` here, so run/ never imports the CLI), which starts a
kernel (never used, in a scratch folder), does the imports, and says `ready <kernel pid>` on its
stdin, a Unix SEQPACKET socket from serve. It then waits for one job: the `respond` arguments serve
would have started a process with, plus two descriptors passed with them (SCM_RIGHTS): the
incident's run lock (held from then on until this process ends, as a cold respond holds it, see
serve/owned.py) and the incident's `respond.log` (made this process's stdout and stderr). It runs
exactly what `runbook respond` runs (the CLI's `main`) and exits with its code; serve starts another.

The triage's kernel is the prepared one (run/prepared.py): `run_notebook` claims it, moves it into
the record folder and gives it the run's environment, then arms its watchdog with the run's bound.
If that kernel died meanwhile, the run starts a cold one instead, as `runbook run` always does. Nothing
else carries from one run to the next: each standby serves one incident and exits.

Bounded waits: the kernel must answer within `prepared.READY_TIMEOUT_S`; a job is awaited at most
`--max-idle` seconds; EOF (serve stopped or died) ends the wait at once; a kernel that dies while
waiting ends the standby (exit 3) and serve replaces it. The standby's environment is serve's
without its token (as a cold respond's), and its command line holds no parameter.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .prepared import PreparedKernel, offer

DEFAULT_MAX_IDLE_S = 3600.0
JOB_MAX_BYTES = 1 << 20
DIED = 3  # exit code: the prepared kernel died before a job came

def _relay(read_fd: int) -> None:
    """The prepared kernel's output to this process's fd 1: the standby log, then the incident's respond.log."""
    while True:
        try:
            data = os.read(read_fd, 65536)
        except OSError:
            return
        if not data:
            return
        try:
            os.write(1, data)
        except OSError:
            pass


def _say(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} standby pid {os.getpid()}: {message}\n")
    sys.stderr.flush()


def _wait_for_job(sock: socket.socket, prepared: PreparedKernel, max_idle_s: float) -> tuple[dict[str, Any], list[int]] | None:
    """One job and its descriptors; None on EOF, after `max_idle_s`, or when the kernel died (said why)."""
    deadline = time.monotonic() + max_idle_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 1.0)
        if not readable:
            if not prepared.alive():
                _say(f"its kernel (pid {prepared.pid}) died while waiting; exiting to be replaced")
                raise SystemExit(DIED)
            continue
        msg, fds, _flags, _addr = socket.recv_fds(sock, JOB_MAX_BYTES, 4)
        if not msg:
            return None  # serve closed its end (stopped or died)
        return json.loads(msg.decode("utf-8")), list(fds)
    _say(f"no job within {max_idle_s:g} s; exiting to be replaced")
    return None


def main(argv: list[str], respond: Callable[[list[str]], int]) -> int:
    """The standby process (see the module docstring); its stdin is serve's socket. `respond(argv)`
    runs a `runbook` command line (the CLI's main) with the job's arguments."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m runbook_lib _standby")
    ap.add_argument("--max-idle", type=float, default=DEFAULT_MAX_IDLE_S)
    ap.add_argument("--notebook", default="triage", help="the first notebook respond runs (its kernel is prepared)")
    ap.add_argument("--serve", default="", help="serve's output folder (names serve's standbys in `ps`)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    sock = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # respond reads nothing; a cold one has /dev/null as stdin
    os.close(devnull)

    from .catalog import resolve_notebook
    from .kernel import notebook_kernel_name

    prepared = PreparedKernel(notebook_kernel_name(resolve_notebook(args.notebook), None))
    read_fd, write_fd = os.pipe()
    try:
        prepared.start(output_fd=write_fd)  # boots while this process imports
        os.close(write_fd)
        threading.Thread(target=_relay, args=(read_fd,), name="kernel-output", daemon=True).start()
        # What a cold respond imports before its first cell (run/_lean.py: without the iri checkers)
        from . import _lean, engine, execute  # noqa: F401
        from . import respond as _respond  # noqa: F401

        _lean.papermill()
        _lean.nbformat()
        prepared.html = execute.HtmlWarmup()  # nbconvert and its templates, used by the triage's HTML
        prepared.wait_ready()
        prepared.preload(args.notebook)  # the runbook's own imports (prepared.PRELOAD)
        prepared.html.exporter()  # built before ready: no CPU left for the job's time
        _say(f"kernel pid {prepared.pid} ready in {time.monotonic() - t0:.1f} s")
        sock.send(f"ready {prepared.pid}".encode())
        job = _wait_for_job(sock, prepared, args.max_idle)
        if job is None:
            return 0
        spec, fds = job
        lock_fd, log_fd = fds[0], fds[1]
        os.set_inheritable(lock_fd, False)  # held by this process alone (kernels are started without it)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        for extra in fds[2:]:
            os.close(extra)
        offer(prepared)
        return int(respond([str(a) for a in spec["argv"]]) or 0)
    finally:
        if not prepared.used:
            prepared.discard()
        sys.stdout.flush()
        sys.stderr.flush()
