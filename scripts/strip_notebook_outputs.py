#!/usr/bin/env python3
"""Git clean filter: a runbook notebook is committed without outputs, execution counts or run metadata.

Tracked notebooks are the runbooks, never records: outputs hold what a run saw (key fingerprints,
correlation ids, cluster commands) and belong in the incident folder. Set up once per clone (the
README's "Tracked notebooks never hold outputs"):

    git config filter.strip-notebook-outputs.clean "python3 scripts/strip_notebook_outputs.py"
    git config filter.strip-notebook-outputs.smudge cat

`.gitattributes` applies it to notebooks/*.ipynb. Reads a notebook on stdin, writes it stripped on
stdout, in the layout nbformat writes (so a clean notebook passes through byte for byte); input
that is not a notebook (a merge conflict) passes through unchanged. Standard library only.
With file arguments it rewrites those files in place instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RUN_CELL_METADATA = ("execution", "papermill", "scrolled", "collapsed")  # written by running, not by authors
RUN_NOTEBOOK_METADATA = ("papermill", "runbook", "widgets")


def strip(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook without anything a run adds."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        meta = cell.get("metadata")
        if isinstance(meta, dict):
            for key in RUN_CELL_METADATA:
                meta.pop(key, None)
    meta = nb.get("metadata")
    if isinstance(meta, dict):
        for key in RUN_NOTEBOOK_METADATA:
            meta.pop(key, None)
        info = meta.get("language_info")
        if isinstance(info, dict) and "name" in info:  # a kernel adds its version, mimetype, ...
            meta["language_info"] = {"name": info["name"]}
    return nb


def clean_text(text: str) -> str:
    try:
        nb = json.loads(text)
    except ValueError:
        return text
    if not isinstance(nb, dict) or "cells" not in nb:
        return text
    return json.dumps(strip(nb), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        sys.stdout.write(clean_text(sys.stdin.read()))
        return 0
    for name in argv:
        path = Path(name)
        text = path.read_text("utf-8")
        cleaned = clean_text(text)
        if cleaned != text:
            path.write_text(cleaned, "utf-8")
            print(f"stripped outputs from {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
