"""`python -m runbook_lib` is `runbook` (serve starts its respond runs this way)."""

from .cli import main

raise SystemExit(main())
