"""Kubernetes, read side: what the seed runbook's `kubectl` commands show, as plain data.

Every read goes through the official `kubernetes` client (configured from a kubeconfig path and
context, or in-cluster), is bounded by one deadline (`timeout_s` for the whole call, however many
requests it makes; no retries), and returns a `KubeResult`: the data (dicts and lists; `.frame()`
gives a pandas DataFrame), the equivalent `kubectl` command, and, when the cluster said no or did
not answer, a `KubeFinding` in words instead of an exception:

- 401 (expired or invalid credentials): "re-authenticate with your cloud provider";
- 403: which verb on which resource was refused, and "escalate to an admin";
- unreachable (refused, timed out, DNS, TLS): the section is unavailable, the runbook goes on.

Nothing here writes to the cluster (the mitigations are in `kube.write`), and no secret value is
ever returned: env values whose name or shape looks secret are replaced by a fingerprint, Secret
data only ever yields a fingerprint, and log lines, event messages and change causes are scrubbed
of tokens.

This module is the public surface; the work is done in layers, each a module:

- `_client`: connecting, one bounded request, refusals as findings (`KubeFinding`, `KubeResult`);
- `read`: pods, events, the deployment, rollout status and history, manifests, a Secret's fingerprint;
- `logs`: error log lines, their classes and groups (`error_logs`, `recent_errors`);
- `netpol`: whether a NetworkPolicy could block egress to the Mistral API;
- `write`: the mitigations, dry run first (imported on its own: `from runbook_lib.kube import write`).

`kubernetes` and `pandas` are imported inside the functions that need them (the verdict path of a
notebook must not pay for them).
"""

from __future__ import annotations

from ..redact import scrub, secret_looking
from ._client import (ERROR, ESCALATE, FORBIDDEN, NOT_FOUND, REAUTH, UNAUTHORIZED, UNREACHABLE, KubeFinding,
                      KubeResult, send)
from .logs import (ERROR_CLASS_LABELS, ERROR_CLASSES, MAX_LOG_REQUESTS, ClusterLogs, classify_error, group_errors,
                   is_error_line, recent_errors)
from .netpol import MISTRAL_API_HOST, ClusterNetpol, analyse_policy
from .read import env_entry

__all__ = [
    "ERROR", "ERROR_CLASSES", "ERROR_CLASS_LABELS", "ESCALATE", "FORBIDDEN", "MAX_LOG_REQUESTS", "MISTRAL_API_HOST",
    "NOT_FOUND", "REAUTH", "UNAUTHORIZED", "UNREACHABLE", "Cluster", "KubeFinding", "KubeResult", "analyse_policy",
    "classify_error", "connect", "env_entry", "group_errors", "is_error_line", "recent_errors", "scrub",
    "secret_looking", "send",
]


class Cluster(ClusterLogs, ClusterNetpol):
    """Read-only views of one cluster. Each method: one deadline of `timeout_s`, a `KubeResult`.

    Pods, events, the deployment and its rollouts come from `read.ClusterReads`, error logs from
    `logs.ClusterLogs`, network policies from `netpol.ClusterNetpol`; requests and findings from
    `_client.ClusterClient`.
    """


def connect(kubeconfig: str = "", context: str = "", timeout_s: float = 5.0) -> Cluster:
    """A `Cluster` from a kubeconfig chosen as kubectl does (the `kubeconfig` path, else $KUBECONFIG, else
    ~/.kube/config), or in-cluster config only inside a pod with none of them (`_client.config_source`).

    Never raises for a bad or expired configuration: the returned Cluster then carries a `finding`
    and every read returns it. Loading is bounded by `timeout_s` too (credential plugins can hang).
    """
    return Cluster.from_kubeconfig(kubeconfig, context, timeout_s)
