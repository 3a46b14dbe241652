"""The bounds a headless run puts on its kernel, and how long a bounded wait may take inside them.

papermill kills a cell at `--cell-timeout` and the watchdog kills the kernel at `--run-timeout`;
either way the run ends `timed_out` with no verdict. A runbook's own long wait (the 5xx recovery
monitor) must therefore end, with its verdict recorded, before both: `runbook run`/`respond`
refuse an explicit wait that cannot fit (naming it), and hand the kernel the cell bound and the
run's deadline so a default wait is shortened to fit and says so.
"""

from __future__ import annotations

import math
import os
import time

CELL_TIMEOUT_ENV = "RUNBOOK_CELL_TIMEOUT_S"  # papermill's per-cell bound for this run, seconds
RUN_DEADLINE_ENV = "RUNBOOK_RUN_DEADLINE"    # epoch seconds at which the watchdog kills the kernel
# After a wait's bound: its last probe may take `timeout_s`, then the record, the plot and the
# cells that follow (summary) need a few seconds.
WAIT_MARGIN_S = 10.0
DEFAULT_PROBE_TIMEOUT_S = 5.0  # the notebooks' `timeout_s` default


def wait_room(cell_timeout_s: float, timeout_s: float | None = None) -> float:
    """The longest wait that still ends in a verdict inside one cell of `cell_timeout_s` seconds."""
    return math.floor(cell_timeout_s - (timeout_s or DEFAULT_PROBE_TIMEOUT_S) - WAIT_MARGIN_S)


def from_kernel(environ: dict[str, str] | None = None) -> tuple[float | None, float | None]:
    """(cell bound s, run deadline epoch s) set by `runbook run`/`respond`; None when not run by them."""
    env = os.environ if environ is None else environ

    def number(name: str) -> float | None:
        try:
            value = float(env.get(name, ""))
        except ValueError:
            return None
        return value if math.isfinite(value) and value > 0 else None

    return number(CELL_TIMEOUT_ENV), number(RUN_DEADLINE_ENV)


def run_room(deadline: float | None, timeout_s: float, now: float | None = None) -> float | None:
    """Seconds a wait starting now may take and still end before the run's deadline; None: no deadline."""
    if deadline is None:
        return None
    return math.floor(deadline - (time.time() if now is None else now) - timeout_s - WAIT_MARGIN_S)
