"""A secret store named in one notebook parameter (`secret_store`), selected per deployment.

    ""                                                  the Kubernetes Secret (kube.rotation), as before
    vault+https://vault.example:8200/secret/mistral/prod#api-key   Vault KV v2: mount `secret`, path
                                                        `mistral/prod`, field `api-key` (the default);
                                                        `?namespace=team` for a Vault Enterprise namespace
    gcp://shop-prod/mistral-api-key                     GCP Secret Manager: project, secret

Parsing needs no client library, so a wrong value fails the notebook's first cell, named; the store
itself (and its library) is made only when the rotation runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ParameterError

ACCEPTED = ('"" (the Kubernetes Secret), vault+https://HOST:PORT/MOUNT/PATH#FIELD (Vault KV v2, e.g. '
            'vault+https://vault.example:8200/secret/mistral/prod#api-key) or gcp://PROJECT/SECRET (e.g. '
            "gcp://shop-prod/mistral-api-key)")


@dataclass(frozen=True)
class StoreSpec:
    provider: str  # "vault" or "gcp"
    options: dict[str, str]

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items())


def parse(name: str, value: object) -> StoreSpec | None:
    """The store `value` names (None for the Kubernetes Secret); ParameterError naming `name` otherwise."""
    if value == "" or value is None:
        return None
    if not isinstance(value, str) or len(value) > 500 or not value.isprintable() or "@" in value:
        raise ParameterError(name, value, ACCEPTED + "; no credentials in it")
    parts = urlsplit(value)
    if parts.scheme in ("vault+https", "vault+http"):
        segments = [s for s in parts.path.split("/") if s]
        if not parts.hostname or len(segments) < 2:
            raise ParameterError(name, value, ACCEPTED)
        query = parse_qs(parts.query)
        return StoreSpec("vault", {"addr": f"{parts.scheme[6:]}://{parts.netloc}", "mount": segments[0],
                                   "path": "/".join(segments[1:]), "key": parts.fragment or "api-key",
                                   "namespace": (query.get("namespace") or [""])[0]})
    if parts.scheme == "gcp":
        segments = [s for s in parts.path.split("/") if s]
        if not parts.netloc or len(segments) != 1 or parts.query or parts.fragment:
            raise ParameterError(name, value, ACCEPTED)
        return StoreSpec("gcp", {"project": parts.netloc, "secret": segments[0]})
    raise ParameterError(name, value, ACCEPTED)


def make_store(spec: StoreSpec, *, token_env: str = "VAULT_TOKEN", timeout_s: float = 5.0, ca_bundle: str = "") -> Any:
    """The SecretStore for `spec` (Vault's token from the variable named `token_env`; GCP from ADC)."""
    o = spec.options
    if spec.provider == "vault":
        from .vault import VaultStore

        return VaultStore(o["addr"], o["path"], mount=o["mount"], key=o["key"], token_env=token_env,
                          namespace=o["namespace"], timeout_s=timeout_s, ca_bundle=ca_bundle)
    from .gcp import GcpSecretStore

    return GcpSecretStore(o["project"], o["secret"], timeout_s=timeout_s)
