"""`python -m runbook_lib` is `runbook` (serve starts its respond runs this way)."""

import sys

from .cli import main

if sys.argv[1:2] == ["_standby"]:  # `serve --warm`'s pre-started responder (run/standby.py), given `main` for its job
    from .run.standby import main as standby

    raise SystemExit(standby(sys.argv[2:], respond=main))
raise SystemExit(main())
