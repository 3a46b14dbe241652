"""Evidence bundles: a folder plus a `.tar.gz`, with a manifest, written atomically.

Files are written under a temporary name and the folder and archive are renamed into place only
when complete, so a crash never leaves a half bundle that looks whole. Everything added is redacted
on the way in (`redact`), and a source that could not be read is listed as missing with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from .._time import iso_z
from .. import redact

MANIFEST = "manifest.json"


class BundleWriter:
    """`with BundleWriter(parent, name, secrets=[key]) as b: b.add_text(...); ...` -> folder + name.tar.gz."""

    def __init__(self, parent: str | Path, name: str, *, secrets: list[str] | None = None,
                 window: dict[str, str] | None = None) -> None:
        if not name or "/" in name or name.startswith(".") or ".." in name:
            raise ValueError(f"bundle name {name!r} must be a plain folder name")
        self.parent = Path(parent)
        self.name = name
        self.secrets = [s for s in (secrets or []) if s]
        self.window = window or {}
        self.files: list[dict[str, Any]] = []
        self.missing: list[dict[str, Any]] = []
        self._tmp: Path | None = None
        self._lock = threading.Lock()  # sources are collected concurrently

    @property
    def folder(self) -> Path:
        return self.parent / self.name

    @property
    def archive(self) -> Path:
        return self.parent / f"{self.name}.tar.gz"

    def __enter__(self) -> BundleWriter:
        self.parent.mkdir(parents=True, exist_ok=True)
        if self.folder.exists() or self.archive.exists():
            raise FileExistsError(f"bundle {self.folder} already exists: bundles are never overwritten")
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}.partial-", dir=self.parent))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self._finish()
        elif self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _path(self, relpath: str) -> Path:
        rel = PurePosixPath(relpath)
        if rel.is_absolute() or ".." in rel.parts or rel.name == MANIFEST:
            raise ValueError(f"bundle path {relpath!r} must be relative, inside the bundle, not {MANIFEST}")
        assert self._tmp is not None, "use BundleWriter as a context manager"
        path = self._tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_text(self, relpath: str, text: str, *, what: str, source: str) -> None:
        """Redacted text (logs, events, commands)."""
        self._write(relpath, redact.redact_text(text, self.secrets).encode("utf-8"), what, source)

    def add_json(self, relpath: str, value: Any, *, what: str, source: str) -> None:
        """A redacted JSON value (Kubernetes objects, metric exports, recorded results)."""
        data = json.dumps(redact.redact_object(value, self.secrets), indent=2, sort_keys=True, default=str)
        self._write(relpath, (data + "\n").encode("utf-8"), what, source)

    def add_missing(self, what: str, source: str, reason: str) -> None:
        """A source that could not be collected: listed, so its absence is never silent."""
        entry = {"what": what, "source": source, "reason": redact.redact_text(reason, self.secrets)}
        with self._lock:
            self.missing.append(entry)

    def _write(self, relpath: str, data: bytes, what: str, source: str) -> None:
        path = self._path(relpath)
        path.write_bytes(data)
        with self._lock:
            self.files.append({"path": relpath, "what": what, "source": source, "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()})

    def manifest(self) -> dict[str, Any]:
        files = sorted(self.files, key=lambda f: f["path"])
        missing = sorted(self.missing, key=lambda m: m["what"])
        return {"bundle": self.name, "created_at": iso_z(),
                "window": self.window, "files": files, "missing": missing,
                "redaction": "secret values replaced by [REDACTED sha256:<12 hex>] (runbook_lib.redact)"}

    def _finish(self) -> None:
        assert self._tmp is not None
        (self._tmp / MANIFEST).write_text(json.dumps(self.manifest(), indent=2) + "\n", "utf-8")
        tmp_archive = self.parent / f".{self.name}.tar.gz.partial"
        with tarfile.open(tmp_archive, "w:gz") as tar:
            tar.add(self._tmp, arcname=self.name)
        os.replace(self._tmp, self.folder)        # the folder appears whole, or not at all
        os.replace(tmp_archive, self.archive)     # likewise the archive
        self._tmp = None


def verify(folder: str | Path) -> list[str]:
    """Problems found re-hashing a bundle against its manifest (empty when intact).

    A file changed, removed, or added after the bundle was written is a problem: the manifest is
    the bundle's claim of what it holds.
    """
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text("utf-8"))
    problems = []
    listed = {entry["path"] for entry in manifest["files"]}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST and rel not in listed:
            problems.append(f"{rel}: not in the manifest")
    for entry in manifest["files"]:
        rel = PurePosixPath(str(entry["path"]))
        if rel.is_absolute() or ".." in rel.parts:  # a forged manifest must not make us read elsewhere
            problems.append(f"{entry['path']}: path outside the bundle")
            continue
        path = folder / rel
        if not path.exists():
            problems.append(f"{entry['path']}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest")
    return problems
