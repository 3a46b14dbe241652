"""`python -m runbook_lib` is `runbook` (serve starts its respond runs this way)."""

import sys

from .entry import run


def _main() -> int:
    from .cli import main

    if sys.argv[1:2] == ["_standby"]:  # `serve --warm`'s pre-started responder (run/standby.py), given `main` for its job
        from .run.standby import main as standby

        return standby(sys.argv[2:], respond=main)
    return main()


run(_main)  # imports inside: the fast exit's atexit callback is registered before any library's
