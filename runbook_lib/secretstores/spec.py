"""A secret store named in one notebook parameter (`secret_store`), selected per deployment.

    ""                                                  the Kubernetes Secret (kube.rotation), as before
    vault+https://vault.example:8200/secret/mistral/prod#api-key   Vault KV v2: mount `secret`, path
                                                        `mistral/prod`, field `api-key` (the default);
                                                        `?namespace=team` for a Vault Enterprise namespace
    gcp://shop-prod/mistral-api-key                     GCP Secret Manager: project, secret
    aws://eu-west-1/prod/mistral-api-key                AWS Secrets Manager: region (empty, `aws:///...`:
                                                        $AWS_REGION), secret name or ARN; `#FIELD` when the
                                                        SecretString is JSON and the key is one field of it

Parsing needs no client library, so a wrong value fails the notebook's first cell, named; the store
itself (and its library) is made only when the rotation runs. Each provider is one entry of `PROVIDERS`
(its scheme(s), how its spec is read, how its store is made).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from ..errors import ParameterError

ACCEPTED = ('"" (the Kubernetes Secret), vault+https://HOST:PORT/MOUNT/PATH#FIELD (Vault KV v2, e.g. '
            'vault+https://vault.example:8200/secret/mistral/prod#api-key), gcp://PROJECT/SECRET (e.g. '
            "gcp://shop-prod/mistral-api-key) or aws://REGION/SECRET[#FIELD] (AWS Secrets Manager, e.g. "
            "aws://eu-west-1/prod/mistral-api-key)")


@dataclass(frozen=True)
class StoreSpec:
    provider: str  # a key of PROVIDERS
    options: dict[str, str]

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items())


def _vault(parts: SplitResult) -> dict[str, str] | None:
    segments = [s for s in parts.path.split("/") if s]
    if not parts.hostname or len(segments) < 2:
        return None
    query = parse_qs(parts.query)
    return {"addr": f"{parts.scheme[6:]}://{parts.netloc}", "mount": segments[0], "path": "/".join(segments[1:]),
            "key": parts.fragment or "api-key", "namespace": (query.get("namespace") or [""])[0]}


def _gcp(parts: SplitResult) -> dict[str, str] | None:
    segments = [s for s in parts.path.split("/") if s]
    if not parts.netloc or len(segments) != 1 or parts.query or parts.fragment:
        return None
    return {"project": parts.netloc, "secret": segments[0]}


def _aws(parts: SplitResult) -> dict[str, str] | None:
    from .aws import REGION, SECRET_ID  # no client library: the patterns only

    secret_id = unquote(parts.path.lstrip("/"))  # a name may hold slashes; an ARN holds colons
    if not SECRET_ID.match(secret_id) or secret_id.endswith("/") or parts.query or (
            parts.netloc and not REGION.match(parts.netloc)):
        return None
    return {"region": parts.netloc, "secret_id": secret_id, "key": parts.fragment}


def _make_vault(o: dict[str, str], *, token_env: str, timeout_s: float, ca_bundle: str) -> Any:
    from .vault import VaultStore

    return VaultStore(o["addr"], o["path"], mount=o["mount"], key=o["key"], token_env=token_env,
                      namespace=o["namespace"], timeout_s=timeout_s, ca_bundle=ca_bundle)


def _make_gcp(o: dict[str, str], *, timeout_s: float, **_: Any) -> Any:
    from .gcp import GcpSecretStore

    return GcpSecretStore(o["project"], o["secret"], timeout_s=timeout_s)


def _make_aws(o: dict[str, str], *, timeout_s: float, **_: Any) -> Any:
    from .aws import AwsSecretStore

    return AwsSecretStore(o["region"], o["secret_id"], key=o["key"], timeout_s=timeout_s)


class Provider(NamedTuple):
    schemes: tuple[str, ...]
    parse: Callable[[SplitResult], dict[str, str] | None]  # None: not a valid spec of this provider
    make: Callable[..., Any]  # (options, *, token_env, timeout_s, ca_bundle) -> SecretStore
    at_allowed: bool = False  # "@" may appear (AWS secret names hold it; elsewhere it would be user:pass@)


PROVIDERS: dict[str, Provider] = {
    "vault": Provider(("vault+https", "vault+http"), _vault, _make_vault),
    "gcp": Provider(("gcp",), _gcp, _make_gcp),
    "aws": Provider(("aws",), _aws, _make_aws, at_allowed=True),
}


def parse(name: str, value: object) -> StoreSpec | None:
    """The store `value` names (None for the Kubernetes Secret); ParameterError naming `name` otherwise."""
    if value == "" or value is None:
        return None
    if not isinstance(value, str) or len(value) > 2600 or not value.isprintable():
        raise ParameterError(name, value, ACCEPTED)
    parts = urlsplit(value)
    for provider, p in PROVIDERS.items():
        if parts.scheme in p.schemes:
            if ("@" in parts.netloc if p.at_allowed else "@" in value):
                raise ParameterError(name, value, ACCEPTED + "; no credentials in it")
            options = p.parse(parts)
            if options is None:
                raise ParameterError(name, value, ACCEPTED)
            return StoreSpec(provider, options)
    raise ParameterError(name, value, ACCEPTED + ("; no credentials in it" if "@" in value else ""))


def make_store(spec: StoreSpec, *, token_env: str = "VAULT_TOKEN", timeout_s: float = 5.0, ca_bundle: str = "") -> Any:
    """The SecretStore for `spec` (Vault's token from the variable named `token_env`; GCP from ADC; AWS from
    boto3's standard chain)."""
    return PROVIDERS[spec.provider].make(spec.options, token_env=token_env, timeout_s=timeout_s, ca_bundle=ca_bundle)
