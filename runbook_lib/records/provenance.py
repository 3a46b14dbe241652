"""What produced a record: package version, git commit, the source notebook's hash, host, parameter names.

A verdict read months later is only as good as knowing which code and which runbook reached it;
the thresholds and rules change. Recorded in every `run.json` and in the incident index. Parameter
*names* only: values are in the record itself, and a name never carries a secret.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from .._time import iso_z


@functools.lru_cache(maxsize=1)
def code() -> dict[str, Any]:
    """The package version and, when it runs from a git checkout, the commit and whether it was modified."""
    from .. import __version__

    out: dict[str, Any] = {"package": "mistral-runbooks", "version": __version__, "git_commit": None,
                           "git_dirty": None, "python": platform.python_version()}
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return out
    try:  # bounded: a broken git must not delay a verdict
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=2)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return out
    if head.returncode == 0:
        out["git_commit"] = head.stdout.strip() or None
        out["git_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    return out


def sha256_of(path: str | Path) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def of_run(source: str | Path | None, parameters: dict[str, Any]) -> dict[str, Any]:
    """Provenance of one notebook run (for its run.json)."""
    return {**code(), "notebook_source": Path(source).name if source else None,
            "notebook_sha256": sha256_of(source) if source else None, "host": socket.gethostname(),
            "parameter_names": sorted(str(k) for k in parameters), "recorded_at": iso_z()}
