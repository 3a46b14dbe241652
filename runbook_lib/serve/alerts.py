"""Alertmanager webhook payloads (version 4): validated into small, typed alerts.

`runbook serve` trusts nothing it receives: a body that is not the v4 shape is refused with a
message that says which field is wrong, so whoever set up the receiver can fix it from the answer.
The reference is Alertmanager's `webhook_config` payload: `version`, `groupKey`, `status`,
`receiver`, `groupLabels`, `commonLabels`, `commonAnnotations`, `externalURL`, `alerts[]` with
`status`, `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`, `fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

FIRING, RESOLVED = "firing", "resolved"
MAX_ALERTS = 1000  # Alertmanager's max_alerts default is 0 (all); a group this big is not one incident
_FINGERPRINT = re.compile(r"^[0-9a-fA-F]{1,64}$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 webhook payload; the message names the field."""


@dataclass(frozen=True)
class Alert:
    """One alert of a notification: what serve keys incidents on (`fingerprint`) and records."""

    fingerprint: str
    status: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: str = ""
    ends_at: str = ""
    generator_url: str = ""

    @property
    def error_class(self) -> str | None:
        return self.labels.get("error_class")

    @property
    def runbook(self) -> str | None:
        return self.annotations.get("runbook")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Notification:
    """A validated webhook body."""

    status: str
    receiver: str
    group_key: str
    alerts: tuple[Alert, ...]
    external_url: str = ""


def parse(body: bytes) -> Notification:
    """Parse and validate a webhook body; raise PayloadError saying what is wrong and what is expected."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # `[[[[...` nested beyond the interpreter's recursion limit
        raise PayloadError("body is not an Alertmanager payload: JSON nested too deep") from None
    except ValueError as exc:  # e.g. an integer of over 4,300 digits (Python's int conversion limit)
        raise PayloadError(f"body is not an Alertmanager payload: {str(exc).split(':')[0]}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object (an Alertmanager webhook payload), got {type(data).__name__}")
    version = data.get("version")
    if version != "4":
        raise PayloadError(f'field "version" must be "4" (Alertmanager webhook payload v4), got {version!r}')
    status = _choice(data, "status", "")
    alerts_raw = data.get("alerts")
    if not isinstance(alerts_raw, list) or not alerts_raw:
        raise PayloadError('field "alerts" must be a non-empty list of alerts')
    if len(alerts_raw) > MAX_ALERTS:
        raise PayloadError(f'field "alerts" holds {len(alerts_raw)} alerts; at most {MAX_ALERTS} are accepted '
                           "(set max_alerts in the webhook_config)")
    alerts = tuple(_alert(a, i) for i, a in enumerate(alerts_raw))
    return Notification(status=status, receiver=_string(data, "receiver", required=False),
                        group_key=_string(data, "groupKey", required=False), alerts=alerts,
                        external_url=_string(data, "externalURL", required=False))


def retry_key(group_key: str, alert: Alert) -> str:
    """What makes one notification of one alert: Alertmanager's retry of it carries the same key.

    Group key + fingerprint + status + startsAt + endsAt (Alertmanager sends endsAt zero while firing,
    so repeats of a firing alert share it too; serve tells them apart by time, see spool.RETRY_WINDOW_S).
    """
    text = "\x1f".join((group_key, alert.fingerprint, alert.status, alert.starts_at, alert.ends_at))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def is_mistral(alert: Alert) -> bool:
    """Ours: the shipped rules are named Mistral* and carry an `error_class` label and a `runbook`."""
    return alert.name.startswith("Mistral") or ("error_class" in alert.labels and bool(alert.runbook))


def _alert(raw: Any, i: int) -> Alert:
    where = f"alerts[{i}]"
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be an object, got {type(raw).__name__}")
    status = _choice(raw, "status", where + ".")
    labels = _string_map(raw.get("labels"), f"{where}.labels")
    name = labels.get("alertname", "")
    if not name:
        raise PayloadError(f'{where}.labels must include "alertname"')
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise PayloadError(f'{where}.fingerprint must be a hex string of 1-64 characters, got {fingerprint!r}')
    annotations = _string_map(raw.get("annotations", {}), f"{where}.annotations")
    return Alert(fingerprint=fingerprint.lower(), status=status, name=name, labels=labels, annotations=annotations,
                 starts_at=_string(raw, "startsAt", required=False), ends_at=_string(raw, "endsAt", required=False),
                 generator_url=_string(raw, "generatorURL", required=False))


def _choice(data: dict[str, Any], key: str, prefix: str) -> str:
    value = data.get(key)
    if value not in (FIRING, RESOLVED):
        raise PayloadError(f'field "{prefix}{key}" must be "firing" or "resolved", got {value!r}')
    return str(value)


def _string(data: dict[str, Any], key: str, *, required: bool) -> str:
    value = data.get(key, None)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f'field "{key}" must be a string, got {type(value).__name__}')
    return value


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object of string values, got {type(value).__name__}")
    for k, v in value.items():
        if not _LABEL_NAME.match(k) or not isinstance(v, str):
            raise PayloadError(f"{where} must map label names to strings; {k!r} -> {type(v).__name__} is not")
    return dict(value)
