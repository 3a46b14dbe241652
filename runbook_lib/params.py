"""Parameter validation for notebooks and the CLI.

A wrong parameter must stop a run in its first cell with a message that names the parameter and
says what is accepted, so every validator raises `ParameterError(name, value, accepted)`.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from .errors import ParameterError
from .labels import split_terms

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROM_DURATION = re.compile(r"^[1-9][0-9]{0,3}[smh]$")
_INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# One label-selector requirement: key (optionally prefixed), then =, ==, != or a set form.
_LABEL_KEY = r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SELECTOR_TERM = re.compile(
    rf"^(!?{_LABEL_KEY}|{_LABEL_KEY}\s*(==|=|!=)\s*{_LABEL_VALUE}"
    rf"|{_LABEL_KEY}\s+(in|notin)\s+\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\))$"
)

MAX_TIMEOUT_S = 300.0


def url(name: str, value: object, *, schemes: tuple[str, ...] = ("http", "https"),
        allow_empty: bool = False) -> str:
    """An absolute http(s) URL with a host; empty only where the step is optional."""
    accepted = f"an absolute URL with scheme {' or '.join(schemes)} and a host, e.g. http://127.0.0.1:18080"
    if allow_empty:
        accepted += ", or '' to skip the step"
    if not isinstance(value, str):
        raise ParameterError(name, value, accepted)
    if value == "" and allow_empty:
        return ""
    if any(c.isspace() for c in value):
        raise ParameterError(name, value, accepted)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ParameterError(name, value, accepted) from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ParameterError(name, value, accepted)
    if parts.username or parts.password:
        raise ParameterError(name, "<url with credentials>",
                             accepted + " (no credentials in the URL: they would be recorded)")
    return value.rstrip("/")


def timeout(name: str, value: object, *, maximum: float = MAX_TIMEOUT_S) -> float:
    """Seconds, finite, > 0 and <= maximum: an unbounded wait is never accepted."""
    accepted = f"a number of seconds > 0 and <= {maximum:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, value, accepted)
    v = float(value)
    if not math.isfinite(v) or v <= 0 or v > maximum:
        raise ParameterError(name, value, accepted)
    return v


def positive_int(name: str, value: object, *, maximum: int) -> int:
    accepted = f"a whole number from 1 to {maximum}"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ParameterError(name, value, accepted)
    return value


def fraction(name: str, value: object) -> float:
    accepted = "a number from 0 to 1"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ParameterError(name, value, accepted)
    return float(value)


def namespace(name: str, value: object) -> str:
    """A Kubernetes namespace: a DNS-1123 label (lower case, digits, '-', at most 63)."""
    accepted = "a DNS-1123 label: lower-case letters, digits and '-', 1-63 characters, e.g. prod"
    if not isinstance(value, str) or len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ParameterError(name, value, accepted)
    return value


def label_selector(name: str, value: object) -> str:
    """A Kubernetes label selector such as `app=mistral-service` or `tier in (a,b)`."""
    accepted = "a label selector such as app=mistral-service (comma-separated requirements)"
    if not isinstance(value, str) or not value.strip() or len(value) > 512:
        raise ParameterError(name, value, accepted)
    terms = split_terms(value)
    if not all(_SELECTOR_TERM.match(t.strip()) for t in terms):
        raise ParameterError(name, value, accepted)
    return value.strip()


def env_var_name(name: str, value: object) -> str:
    """The NAME of an environment variable (never its value: values would be recorded)."""
    accepted = ("the name of an environment variable (letters, digits, '_', not starting with a digit), "
                "e.g. MISTRAL_API_KEY; pass the name, never the key itself")
    if not isinstance(value, str) or not _ENV_NAME.match(value) or len(value) > 128:
        # Never echo what might be a pasted secret.
        shown = value if isinstance(value, str) and len(value) <= 32 and _looks_harmless(value) else "<hidden>"
        raise ParameterError(name, shown, accepted)
    return value


def _looks_harmless(value: str) -> bool:
    return not any(c.isdigit() for c in value) or len(value) < 12


def incident_id(name: str, value: object) -> str:
    """Used in folder names, so no path separators, no '..', no leading dot or dash."""
    accepted = ("1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit, "
                "without '..' (it names the record's folder), e.g. INC-1234")
    if not isinstance(value, str) or not _INCIDENT_ID.match(value) or ".." in value:
        raise ParameterError(name, value, accepted)
    return value


def choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(name, value, "one of " + ", ".join(choices))
    return value


def text(name: str, value: object, *, maximum: int = 200, allow_empty: bool = True) -> str:
    """Free text such as an operator name: printable, single line, bounded."""
    accepted = f"a single line of printable text, at most {maximum} characters"
    if not isinstance(value, str) or len(value) > maximum or not value.isprintable():
        raise ParameterError(name, value, accepted)
    if not allow_empty and not value.strip():
        raise ParameterError(name, value, accepted + ", not empty")
    return value


def prom_duration(name: str, value: object) -> str:
    """A Prometheus range such as 30s, 5m or 1h (it goes into PromQL, so nothing else)."""
    if not isinstance(value, str) or not _PROM_DURATION.match(value):
        raise ParameterError(name, value, "a Prometheus duration such as 30s, 5m or 1h")
    return value


def duration_seconds(name: str, value: object) -> float:
    """A duration written like 30s, 15m or 2h (the Prometheus form), in seconds."""
    text_value = prom_duration(name, value)
    return float(int(text_value[:-1]) * {"s": 1, "m": 60, "h": 3600}[text_value[-1]])


def utc_time(name: str, value: object, *, allow_empty: bool = True) -> float | None:
    """An ISO-8601 time (`2026-11-23T10:15:00Z`; no offset means UTC) as epoch seconds; "" is None."""
    from ._time import parse

    if allow_empty and value in ("", None):
        return None
    accepted = "an ISO-8601 UTC time such as 2026-11-23T10:15:00Z" + (" or empty" if allow_empty else "")
    if not isinstance(value, str):
        raise ParameterError(name, value, accepted)
    parsed = parse(value)
    if parsed is None:
        raise ParameterError(name, value, accepted)
    return parsed.timestamp()


def default_incident_id() -> str:
    """The id an incident gets when none is given: `INC-<UTC stamp>` (one definition for run, respond, serve)."""
    from ._time import utc_stamp

    return f"INC-{utc_stamp()}"


def file_path(name: str, value: object) -> str:
    """A local file's path, or '' for none: its content is read when used, never recorded."""
    accepted = "the path of a local file (it is read when needed and never recorded), or '' for none"
    if not isinstance(value, str) or len(value) > 4096 or (value and (not value.isprintable() or "://" in value)):
        raise ParameterError(name, value, accepted)
    return value.strip()


def ca_file(name: str, value: object) -> str:
    """A PEM CA bundle trusted instead of the system store, or "" for httpx's default (SSL_CERT_FILE, certifi).

    Checked when given (it must load as CA certificates), so a typo fails in the first cell, named.
    """
    path = file_path(name, value)
    if path:
        from .sources.tls import TlsSetupError, ssl_context

        try:
            ssl_context(ca_bundle=path, names=(name, name, name))
        except TlsSetupError as exc:
            raise ParameterError(name, value, "a readable PEM file of CA certificates, or '' for the system "
                                 f"store / SSL_CERT_FILE ({str(exc).split(': ', 1)[-1]})") from None
    return path


_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\\n]|\\.)*)"\s*')
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_CREDENTIAL_HEADER = re.compile(r"authorization|cookie|token|secret|password|api[-_]?key", re.IGNORECASE)


def metrics_selector(name: str, value: object) -> str:
    """PromQL label matchers such as `{namespace="prod",service="api"}` (braces optional), or ''.

    Returned without braces and normalised (`namespace="prod",service="api"`): it is added to every
    `mistral_*` series the runbooks query, so only matchers are accepted, never PromQL.
    """
    accepted = ('PromQL label matchers such as {namespace="prod",service="api"} (=, !=, =~, !~ with '
                "double-quoted values), or '' for all series")
    if not isinstance(value, str) or len(value) > 1000:
        raise ParameterError(name, value, accepted)
    inner = value.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    inner = inner.strip().rstrip(",")
    if not inner:
        if value.strip() not in ("", "{}"):
            raise ParameterError(name, value, accepted)
        return ""
    matchers, pos = [], 0
    while pos < len(inner):
        m = _MATCHER.match(inner, pos)
        if not m:
            raise ParameterError(name, value, accepted)
        matchers.append(f'{m.group(1)}{m.group(2)}"{m.group(3)}"')
        pos = m.end()
        if pos < len(inner):
            if inner[pos] != ",":
                raise ParameterError(name, value, accepted)
            pos += 1
    return ",".join(matchers)


def request_headers(name: str, value: object) -> tuple[tuple[str, str], ...]:
    """Extra request headers `Name: value; Name2: value` (e.g. `X-Scope-OrgID: tenant-a`), or ''.

    Their values are recorded with the parameters, so credentials are refused here: a token goes in a
    file (`prometheus_bearer_token_file`), a password in an env var (`prometheus_password_env`).
    """
    accepted = ("headers as 'Name: value' separated by ';' (e.g. X-Scope-OrgID: tenant-a), no credentials "
                "(Authorization, Cookie, *token*, *secret*, *password*, *api-key*: use prometheus_bearer_token_file "
                "or prometheus_password_env), or ''")
    if not isinstance(value, str) or len(value) > 2000 or not value.isprintable():
        raise ParameterError(name, "<not shown>" if isinstance(value, str) else value, accepted)
    pairs = []
    for part in (p.strip() for p in value.split(";")):
        if not part:
            continue
        header, sep, header_value = part.partition(":")
        header, header_value = header.strip(), header_value.strip()
        if not sep or not _HEADER_NAME.match(header) or not header_value:
            raise ParameterError(name, "<not shown>", accepted)
        if _CREDENTIAL_HEADER.search(header):
            raise ParameterError(name, f"<header {header} not shown>", accepted)
        pairs.append((header, header_value))
    return tuple(pairs)


def prometheus_access(**values: object) -> dict[str, Any]:
    """The Prometheus credential/TLS/selector parameters, each checked, then checked together.

    Only the names given are returned (a notebook declares all of them or none).
    """
    checked = shared(**values)
    token, user, password = (checked.get("prometheus_bearer_token_file"), checked.get("prometheus_username"),
                             checked.get("prometheus_password_env"))
    if token and (user or password):
        raise ParameterError("prometheus_bearer_token_file", token, "either a bearer token file or basic auth "
                             "(prometheus_username + prometheus_password_env), not both")
    if password and not user:
        raise ParameterError("prometheus_username", user, "the basic-auth user name when prometheus_password_env "
                             "is set")
    if checked.get("prometheus_client_key") and not checked.get("prometheus_client_cert"):
        raise ParameterError("prometheus_client_cert", checked.get("prometheus_client_cert"),
                             "the client certificate file when prometheus_client_key is set")
    return checked


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(name, value, "True or False (False = dry run)")
    return value


# The parameters several runbooks share (triage and every diagnosis), each with its one rule: a
# notebook validates its own subset through `shared`, so the accepted values never drift apart.
SHARED: dict[str, Any] = {
    "mistral_url": lambda n, v: url(n, v),
    "api_key_env": env_var_name,
    "service_health_url": lambda n, v: url(n, v, allow_empty=True),
    "ca_bundle": ca_file,  # trusted by the probes of the Mistral API and our service (proxies: HTTPS_PROXY)
    "prometheus_url": lambda n, v: url(n, v, allow_empty=True),
    "metrics_window": prom_duration,
    # how to reach an authenticated Prometheus (checked together by `prometheus_access`) and which series
    "prometheus_bearer_token_file": file_path,
    "prometheus_username": lambda n, v: text(n, v, maximum=256),
    "prometheus_password_env": lambda n, v: "" if v == "" else env_var_name(n, v),
    "prometheus_ca_bundle": file_path,
    "prometheus_client_cert": file_path,
    "prometheus_client_key": file_path,
    "prometheus_headers": request_headers,
    "metrics_selector": metrics_selector,
    "kubeconfig": lambda n, v: text(n, v, maximum=4096),
    "kube_context": text,
    "namespace": namespace,
    "deployment": namespace,
    "container": namespace,
    "label_selector": label_selector,
    "timeout_s": lambda n, v: timeout(n, v, maximum=120),
    "apply_changes": _flag,
    "operator": text,
    "incident_id": incident_id,
    "incident_commander": text,
    "slack_webhook_env": env_var_name,
    # the messages' affected services, comma-separated ("Chat assistant, Search")
    "affected_features": lambda n, v: text(n, v, maximum=500, allow_empty=False),
}


def shared(**values: object) -> dict[str, Any]:
    """Validate shared parameters in the order given; the first bad one names itself."""
    return {name: SHARED[name](name, value) for name, value in values.items()}
