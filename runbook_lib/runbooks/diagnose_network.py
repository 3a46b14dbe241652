"""The timeout / network-error runbook's steps (notebooks/diagnose_network.ipynb), one public method per cell.

Seed, Timeout/Network Error: 1 test connectivity (`curl -v --connect-timeout 5`); 2 check DNS
(`nslookup api.mistral.ai`); 3 increase the timeout (`MISTRAL_TIMEOUT=60000`); 4 check egress rules
(`kubectl get networkpolicy`). Here DNS, TCP connect, TLS handshake and time to first byte are
measured as separate bounded phases so the failing one points at its cause, the proxy settings of
this kernel and of the deployment are shown (credentials masked), the NetworkPolicies are analysed
for the addresses actually resolved, and the raised timeout is computed from what was measured
(arithmetic shown) and is a dry run unless `apply_changes` is True.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .. import display, params, record
from ..sources import netdiag
from . import steps
from .._async import run_sync
from ..secrets import SecretRef, refuses_secret_parameters

MIN_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 300_000
FACTOR = 2
CONNECT_PHASES = ("dns", "tcp", "tls")  # a failure here: nothing connects at all (P1)

# What a failed phase points to, in the words of the on-call engineer's next step.
MEANING = {
    "dns": ("the **resolver**: the name does not resolve from here. Check `nslookup HOST`, the pod's "
            "/etc/resolv.conf and CoreDNS, and that egress to kube-dns (UDP/TCP 53) is allowed"),
    "tcp_refused": ("nothing accepts connections at that address and port: a wrong host or port, or a "
                    "proxy/firewall actively **rejecting** the connection"),
    "tcp": ("**egress / firewall**: the connection never completes (packets dropped). Check NetworkPolicies "
            "(below), security groups, NAT and whether the pods must use a proxy"),
    "tls": ("**TLS interception** or trust: the handshake failed, typically a corporate proxy presenting its "
            "own certificate, a missing CA bundle or a wrong clock"),
    "first_byte": ("a **slow or hung API** (or a middlebox swallowing the request): the connection is up but "
                   "no answer came within the bound. Check status.mistral.ai; raising the client timeout only "
                   "helps if the API answers eventually"),
    None: "the network path works: DNS, connect and handshake succeeded and the API answered",
}
SHORT = {"dns": "resolver", "tcp_refused": "connection refused", "tcp": "egress/firewall",
         "tls": "TLS interception", "first_byte": "slow or hung API", None: "network ok"}


@refuses_secret_parameters  # the notebook's first call: no secret value as a parameter
def start(*, label_selector: str, new_timeout_ms: int, timeout_env_var: str, **common: Any) -> NetworkRunbook:
    """Validate every parameter first; a wrong one names itself and what is accepted."""
    cfg = steps.common_parameters(**common)  # the parameters every diagnosis notebook shares
    if isinstance(new_timeout_ms, bool) or not isinstance(new_timeout_ms, int) \
            or not (new_timeout_ms == 0 or 1_000 <= new_timeout_ms <= MAX_TIMEOUT_MS):
        raise params.ParameterError("new_timeout_ms", new_timeout_ms,
                                    f"0 (use the computed recommendation) or milliseconds from 1000 to {MAX_TIMEOUT_MS}")
    cfg.update(label_selector=params.label_selector("label_selector", label_selector),
               new_timeout_ms=new_timeout_ms,
               timeout_env_var=params.env_var_name("timeout_env_var", timeout_env_var))
    return NetworkRunbook(cfg, steps.show_parameters(cfg))


def recommend_timeout_ms(first_byte_ms: float | None, failed_phase: str | None, bound_ms: float,
                         current_ms: int | None = None) -> tuple[int, list[str]]:
    """The client timeout to set: FACTOR x the measured time to first byte, within [30 s, 300 s].

    With no first byte within the bound, the bound is a lower limit of the API's answer time. The
    value never lowers the current timeout (this step raises it). Returns (ms, arithmetic lines).
    """
    steps_: list[str] = []
    if failed_phase in CONNECT_PHASES:
        base = 0.0
        steps_.append(f"the {failed_phase} phase failed: no answer time was measured, and a longer client timeout "
                      "does not fix a connection that cannot be made")
    elif failed_phase == "first_byte" or first_byte_ms is None:
        base = bound_ms
        steps_.append(f"no first byte within the bound: the API takes more than {bound_ms:.0f} ms (a lower limit)")
    else:
        base = first_byte_ms
        steps_.append(f"measured time to first byte: {first_byte_ms:.0f} ms")
    raw = FACTOR * base
    steps_.append(f"{FACTOR} x {base:.0f} ms = {raw:.0f} ms (headroom for variance)")
    value = int(min(max(raw, MIN_TIMEOUT_MS), MAX_TIMEOUT_MS))
    value = -(-value // 1000) * 1000  # whole seconds
    steps_.append(f"within [{MIN_TIMEOUT_MS}, {MAX_TIMEOUT_MS}] ms, rounded up to whole seconds: {value} ms")
    if current_ms is not None and current_ms >= value:
        steps_.append(f"the current timeout is already {current_ms} ms >= {value} ms: keep it (no raise is indicated)")
        value = current_ms
    return value, steps_


class NetworkRunbook:
    def __init__(self, cfg: dict[str, Any], secret: SecretRef) -> None:
        self.cfg = cfg
        self.secret = secret
        self.report: netdiag.NetReport | None = None
        self.cause: str | None = None
        self.deployment_env: dict[str, Any] = {}
        self.current_timeout_ms: int | None = None
        self.policy_verdict: str | None = None
        self.policy_cause = ""  # the policy finding reconciled with the measurement (reconcile_policy)
        self.policy_is_cause: bool | None = None  # None: no policy would block the API (or not analysed)
        self.recommended_ms: int | None = None
        self.changes: list[dict[str, Any]] = []
        self.severity: str | None = None  # the incident's level once communicate() has resolved it

    # 1. phases -------------------------------------------------------------------------------------
    def measure(self) -> dict[str, Any]:
        """DNS, TCP, TLS (https) and first byte, each bounded by `timeout_s`; which failed, what it means."""
        cfg = self.cfg
        rep = run_sync(netdiag.diagnose(cfg["mistral_url"], cfg["timeout_s"], ca_bundle=cfg["ca_bundle"]))
        self.report = rep
        failed = rep.failed_phase
        cause = failed
        if failed == "tcp" and "refused" in (rep.phases[-1].detail or "").lower():
            cause = "tcp_refused"
        self.cause = cause
        ttfb = self.first_byte_ms()
        value = {**rep.to_dict(), "cause": cause, "meaning": MEANING[cause], "time_to_first_byte_ms": ttfb,
                 "bound_s": cfg["timeout_s"], "tls_checked": rep.url.startswith("https:")}
        rows = [(p.name, "ok" if p.ok else "FAILED", p.ms, p.detail) for p in rep.phases]
        skipped = [n for n in ("dns", "tcp", "tls", "first_byte") if n not in {p.name for p in rep.phases}
                   and not (n == "tls" and not value["tls_checked"])]
        md = (display.table(("phase", "result", "ms", "detail"), rows)
              + (f"\n\nNot reached: {', '.join(skipped)}." if skipped else "")
              + ("" if value["tls_checked"] else "\n\nTLS: not applicable (plain http URL).")
              + f"\n\nTime to first byte: {_fmt(ttfb, ' ms')} (each phase bounded by {cfg['timeout_s']:g} s)."
              + f"\n\n**{('The ' + failed + ' phase failed') if failed else 'All phases succeeded'}**: "
              + f"{MEANING[cause]}.\n\nThese measurements connect directly, without a proxy.")
        record.record("network_phases", value, markdown=md)
        return value

    def first_byte_ms(self) -> float | None:
        """curl's time_starttransfer: the sum of all phases, when the first byte arrived."""
        rep = self.report
        if rep is None or rep.failed_phase or not rep.phases:
            return None
        return round(sum(p.ms or 0.0 for p in rep.phases), 1)

    # 2. proxies --------------------------------------------------------------------------------------
    def proxies(self) -> dict[str, Any]:
        """Proxy variables of this kernel (credentials masked) and of the deployment's container."""
        from .. import kube

        cfg = self.cfg
        local = netdiag.proxy_environment()
        with kube.connect(cfg["kubeconfig"], cfg["kube_context"], cfg["timeout_s"]) as cluster:
            res = cluster.deployment(cfg["namespace"], cfg["deployment"])
        remote: list[dict[str, Any]] | None = None
        finding = res.finding.to_dict() if res.finding else None
        if res.ok:
            env = [e for e in res.rows if e.get("container") == cfg["container"]]
            self.deployment_env = {e["name"]: e for e in env}
            cur = self.deployment_env.get(cfg["timeout_env_var"], {})
            if cur.get("source") == "literal" and str(cur.get("value") or "").isdigit():
                self.current_timeout_ms = int(cur["value"])
            remote = [{"name": e["name"], "display": e["display"]} for e in env if "PROXY" in e["name"].upper()]
        value = {"kernel": local, "deployment": remote, "deployment_kubectl": res.kubectl, "finding": finding,
                 "current_timeout_ms": self.current_timeout_ms}
        md = ("**This kernel**: " + (display.kv_table(local.items(), ("variable", "value")) if local
                                     else "no proxy variables set (connections go direct).")
              + f"\n\n**deployment/{cfg['deployment']}, container `{cfg['container']}`** (`{res.kubectl}`): "
              + (f"unavailable: {res.finding.message}" if res.finding else
                 display.table(("variable", "value"), [(r["name"], r["display"]) for r in remote or []])
                 if remote else "no proxy variables set (it connects direct).")
              + (f"\n\nIts `{cfg['timeout_env_var']}` is {self.current_timeout_ms} ms."
                 if self.current_timeout_ms is not None else ""))
        record.record("proxy_environment", value, markdown=md)
        return value

    # 3. network policies ---------------------------------------------------------------------------
    def network_policies(self) -> dict[str, Any]:
        """Policies that could block egress: for the addresses resolved, and for a public address if
        those are not public (the simulator on 127.0.0.1 stands in for api.mistral.ai)."""
        from .. import kube

        cfg = self.cfg
        resolved = list(self.report.addresses) if self.report else []
        analyses: list[tuple[str, list[str]]] = []
        host = self.report.host if self.report else ""
        if resolved:
            analyses.append((f"{', '.join(resolved)} (what {host} resolved to)" if resolved != [host]
                             else f"{host} (the URL's address)", resolved))
        if not resolved or not any(ipaddress.ip_address(a).is_global for a in resolved):
            analyses.append((f"a public address, as {kube.MISTRAL_API_HOST} has"
                             + (" (the addresses above are not public)" if resolved else " (nothing resolved)"), []))
        out: list[dict[str, Any]] = []
        with kube.connect(cfg["kubeconfig"], cfg["kube_context"], cfg["timeout_s"]) as cluster:
            for label, targets in analyses:
                res = cluster.network_policies(cfg["namespace"], cfg["label_selector"], targets)
                out.append({"target": label, "target_ips": targets, "ok": res.ok, "kubectl": res.kubectl,
                            "finding": res.finding.to_dict() if res.finding else None,
                            "verdict": res.data["verdict"] if res.ok else None,
                            "summary": res.data["summary"] if res.ok else None,
                            "blocking": res.data["blocking"] if res.ok else [],
                            "policies": res.rows})
                if not res.ok:
                    break  # the same cluster problem would repeat
        available = all(a["ok"] for a in out)
        # the verdict that matters for the real API: the public one when it was analysed
        main = next((a for a in reversed(out) if a["ok"]), None)
        self.policy_verdict = main["verdict"] if main and available else None
        self.policy_cause, is_cause = self.reconcile_policy(self.policy_verdict)
        self.policy_is_cause = is_cause
        value = {"available": available, "analyses": out, "verdict": self.policy_verdict,
                 "policy_cause": self.policy_cause, "policy_is_cause": is_cause,
                 "kubectl": out[0]["kubectl"] if out else ""}
        parts = []
        for a in out:
            if not a["ok"]:
                parts.append(f"**Unavailable** for {a['target']}: {a['finding']['message']}")
                continue
            rows = [(p["name"], "yes" if p["selects_pods"] else "no", "yes" if p["restricts_egress"] else "no",
                     "YES" if p["could_block_mistral"] else "no", p["reason"]) for p in a["policies"]]
            parts.append(f"**For {a['target']}**: verdict **{a['verdict']}**. {a['summary']}\n\n"
                         + display.table(("policy", "selects pods", "restricts egress", "could block", "why"), rows))
        md = (f"`{value['kubectl']}` (pods `{cfg['label_selector']}`). Targets analysed, TCP 443: "
              + "; ".join(a["target"] for a in out) + ".\n\n" + "\n\n".join(parts)
              + (f"\n\n**Against the measurement**: {self.policy_cause}." if self.policy_cause else ""))
        record.record("network_policies", value, markdown=md)
        return value

    def reconcile_policy(self, verdict: str | None) -> tuple[str, bool | None]:
        """A static finding is the cause only if the live measurement agrees.

        A policy that *would* block egress while DNS and TCP to the API succeed from here is not what
        breaks the calls (not enforced by the CNI, or not selecting the pods that call): saying it is
        would send the postmortem after the wrong fix.
        """
        if verdict != "blocked":
            return "", None
        rep = self.report
        phases = {ph.name: ph for ph in (rep.phases if rep else [])}
        connected = bool(phases.get("tcp") and phases["tcp"].ok)
        if connected:
            return ("the egress NetworkPolicy would block the API, but calls get through (TCP connects): "
                    "it is not enforced or does not select these pods; not the cause"), False
        if rep is not None and rep.failed_phase == "tcp" and self.cause == "tcp":
            return ("the egress NetworkPolicy would block the API and TCP connections time out, as a dropped "
                    "egress does: consistent with the policy being the cause"), True
        return (f"the egress NetworkPolicy would block the API; the measurement failed at "
                f"{rep.failed_phase if rep else 'an unmeasured phase'} ({SHORT.get(self.cause, self.cause)}), "
                "which a NetworkPolicy does not explain (it drops packets: TCP would time out)"), False

    # 4. raised timeout --------------------------------------------------------------------------------
    def recommend(self) -> dict[str, Any]:
        cfg = self.cfg
        computed, arithmetic = recommend_timeout_ms(self.first_byte_ms(), self.report.failed_phase if self.report else None,
                                                    cfg["timeout_s"] * 1000, self.current_timeout_ms)
        value_ms = computed
        if cfg["new_timeout_ms"]:
            value_ms = cfg["new_timeout_ms"]
            arithmetic.append(f"overridden by the parameter new_timeout_ms: {value_ms} ms")
        self.recommended_ms = value_ms
        value = {"computed_ms": computed, "recommended_ms": value_ms, "current_ms": self.current_timeout_ms,
                 "arithmetic": arithmetic, "env_var": cfg["timeout_env_var"]}
        md = ("\n".join(f"- {s}" for s in arithmetic)
              + f"\n\n**Recommended `{cfg['timeout_env_var']}={value_ms}`** (current: "
              + f"{_fmt(self.current_timeout_ms, ' ms')})")
        record.record("timeout_recommendation", value, markdown=md)
        return value

    def raise_timeout(self) -> dict[str, Any]:
        """Seed step 3 as an approved action: `kubectl set env ... MISTRAL_TIMEOUT=N` (dry run by default)."""
        from .. import kube
        from ..kube import write as remediate

        cfg = self.cfg
        if self.recommended_ms is None:
            self.recommend()
        with kube.connect(cfg["kubeconfig"], cfg["kube_context"], cfg["timeout_s"]) as cluster:
            change = remediate.plan_env(cluster, cfg["namespace"], cfg["deployment"],
                                        {cfg["timeout_env_var"]: str(self.recommended_ms)}, cfg["container"],
                                        apply_changes=cfg["apply_changes"], operator=cfg["operator"],
                                        incident=cfg["incident_id"], timeout_s=cfg["timeout_s"])
        value = steps.show_change("change_timeout_env", change)
        self.changes.append(value)
        return value

    # 5. communications ------------------------------------------------------------------------------
    def level(self) -> str:
        failed = self.report.failed_phase if self.report else None
        return "P1" if failed in CONNECT_PHASES else "P2"

    def communicate(self) -> dict[str, Any]:
        applied = any(c["applied"] for c in self.changes)
        failed = self.report.failed_phase if self.report else None
        self.severity = steps.incident_severity(
            self.cfg, self.level(), f"the {failed} phase fails: the API cannot be reached" if failed in CONNECT_PHASES
            else "the API can be reached (connect phases pass): slow or timing out, not unreachable",
            by="diagnose_network")
        # the impact says what was measured: "cannot be reached" only when a connect phase failed, even
        # when an earlier runbook's P1 holds (the API then connects but does not answer in time)
        impact = ("Users cannot use AI features: the AI provider cannot be reached" if failed in CONNECT_PHASES else
                  "Users cannot use AI features: the AI provider accepts connections but does not answer in time"
                  if self.severity == "P1" else
                  "Degraded AI responses: requests to the AI provider are slow or time out")
        return steps.communicate(
            self.cfg, by="diagnose_network", level=self.severity, status="MITIGATING" if applied else "INVESTIGATING",
            impact=impact,
            action=(f"Raised the AI client timeout to {self.recommended_ms} ms" if applied else
                    f"Diagnosing the network path ({self.cause or 'all phases ok'}); "
                    "timeout change prepared as a dry run"))

    def _policy_words(self) -> str:
        cause = self.policy_cause
        if self.policy_verdict == "blocked" and cause:
            return "would block (not the cause: calls connect)" if "not the cause" in cause else "blocks (the cause)"
        return self.policy_verdict or "unavailable"

    # 6. state after -------------------------------------------------------------------------------------
    def state_after(self) -> dict[str, Any]:
        return steps.state_after(self.cfg, self.secret)

    def summary(self) -> dict[str, Any]:
        applied = [c for c in self.changes if c["applied"]]
        failed = self.report.failed_phase if self.report else None
        last = self.changes[-1] if self.changes else None
        state = ("applied" if applied else "not possible" if last and last["finding"] else
                 "dry run" if last and last["diff"] else "unchanged" if last else "not prepared")
        line = (f"network: {failed + ' phase failed' if failed else 'all phases ok'}"
                f" ({SHORT[self.cause]}), time to first byte {_fmt(self.first_byte_ms(), ' ms')}"
                f", egress policy {self._policy_words()}"
                f", {self.cfg['timeout_env_var']}={self.recommended_ms} {state}, {self.severity or self.level()}")
        value = {"line": line, "failed_phase": failed, "cause": self.cause, "policy_verdict": self.policy_verdict,
                 "policy_cause": self.policy_cause, "policy_is_cause": self.policy_is_cause,
                 "recommended_timeout_ms": self.recommended_ms, "level": self.severity or self.level(),
                 "changes_applied": len(applied), "incident_id": self.cfg["incident_id"]}
        record.record(record.VERDICT, value, markdown=f"### Verdict\n\n`{line}`")
        return value


def _fmt(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:g}{unit}"
