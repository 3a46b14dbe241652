"""Kubernetes, network policies: could one of them be what blocks egress to the Mistral API?

`analyse_policy` reads one NetworkPolicy against the pods' labels: does it select them, restrict
their egress, and let TCP 443 out to a public address (or to the API's known addresses)?
`ClusterNetpol.network_policies` lists the namespace's policies, analyses each, and sums them up
in a verdict (policies add up: egress is blocked only when some policy restricts it and none
allows it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from .. import params
from ..labels import equality_labels
from ._client import KubeResult
from .read import ClusterReads

MISTRAL_API_HOST = "api.mistral.ai"

_NON_PUBLIC = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "::1/128", "fc00::/7", "fe80::/10", "ff00::/8")]


def _port_allows_443(ports: list[dict[str, Any]] | None) -> bool:
    if not ports:
        return True
    for p in ports:
        if (p.get("protocol") or "TCP").upper() != "TCP":
            continue
        port, end = p.get("port"), p.get("endPort")
        if port is None:
            return True
        if isinstance(port, int) and (port == 443 or (end and port <= 443 <= int(end))):
            return True
        if isinstance(port, str) and port.isdigit() and int(port) == 443:
            return True
    return False


def _ip_block_allows(block: dict[str, Any], targets: list[str]) -> bool | None:
    """True/False for known target IPs; without them, whether the block reaches the public internet."""
    try:
        net = ipaddress.ip_network(str(block.get("cidr")), strict=False)
        excepts = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
    except ValueError:
        return False
    if targets:
        for t in targets:
            ip = ipaddress.ip_address(t)
            if ip.version == net.version and ip in net and not any(ip.version == e.version and ip in e for e in excepts):
                return True
        return False
    if net.prefixlen == 0:
        return True
    if any(net.version == p.version and net.subnet_of(p) for p in _NON_PUBLIC):  # type: ignore[arg-type]
        return False
    return None  # a specific public range: it may or may not hold the API's addresses


def _peer_text(peer: dict[str, Any]) -> str:
    if "ipBlock" in peer:
        b = peer["ipBlock"] or {}
        ex = f" except {', '.join(b['except'])}" if b.get("except") else ""
        return f"{b.get('cidr')}{ex}"
    parts = []
    if "podSelector" in peer:
        parts.append("pods " + (_selector_text(peer["podSelector"]) or "(all)"))
    if "namespaceSelector" in peer:
        parts.append("in namespaces " + (_selector_text(peer["namespaceSelector"]) or "(all)"))
    elif "podSelector" in peer:
        parts.append("in the same namespace")
    return " ".join(parts)


def _selector_text(sel: dict[str, Any] | None) -> str:
    sel = sel or {}
    terms = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    terms += [f"{e.get('key')} {e.get('operator')} ({','.join(e.get('values') or [])})"
              for e in sel.get("matchExpressions") or []]
    return ",".join(terms)


def _ports_text(ports: list[dict[str, Any]] | None) -> str:
    if not ports:
        return "any port"
    return ", ".join(f"{(p.get('protocol') or 'TCP')}/{p.get('port', '*')}"
                     + (f"-{p['endPort']}" if p.get("endPort") else "") for p in ports)


def _selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector object (matchLabels, matchExpressions) against labels; `{}` selects all."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _labels_from_selector(selector: str) -> dict[str, str]:
    return equality_labels(selector)


def analyse_policy(policy: dict[str, Any], pod_labels: dict[str, str], target_ips: list[str]) -> dict[str, Any]:
    """Whether one NetworkPolicy selects the pods, restricts their egress, and lets TCP 443 out."""
    meta, spec = policy.get("metadata") or {}, policy.get("spec") or {}
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
    selects = _selector_matches(spec.get("podSelector"), pod_labels)
    restricts = selects and "Egress" in types
    rules = spec.get("egress") or []
    texts, allows = [], False
    for rule in rules:
        peers = rule.get("to") or []
        port_ok = _port_allows_443(rule.get("ports"))
        dest = "anywhere" if not peers else "; ".join(_peer_text(p) for p in peers)
        texts.append(f"to {dest} on {_ports_text(rule.get('ports'))}")
        if not port_ok:
            continue
        if not peers:
            allows = True
            continue
        for peer in peers:
            verdict = _ip_block_allows(peer["ipBlock"] or {}, target_ips) if "ipBlock" in peer else False
            if verdict is True:
                allows = True
            elif verdict is None and allows is False:
                allows = None  # type: ignore[assignment]
    if not restricts:
        could_block, reason = False, ("does not select the pods" if not selects else "does not restrict egress")
        allows_out: bool | None = True
    elif allows is True:
        could_block, reason, allows_out = False, f"allows TCP 443 to {MISTRAL_API_HOST}", True
    elif allows is None:
        could_block, reason, allows_out = True, ("allows TCP 443 only to specific public ranges: check they hold "
                                                 f"{MISTRAL_API_HOST}'s addresses"), None
    else:
        could_block, allows_out = True, False
        reason = ("denies all egress" if not rules else
                  f"allows egress only {', '.join(texts)}: nothing that reaches {MISTRAL_API_HOST}:443")
    return {"name": meta.get("name"), "namespace": meta.get("namespace"), "selects_pods": selects,
            "policy_types": types, "restricts_egress": restricts, "allows_mistral": allows_out,
            "could_block_mistral": could_block, "egress_rules": texts, "reason": reason}


class ClusterNetpol(ClusterReads):
    """The network-policy read of `kube.Cluster`."""

    def network_policies(self, namespace: str = "default", selector: str = "app=mistral-service",
                         target_ips: Iterable[str] = ()) -> KubeResult:
        """`kubectl get networkpolicy`, with the ones that could block egress to the Mistral API flagged.

        A policy could block it when it selects the pods (their labels, read from the pods), restricts
        egress, and none of its rules lets TCP 443 out to a public address (or to `target_ips`, when
        the API's addresses are known). Policies add up: egress is blocked only when some policy
        restricts it and none allows it (`data["verdict"]`: blocked, allowed, unrestricted, unknown).
        """
        namespace = params.namespace("namespace", namespace)
        selector = params.label_selector("selector", selector)
        targets = [str(ipaddress.ip_address(t)) for t in target_ips]
        cmd = self.kubectl("get", "networkpolicy", "-n", namespace, "-o", "yaml")

        def run(deadline: float) -> dict[str, Any]:
            net = self.apis().NetworkingV1Api(self.api_client)
            body = self.request(deadline, net, "list_namespaced_network_policy", namespace, verb="list",
                                resource="networkpolicies.networking.k8s.io", namespace=namespace, kubectl=cmd)
            pods = self.list_pods(deadline, namespace, selector, cmd)
            labels = (pods[0]["metadata"].get("labels") or {}) if pods else _labels_from_selector(selector)
            policies = [analyse_policy(p, labels, targets)
                        for p in sorted(body.get("items") or [], key=lambda p: p["metadata"]["name"])]
            restricting = [p for p in policies if p["restricts_egress"]]
            if not restricting:
                verdict = "unrestricted"
                summary = "No NetworkPolicy restricts the pods' egress: it cannot be what blocks the Mistral API."
            elif any(p["allows_mistral"] is True for p in restricting):
                verdict = "allowed"
                names = ", ".join(p["name"] for p in restricting if p["allows_mistral"] is True)
                summary = f"Egress is restricted, and {names} lets TCP 443 out to {MISTRAL_API_HOST}."
            elif any(p["allows_mistral"] is None for p in restricting):
                verdict = "unknown"
                summary = (f"Egress is restricted to specific public ranges: check they hold {MISTRAL_API_HOST}'s "
                           "addresses (pass them as target_ips).")
            else:
                verdict = "blocked"
                summary = (f"Egress to {MISTRAL_API_HOST}:443 is blocked by "
                           f"{', '.join(p['name'] for p in restricting)}: timeouts and connection errors "
                           "to the API are expected.")
            return {"policies": policies, "verdict": verdict, "summary": summary, "pod_labels": labels,
                    "blocking": [p["name"] for p in policies if p["could_block_mistral"]],
                    "target": f"TCP 443 to {', '.join(targets) if targets else 'a public address'} ({MISTRAL_API_HOST})"}

        return self.run("network_policies", cmd, run, rows_key="policies")
