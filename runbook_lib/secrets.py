"""API keys: read from an environment variable named by a parameter, shown only as a fingerprint.

papermill records every parameter in the executed notebook, so the key is never a parameter:
notebooks pass the variable's *name*. What is displayed is presence, length and the first 12 hex
digits of SHA-256: enough to tell two keys apart, useless to an attacker. Never a prefix.

The other half: a secret's *value* is never a parameter. `check_no_secret_values` refuses one,
and `refuses_secret_parameters` puts that check into every notebook's first call.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ParameterError

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


# -- secret values never become parameters ---------------------------------------------------------------
# papermill writes every parameter into the executed notebook (the injected-parameters cell and its
# metadata) before the kernel starts, so a secret passed as a parameter is in the record for good.
# One guard, called by the CLI before any kernel starts (`run.execute.check_run_request`) and by
# every notebook's first call (each runbook's `start`, through `refuses_secret_parameters`), so raw
# papermill, JupyterLab and `runbook run` are all covered.
SECRET_ENV_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.IGNORECASE)
SECRET_ENV_ALWAYS = ("MISTRAL_API_KEY", "NEW_MISTRAL_API_KEY", "SLACK_WEBHOOK_URL")
# parameters that name env vars holding secrets (their values are secrets too)
SECRET_ENV_PARAMS = ("api_key_env", "new_key_env", "slack_webhook_env", "extra_secret_envs",
                     "prometheus_password_env")
MIN_SECRET_LEN = 8  # shorter values are too common to refuse ("default", "true")


def secret_env_values(parameters: Mapping[str, Any] | None = None,
                      environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """env name -> value of every variable whose value must never appear in a parameter.

    Variables named like a secret (`*_KEY`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, ...), the key and
    webhook variables, and those the parameters name (`api_key_env`, `extra_secret_envs`, ...).
    """
    env = os.environ if environ is None else environ
    names = {n for n in env if SECRET_ENV_NAME.search(n)} | set(SECRET_ENV_ALWAYS)
    for key in SECRET_ENV_PARAMS:
        value = (parameters or {}).get(key)
        if isinstance(value, str):
            names.update(n.strip() for n in value.split(",") if n.strip())
    return {n: v.strip() for n in names if len((v := env.get(n) or "").strip()) >= MIN_SECRET_LEN}


def texts_of(value: Any) -> list[str]:
    """Every string inside a parameter value (keys and items of dicts and lists too)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [t for k, v in value.items() for t in texts_of(k) + texts_of(v)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [t for v in value for t in texts_of(v)]
    return []


def secret_held(value: Any, secrets: Mapping[str, str]) -> str | None:
    """The env name whose secret `value` contains (anywhere in it), else None."""
    texts = texts_of(value)
    return next((env for env, secret in sorted(secrets.items()) if any(secret in t for t in texts)), None)


def check_no_secret_values(parameters: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Refuse a parameter that holds the key (or another secret env value), naming it, never showing it.

    Raises ParameterError for the first such parameter; its message names the parameter and the
    variable, not the value.
    """
    secrets = secret_env_values(parameters, environ)
    for name, value in parameters.items():
        env = secret_held(value, secrets)
        if env is not None:
            raise ParameterError(
                name, f"<hidden: holds the value of ${env}>",
                "no secret values in parameters (papermill writes every parameter into the record before the "
                f"kernel starts): put the secret in an environment variable and pass its NAME, e.g. "
                f"api_key_env={env}; delete this output and rotate the secret if it was shared")


F = TypeVar("F", bound=Callable[..., Any])


def refuses_secret_parameters(start: F) -> F:
    """Decorate a runbook's `start` (the notebook's first call): secret values in its parameters fail the cell.

    The check runs before anything is validated, recorded or contacted, so the failing first cell
    names the parameter and the record shows no part of the value (beyond papermill's own
    injected-parameters cell, written before the kernel started).
    """

    @functools.wraps(start)
    def guarded(*args: Any, **parameters: Any) -> Any:
        check_no_secret_values(parameters)
        return start(*args, **parameters)

    return guarded  # type: ignore[return-value]
