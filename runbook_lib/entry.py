"""How the `runbook` process ends: for the commands on the verdict path, without the interpreter's teardown.

After `run` or `respond` has written its whole record (notebook, HTML, run.json, index) and printed
its verdict, CPython still tears down ~1,000 modules (papermill, nbconvert, jupyter_client, zmq,
pandas): ~0.25 CPU-seconds, measured on every run, that a person waiting for the prompt and the
other incidents of a burst sharing two cores pay for nothing. Here, once every atexit callback has
run (ours is registered first, so it runs last) and stdout/stderr are flushed, the process ends
with `os._exit` and the same exit code. Threads were joined before atexit ran; every file of the
record is written and closed by then (write_text, context managers).

Other commands keep the normal ending: they may hold resources that only their finalizers release.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable

FAST_EXIT = ("run", "respond", "_standby")  # `_standby`: serve's pre-started responder (run/standby.py)


def run(main: Callable[[], int]) -> None:
    """`sys.exit(main())`, ending without the teardown for the FAST_EXIT commands."""
    if sys.argv[1:2] and sys.argv[1] in FAST_EXIT:
        code = [1]

        def exit_now() -> None:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code[0])

        atexit.register(exit_now)
        try:
            code[0] = int(main() or 0)
        except SystemExit as exc:  # argparse's usage errors, an explicit exit
            code[0] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            raise
        except KeyboardInterrupt:
            code[0] = 130
            raise
        sys.exit(code[0])
    sys.exit(main())


def console() -> None:
    """The `runbook` console script (pyproject.toml); the CLI is imported inside `run`, after its
    atexit callback is registered (so that callback runs after every library's)."""

    def main() -> int:
        from .cli import main as cli_main

        return cli_main()

    run(main)
