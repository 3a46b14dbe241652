"""What every secret store shares: the change record, the store interface, and the rotation flow.

`rotate_key` is the Kubernetes rotation's flow (kube.rotation) for a secret manager: test the new key,
read the current version (fingerprint only), check the credentials may write (the dry run), write
only when approved and the new key works, read back, record before/after and the undo. The record
(`StoreChange`) has the fields `runbooks.steps.show_change` and the incident index read from a
Kubernetes `Change` (action, target, diff, undo, applied, verified, who, at, finding), so `runbook
show` lists an applied rotation with its undo like any other change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .. import params
from .._time import iso_z
from ..errors import ParameterError
from ..redact import scrub
from ..secrets import SecretRef, read_secret

# finding statuses
UNREACHABLE, FORBIDDEN, NOT_FOUND, CONFLICT, UNAUTHENTICATED = (
    "unreachable", "forbidden", "not_found", "conflict", "unauthenticated")
NOT_DONE = "not_done"  # written, but the store does not hold it when read back
KEY_REJECTED = "new_key_rejected"  # the new key failed its test: not written
KEY_UNTESTED = "new_key_untested"  # the test gave no clear answer: not written

KeyTest = Callable[[SecretRef], tuple[bool | None, str]]  # (works: True/False/None = unknown, what was seen)


class StoreError(Exception):
    """A store call failed: `status` (one of the finding statuses) and a message without secrets."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = scrub(message)[:500]


@dataclass
class Finding:
    status: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Version:
    """A version of the secret as recorded: its id and the key's fingerprint and length, never the key."""

    version: str | None
    fingerprint: str | None
    length: int = 0

    def describe(self) -> str:
        if self.version is None:
            return "no version"
        held = f"{self.fingerprint}, {self.length} chars" if self.fingerprint else "the key field is absent"
        return f"version {self.version}: {held}"


class SecretStore(Protocol):
    """One provider. Implementations raise StoreError (never with a key in the message)."""

    provider: str
    target: str  # what is changed, e.g. "vault secret/mistral/prod[api-key] at https://vault:8200"

    def identity(self) -> tuple[str, str]:
        """(who the store says the credentials are, how it was asked), or ("", why not)."""

    def current(self) -> Version:
        """The version a reader gets now (latest), with the key's fingerprint."""

    def can_write(self) -> tuple[bool, str]:
        """Whether the credentials may write a new version (the store's permission check), and the evidence."""

    def write(self, new_value: str, before: Version) -> str:
        """Write `new_value` as a new version (refusing if `before` is no longer current); its version id."""

    def command(self, env_var: str, before: Version) -> str:
        """The equivalent CLI command, reading the key from `$env_var` on stdin (never in argv)."""

    def undo(self, before: Version, new_version: str) -> str:
        """The command that makes `before`'s key current again."""


@dataclass
class StoreChange:
    """One rotation in a secret store, dry run or applied (fields shared with kube's Change)."""

    action: str
    target: str
    command: str = ""
    undo: str = ""
    diff: list[dict[str, Any]] = field(default_factory=list)
    applied: bool = False
    dry_run_ok: bool = False
    verified: bool | None = None
    at: str = ""
    who: str = ""
    identity: str = ""
    identity_source: str = ""
    incident: str = ""
    provider: str = ""
    version_before: str | None = None
    version_after: str | None = None
    new_key_test: dict[str, Any] = field(default_factory=dict)
    finding: Finding | None = None
    note: str = ""
    elapsed_s: float = 0.0
    change_cause: str = ""  # Kubernetes-only; kept so the record reads like kube's Change

    @property
    def kubectl(self) -> str:  # runbooks.steps.show_change prints `change.kubectl` as "the command"
        return self.command

    @property
    def ok(self) -> bool:
        return self.finding is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["finding"] = self.finding.to_dict() if self.finding else None
        d["ok"] = self.ok
        d["kubectl"] = self.command
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


def mistral_key_test(mistral_url: str, timeout_s: float = 5.0, ca_bundle: str = "") -> KeyTest:
    """A KeyTest: one bounded `GET /v1/models` with the key (200 works, 401/403 rejected, else unknown)."""
    from .._async import run_sync
    from ..sources import probes

    url = params.url("mistral_url", mistral_url).rstrip("/")
    timeout_s = params.timeout("timeout_s", timeout_s)

    def test(key: SecretRef) -> tuple[bool | None, str]:
        async def once() -> Any:
            async with probes.client(timeout_s, tls=url.startswith("https:"), ca_bundle=ca_bundle) as c:
                return await probes.probe_mistral(c, url, key, timeout_s)

        r = run_sync(once())
        works = True if r.status_code == 200 else False if r.status_code in (401, 403) else None
        return works, f"GET {url}/v1/models: HTTP {r.status_code or '000'} ({r.classification})"

    return test


def rotate_key(store: SecretStore, new_key_env: str, *, test: KeyTest, apply_changes: bool = False,
               operator: str = "", incident: str = "") -> StoreChange:
    """Put the key held by the variable named `new_key_env` into `store`: tested, dry run unless approved."""
    new_key_env = params.env_var_name("new_key_env", new_key_env)
    new = read_secret(new_key_env)
    if not new.present:
        raise ParameterError("new_key_env", new_key_env, "the name of an environment variable that holds the new "
                                                         "key (it is unset or empty)")
    change = StoreChange(f"rotate key in {store.provider}", store.target, at=iso_z(), provider=store.provider,
                         who=params.text("operator", operator).strip(), incident=params.text("incident", incident))
    t0 = time.monotonic()
    try:
        works, seen = test(new)
    except Exception as exc:  # noqa: BLE001 - a test that cannot run is an unknown answer, not a crash
        works, seen = None, f"the test could not run: {type(exc).__name__}"
    change.new_key_test = {"env_var": new_key_env, "fingerprint": new.fingerprint, "length": new.length,
                           "works": works, "seen": scrub(seen)}
    try:
        _rotate(store, new, new_key_env, change, works, apply_changes)
    except StoreError as exc:
        change.finding = Finding(exc.status, exc.message)
    change.who = change.who or change.identity or "unknown (pass operator)"
    change.elapsed_s = time.monotonic() - t0
    return change


def _rotate(store: SecretStore, new: SecretRef, env_var: str, change: StoreChange, works: bool | None,
            apply_changes: bool) -> None:
    change.identity, change.identity_source = store.identity()
    before = store.current()
    change.version_before = before.version
    change.command = store.command(env_var, before)
    change.undo = store.undo(before, "NEW") if before.version else ""
    new_desc = f"{new.fingerprint}, {new.length} chars"
    if before.fingerprint == new.fingerprint:
        change.dry_run_ok, change.note = True, f"nothing to change: the current {before.describe()} already holds this key"
        return
    change.diff = [{"field": store.target, "before": before.describe(), "after": f"new version: {new_desc}"}]
    allowed, evidence = store.can_write()
    change.dry_run_ok = allowed
    change.note = f"Write permission checked first (the stores have no server-side dry run): {evidence}."
    if not allowed:
        change.finding = Finding(FORBIDDEN, f"the credentials may not write a new version of {store.target}: {evidence}")
        return
    if not apply_changes:
        return
    if works is not True:
        status = KEY_REJECTED if works is False else KEY_UNTESTED
        change.finding = Finding(status, "Not applied: the new key " + ("is rejected by the API" if works is False else
                                                                       "could not be tested") + " ("
                                 + change.new_key_test["seen"] + "); writing it would not help.")
        return
    value = new.reveal() or ""
    new_version = store.write(value, before)
    value = ""
    change.applied, change.version_after = True, new_version
    change.note = " ".join(n for n in (change.note, getattr(store, "write_note", "")) if n)
    change.undo = store.undo(before, new_version) if before.version else (
        f"no earlier version to restore: disable or destroy version {new_version} if needed")
    back = store.current()
    change.diff[0]["after"] = f"version {new_version}: {new_desc}"
    change.verified = back.version == new_version and back.fingerprint == new.fingerprint
    if not change.verified:
        change.finding = Finding(NOT_DONE, f"The new key was written, but {store.target} reads back "
                                           f"{back.describe()}: rotation did not take.")
