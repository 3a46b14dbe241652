"""API keys: read from an environment variable named by a parameter, shown only as a fingerprint.

papermill records every parameter in the executed notebook, so the key is never a parameter:
notebooks pass the variable's *name*. What is displayed is presence, length and the first 12 hex
digits of SHA-256: enough to tell two keys apart, useless to an attacker. Never a prefix.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

FINGERPRINT_HEX = 12


def fingerprint(value: str) -> str:
    """Short SHA-256 fingerprint, e.g. `sha256:3fa1c2d4e5b6`."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX]


@dataclass(frozen=True)
class SecretRef:
    """A secret read from the environment. Its value never appears in repr, str or records."""

    env_var: str
    present: bool
    length: int
    fingerprint: str | None
    _value: str | None = field(default=None, repr=False, compare=False)

    def reveal(self) -> str | None:
        """The raw value, for an Authorization header only. Never display or record it."""
        return self._value

    def describe(self) -> dict[str, object]:
        """What may be shown and recorded."""
        return {"env_var": self.env_var, "present": self.present, "length": self.length,
                "fingerprint": self.fingerprint}

    def __str__(self) -> str:
        if not self.present:
            return f"${self.env_var}: absent"
        return f"${self.env_var}: present, {self.length} characters, {self.fingerprint}"


def read_secret(env_var: str, environ: dict[str, str] | None = None) -> SecretRef:
    """Read the variable named `env_var`; an empty or whitespace-only value counts as absent."""
    env = os.environ if environ is None else environ
    raw = env.get(env_var)
    if raw is None or not raw.strip():
        return SecretRef(env_var, False, 0, None)
    value = raw.strip()
    return SecretRef(env_var, True, len(value), fingerprint(value), value)
