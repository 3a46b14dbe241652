"""Redaction of secrets in text and Kubernetes objects, keeping a fingerprint.

The seed's `grep -v api-key` leaves base64 Secret data, literal env tokens, Authorization headers
and keys pasted into log lines. Here every such value is replaced by `[REDACTED sha256:<12 hex>]`
(or a plain `[REDACTED]` for display), so two redacted values can still be told apart in a review
without either being recoverable.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any

from .secrets import fingerprint

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|PWD|CREDENTIAL|AUTH|PRIVATE|CERT|DSN|SESSION|COOKIE|SIGNATURE|SALT",
                          re.IGNORECASE)
_SECRET_PREFIX = re.compile(r"^(sk-|sk_|rk_|sntrys_|ghp_|gho_|ghs_|github_pat_|xox[abpr]-|AKIA|ASIA|AIza|eyJ|glpat-|"
                            r"hf_|npm_|SG\.)|-----BEGIN")
_URL_CREDENTIALS = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
_TOKENISH = re.compile(r"^[A-Za-z0-9+/=_\-.]{24,}$")
# Each rule: the text before the secret (`pre`, kept) and the secret itself (replaced).
_RULES = (
    re.compile(r"(?i)(?P<pre>\b(?:bearer|basic)\s+)(?P<secret>[A-Za-z0-9._~+/=-]{8,})"),
    re.compile(r"(?i)(?P<pre>[\"']?[A-Za-z0-9_.-]*(?:api[_-]?key|token|secret|passw(?:or)?d|credential|"
               r"authorization)[A-Za-z0-9_.-]*[\"']?\s*[:=]\s*[\"']?)(?P<secret>[^\"'\s,;}&\[]{8,})"),
    re.compile(r"(?P<pre>)(?P<secret>\b(?:sk-|sntrys_|ghp_|gho_|github_pat_|xox[abpr]-|glpat-|hf_)[A-Za-z0-9_\-]{8,})"),
    re.compile(r"(?P<pre>://[^/\s:@]+:)(?P<secret>[^/\s@]+)(?=@)"),
)
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie", "set-cookie"})
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def marker(value: str, fingerprints: bool = True) -> str:
    return f"[REDACTED {fingerprint(value)}]" if fingerprints else "[REDACTED]"


def scrub(text: str, fingerprints: bool = False) -> str:
    """Remove bearer tokens, `*key=`/`*token:` values, known key prefixes and URL passwords."""
    for rule in _RULES:
        text = rule.sub(lambda m: m.group("pre") + marker(m.group("secret"), fingerprints), text)
    return text


def secret_looking(name: str, value: str | None = None) -> bool:
    """True for env names like *_KEY/*TOKEN*/*SECRET*/*PASSWORD*/..., or values shaped like a secret."""
    if _SECRET_NAME.search(name or ""):
        return True
    if not value:
        return False
    if _SECRET_PREFIX.search(value) or _URL_CREDENTIALS.search(value):
        return True
    return bool(_TOKENISH.match(value) and re.search(r"[0-9]", value) and re.search(r"[A-Za-z]", value))


def _known_forms(secrets: Iterable[str]) -> list[tuple[str, str]]:
    """Each known secret and its base64 form (as Secret data holds it), longest first."""
    forms = []
    for value in secrets:
        if value and len(value) >= 6:
            forms.append((value, value))
            forms.append((base64.b64encode(value.encode()).decode(), value))
    return sorted(forms, key=lambda f: -len(f[0]))


def redact_known(text: str, secrets: Iterable[str] = ()) -> str:
    """Only the given secret values (exact and base64), no patterns: safe on code (a notebook's source)."""
    for form, original in _known_forms(secrets):
        text = text.replace(form, marker(original))
    return text


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Known secret values (exact and base64) first, then every pattern; fingerprints kept."""
    return scrub(redact_known(text, secrets), fingerprints=True)


def redact_object(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a Kubernetes object (or any JSON value) with every secret replaced by a fingerprint.

    Secret `data`/`stringData` values, env values whose name or shape looks secret, secret headers,
    the last-applied annotation (it holds literal env values) and every string's secret patterns.
    """
    known = list(secrets)
    return _walk(obj, known, parent_key="")


def _walk(obj: Any, known: list[str], parent_key: str) -> Any:
    if isinstance(obj, dict):
        is_secret = obj.get("kind") == "Secret"
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if is_secret and key in ("data", "stringData") and isinstance(value, dict):
                out[key] = {k: marker(_decoded(v) if key == "data" else str(v)) for k, v in value.items()}
            elif key.lower() in SECRET_HEADERS and isinstance(value, str):
                out[key] = marker(value)
            elif key == LAST_APPLIED and isinstance(value, str):
                out[key] = _redact_json_string(value, known)
            elif key == "value" and isinstance(value, str) and "name" in obj and secret_looking(str(obj["name"]), value):
                out[key] = marker(value)
            else:
                out[key] = _walk(value, known, key)
        return out
    if isinstance(obj, list):
        return [_walk(v, known, parent_key) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, known)
    return obj


def _decoded(value: Any) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return str(value)


def _redact_json_string(text: str, known: list[str]) -> str:
    try:
        return json.dumps(_walk(json.loads(text), known, ""), sort_keys=True)
    except ValueError:
        return redact_text(text, known)
