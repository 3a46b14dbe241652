"""`runbook verify`: an evidence bundle (folder or `.tar.gz`, or an incident's) re-hashed against its manifest.

An archive is extracted into a temporary folder only after every member is checked: no absolute
path, no `..`, no links or special files, so a tampered archive cannot write outside that folder.
A tampered manifest cannot make us read (hash) files outside the bundle either.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ParameterError
from ._values import as_dict, as_text
from .archive import find, is_record, load, local_path


@dataclass
class Verification:
    """One bundle (folder or archive) re-hashed against its manifest (and its seal, when recorded)."""

    target: str
    files: int
    problems: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _verify_folder(folder: Path, label: str) -> Verification:
    from . import bundle

    try:
        manifest = json.loads((folder / bundle.MANIFEST).read_text("utf-8"))
        listed = [PurePosixPath(e["path"]) for e in manifest["files"]]
    except FileNotFoundError:
        return Verification(label, 0, [f"{bundle.MANIFEST}: missing"])
    except (ValueError, KeyError, TypeError) as exc:
        return Verification(label, 0, [f"{bundle.MANIFEST}: unreadable ({type(exc).__name__}: {exc})"])
    outside = [f"{p}: listed path leaves the bundle" for p in listed if p.is_absolute() or ".." in p.parts]
    if outside:  # a tampered manifest must not make us read (hash) files elsewhere
        return Verification(label, len(listed), outside)
    try:
        return Verification(label, len(listed), bundle.verify(folder))  # changed, missing and added files
    except (ValueError, KeyError, TypeError) as exc:
        return Verification(label, len(listed), [f"{bundle.MANIFEST}: unreadable ({type(exc).__name__}: {exc})"])


def _unsafe_member(member: tarfile.TarInfo) -> str | None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return f"{member.name}: path outside the archive's folder"
    if not (member.isfile() or member.isdir()):
        return f"{member.name}: a link or special file (bundles hold regular files only)"
    return None


def _verify_archive(archive: Path) -> Verification:
    """Extract into a temporary folder (rejecting unsafe members) and verify what came out."""
    try:
        with tarfile.open(archive, "r:gz") as tar, tempfile.TemporaryDirectory(prefix="runbook-verify-") as tmp:
            members = tar.getmembers()
            unsafe = [p for m in members if (p := _unsafe_member(m))]
            if unsafe:
                return Verification(str(archive), 0, unsafe)
            tar.extractall(tmp, filter="data")
            tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(tops) != 1 or [p for p in Path(tmp).iterdir() if not p.is_dir()]:
                return Verification(str(archive), 0, ["expected exactly one bundle folder at the archive's top"])
            result = _verify_folder(tops[0], str(archive))
            result.problems = [f"{tops[0].name}/{p}" for p in result.problems]
            return result
    except (tarfile.TarError, OSError, EOFError) as exc:
        return Verification(str(archive), 0, [f"not a readable .tar.gz ({type(exc).__name__}: {exc})"])


def verify_bundle(path: str | Path) -> Verification:
    """An evidence bundle folder or its `.tar.gz`, re-hashed against manifest.json."""
    path = Path(path)
    return _verify_archive(path) if path.is_file() else _verify_folder(path, str(path))


def _evidence_paths(folder: Path, index: dict[str, Any]) -> list[Path]:
    ev = as_dict(index.get("evidence"))
    out = []
    for key in ("bundle", "archive"):
        recorded = as_text(ev.get(key))
        if recorded:
            local, exists = local_path(recorded, folder)
            out.append(Path(local) if exists else Path(recorded))
    return out


def verify(root: str | Path, ref: str | Path, public_key: Any | None = None) -> list[Verification]:
    """What `runbook verify REF` checks: a bundle folder, its .tar.gz, or an incident's evidence (both).

    Each bundle is also checked against the seal recorded outside it at collection (the manifest's
    digest in incident.json; the signature with `public_key`, see records/signing.py).
    """
    path = Path(ref)
    if path.is_file() or (path.is_dir() and (path / "manifest.json").is_file()):
        result = verify_bundle(path)
        _check_seal(result, path, _recorded_seal(path), public_key)
        return [result]
    if path.is_dir() and not is_record(path):
        raise ParameterError("bundle", str(ref), "an evidence bundle folder (with manifest.json), its .tar.gz, "
                                                 "or an incident folder; this folder is none of these")
    try:
        folder = find(root, ref)
    except ParameterError:
        raise ParameterError("bundle", str(ref), "an evidence bundle folder, its .tar.gz, or an incident (id, "
                                                 f"folder name or path under {root}) with collected evidence; "
                                                 "no such file or incident") from None
    targets = _evidence_paths(folder, load(folder))
    if not targets:
        raise ParameterError("bundle", str(ref), f"an incident with collected evidence; {folder.name} has none "
                                                 "in its index (run the evidence runbook first)")
    results = [verify_bundle(t) if t.exists() else Verification(str(t), 0, ["missing"]) for t in targets]
    seal = as_dict(as_dict(load(folder).get("evidence")).get("seal"))
    for target, result in zip(targets, results, strict=True):
        if target.exists():
            _check_seal(result, target, seal, public_key)
    if len(targets) == 2 and all(t.exists() for t in targets) and not _same_manifest(*targets):
        results[1].problems.append(f"manifest.json differs from {targets[0]}/manifest.json "
                                   "(one of the two was rewritten after collection)")
    return results


def _same_manifest(folder: Path, archive: Path) -> bool:
    """Folder and archive are written from one manifest; different bytes mean one was rewritten."""
    inside, outside = _manifest_bytes(archive), _manifest_bytes(folder)
    return inside is not None and inside == outside


def _manifest_bytes(bundle: Path) -> bytes | None:
    """manifest.json's bytes from a bundle folder or its archive (None when unreadable)."""
    try:
        if bundle.is_dir():
            return (bundle / "manifest.json").read_bytes()
        with tarfile.open(bundle, "r:gz") as tar:
            member = next(m for m in tar.getmembers() if m.isfile() and len(PurePosixPath(m.name).parts) == 2
                          and PurePosixPath(m.name).name == "manifest.json")
            return tar.extractfile(member).read()  # type: ignore[union-attr]
    except (StopIteration, tarfile.TarError, OSError, EOFError):
        return None


def _recorded_seal(bundle: Path) -> dict[str, Any]:
    """The seal incident.json beside a bundle recorded for it ({} when none names this bundle)."""
    name = bundle.name.removesuffix(".tar.gz")
    try:
        index = json.loads((bundle.parent / "incident.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    evidence = as_dict(as_dict(index).get("evidence"))
    recorded = as_text(evidence.get("bundle"))
    return as_dict(evidence.get("seal")) if recorded and Path(recorded).name == name else {}


def _check_seal(result: Verification, bundle: Path, seal: dict[str, Any], public_key: Any | None) -> None:
    """Add the seal's problems and notes to `result` (the digest, then the signature)."""
    from . import signing

    if not seal and public_key is None:
        return
    data = _manifest_bytes(bundle)
    if data is None:
        return  # the bundle check already says the manifest is missing or unreadable
    problems, notes = signing.check(data, seal, public_key)
    result.problems += problems
    result.notes += notes
