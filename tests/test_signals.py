"""wait_for_stop_signal: a SIGTERM ends the wait whichever thread the kernel hands it to, and
`kill -USR1` dumps every thread's stack (how a serve that does not stop says where it is stuck)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

WAITER = """
import threading, time
from runbook_lib._signals import wait_for_stop_signal
def busy():
    while True:
        sum(range(1000))
for _ in range(3):
    threading.Thread(target=busy, daemon=True).start()
print("waiting", flush=True)
t0 = time.monotonic()
wait_for_stop_signal(60)
print(f"stopped {time.monotonic() - t0:.1f}", flush=True)
"""


def test_sigterm_ends_the_wait_and_usr1_dumps_the_stacks():
    proc = subprocess.Popen([sys.executable, "-c", WAITER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    assert proc.poll() is None  # a stack dump does not end it
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.startswith("stopped ") and float(out.split()[1]) < 30  # the signal, not the 60 s bound
    assert "in wait_for_stop_signal" in err and "in busy" in err  # every thread's stack
