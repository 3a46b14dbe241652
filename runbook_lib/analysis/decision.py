"""The seed's decision tree as a pure function: what was seen -> next step and its notebook.

    API returning errors?
    |-- YES: 401 -> auth | 429 -> rate limit | 5xx -> provider error | timeout -> network
    +-- NO: our service returning errors?
            |-- YES -> check our logs and config
            +-- NO  -> resolved, continue monitoring

Refinements an SRE expects: 403 goes to the auth branch (key lacks permission), a slow but
successful API goes to the network/latency branch, and when the API answers the on-call key but
our service's own calls fail, the service's error code picks the branch (a bad key in the
deployment is an auth problem even though the on-call key works).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..sources import probes

AUTH, RATE_LIMIT, PROVIDER, NETWORK, OUR_SERVICE, RESOLVED = (
    "auth", "rate_limit", "provider_error", "network", "our_service", "resolved")

NOTEBOOK = {
    AUTH: "diagnose_auth",
    RATE_LIMIT: "diagnose_rate_limit",
    PROVIDER: "diagnose_server_error",
    NETWORK: "diagnose_network",
    OUR_SERVICE: None,
    RESOLVED: None,
}

ACTION = {
    AUTH: "API key issue: verify the key's fingerprint, test it directly, rotate it if invalid",
    RATE_LIMIT: "Rate limited: read the rate-limit headers, reduce concurrency or queue requests",
    PROVIDER: "Mistral service issue: check the status page, enable fallback, monitor recovery",
    NETWORK: "Network issue: test DNS, TCP, TLS and egress policies; raise the client timeout if slow",
    OUR_SERVICE: "Mistral answers normally: check our service's logs and configuration",
    RESOLVED: "No errors seen: likely resolved, continue monitoring",
}

_BY_CLASS = {
    probes.AUTH_FAILURE: AUTH,
    probes.FORBIDDEN: AUTH,
    probes.RATE_LIMITED: RATE_LIMIT,
    probes.CAPACITY_EXCEEDED: RATE_LIMIT,
    probes.SERVER_ERROR: PROVIDER,
    **dict.fromkeys(probes.NETWORK_CLASSES, NETWORK),
    probes.CLIENT_ERROR: OUR_SERVICE,
    probes.UNEXPECTED: OUR_SERVICE,
}


@dataclass(frozen=True)
class Decision:
    branch: str
    notebook: str | None
    action: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _service_branch(last_status: object) -> str | None:
    """Branch from the HTTP code our service last got from Mistral ("000" = transport error)."""
    code = str(last_status or "")
    if code in ("401", "403"):
        return AUTH
    if code == "429":
        return RATE_LIMIT
    if code.startswith("5") and len(code) == 3:
        return PROVIDER
    if code == "000":
        return NETWORK
    return None


def _failing_code(dep: dict[str, Any], metrics: dict[str, Any] | None) -> tuple[str | None, str]:
    """The HTTP code our service's failing calls get, and where it was read.

    Why not only the health's `last_status`: under an intermittent fault (half the calls 503) the
    last call is as likely a 200, which sent triage to "our service" with Mistral failing half the
    time. The metrics' (or logs') dominant error code covers the whole window; `last_status` is a
    single call, used when it is itself a failure.
    """
    per_code = {str(c): float(r) for c, r in ((metrics or {}).get("errors_per_code") or {}).items()
                if r is not None and float(r) > 0}
    if per_code:
        code = max(per_code, key=lambda c: per_code[c])
        where = "estimated from the pods' logs" if (metrics or {}).get("estimate") else "our metrics"
        share = per_code[code] / sum(per_code.values())
        return code, f"{share:.0%} of our failing calls, {where}"
    last = dep.get("last_status")
    if last is not None and not str(last).startswith("2"):
        return str(last), "our service's last call"
    failed = dep.get("last_error_status")
    if failed is not None:
        return str(failed), "our service's last failed call"
    return None, ""


def decide(api: dict[str, Any], service: dict[str, Any] | None = None,
           metrics: dict[str, Any] | None = None) -> Decision:
    """Walk the tree. `api`/`service` are the recorded dicts of ApiSummary / ServiceHealth."""
    verdict = api["verdict"]
    if verdict != probes.OK:
        cls = api["dominant_error"] if verdict == "partial" else verdict
        branch = _BY_CLASS.get(cls, OUR_SERVICE)
        how = f"{api['error_fraction']:.0%} of probes failed" if verdict == "partial" else "all probes failed"
        return _decision(branch, f"API returning errors: {how}, class {cls}")
    if api.get("slow"):
        return _decision(NETWORK, f"API answers but slowly (median {api['latency_ms_median']:.0f} ms)")

    svc = service or {}
    dep = svc.get("mistral") or {}
    m_ratio = (metrics or {}).get("error_ratio")
    service_errors = (svc.get("status") in ("degraded", "down", "unreachable", "invalid")
                      or float(dep.get("error_rate") or 0) > 0
                      or (m_ratio is not None and float(m_ratio) > 0))
    if service_errors:
        code, source = _failing_code(dep, metrics)
        hint = _service_branch(code)
        if hint == AUTH:
            return _decision(hint, f"API answers the on-call key, but our service's calls fail with {code} "
                                   f"({source}): the service's own key or configuration differs")
        if hint is not None:
            return _decision(hint, f"API answers the on-call probes, but our service's calls fail with {code} "
                                   f"({source}): a fault the {api.get('samples', 'few')} probes did not catch "
                                   "(intermittent) or one only our service's calls meet")
        return _decision(OUR_SERVICE, f"API OK, our service reports {svc.get('status', 'errors')}")
    return _decision(RESOLVED, "API OK and our service reports no errors")


def _decision(branch: str, reason: str) -> Decision:
    return Decision(branch, NOTEBOOK[branch], ACTION[branch], reason)
