"""HashiCorp Vault, KV version 2 engine, through `hvac` (the maintained Python client).

The key is one field (`key`) of the secret at `mount`/`path`; the other fields are written back
unchanged. The write is a check-and-set on the version read first (`cas`), so a rotation racing
another writer fails as `conflict` instead of overwriting it. KV v2 keeps every version, so the
undo is `vault kv rollback -version=<old>` (a new version holding the old data). The Vault token is
read from the variable named by `token_env` (default VAULT_TOKEN), never from hvac's own fallbacks
(~/.vault-token), and never recorded.
"""

from __future__ import annotations

import shlex
from typing import Any

from .. import params
from ..errors import MissingDependency
from ..secrets import fingerprint, read_secret
from .base import CONFLICT, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED, UNREACHABLE, StoreError, Version


class VaultStore:
    """`mount`/`path` field `key` in the Vault at `addr` (KV v2)."""

    provider = "vault"

    def __init__(self, addr: str, path: str, *, mount: str = "secret", key: str = "api-key",
                 token_env: str = "VAULT_TOKEN", namespace: str = "", timeout_s: float = 5.0, ca_bundle: str = "",
                 client: Any = None) -> None:
        self.addr = params.url("vault_addr", addr).rstrip("/")
        self.path = params.text("vault_path", path, allow_empty=False).strip("/")
        self.mount = params.text("vault_mount", mount, allow_empty=False).strip("/")
        self.key = params.text("key", key, allow_empty=False)
        self.token_env = params.env_var_name("token_env", token_env)
        self.namespace = params.text("vault_namespace", namespace)
        self.timeout_s = params.timeout("timeout_s", timeout_s)
        self.ca_bundle = params.ca_file("ca_bundle", ca_bundle) if ca_bundle else ""
        self.target = f"vault {self.mount}/{self.path}[{self.key}] at {self.addr}"
        self._client = client

    def _hvac(self) -> Any:
        """The hvac client, made on first use with the token from $token_env (absent: unauthenticated)."""
        if self._client is None:
            try:
                import hvac
            except ImportError:
                raise MissingDependency("hvac", "vault") from None
            token = read_secret(self.token_env)
            if not token.present:
                raise StoreError(UNAUTHENTICATED, f"${self.token_env} is unset or empty: no Vault token")
            self._client = hvac.Client(url=self.addr, token=token.reveal(), namespace=self.namespace or None,
                                       timeout=self.timeout_s, verify=self.ca_bundle or True, allow_redirects=False)
        return self._client

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        import hvac.exceptions as hx
        import requests

        try:
            return fn(**kwargs)
        except hx.InvalidPath as exc:
            raise StoreError(NOT_FOUND, f"{what}: nothing at {self.mount}/{self.path} ({_first(exc)})") from None
        except (hx.Forbidden, hx.Unauthorized) as exc:
            raise StoreError(FORBIDDEN, f"{what}: Vault refused the token ({_first(exc)})") from None
        except hx.InvalidRequest as exc:
            status = CONFLICT if "check-and-set" in str(exc) else FORBIDDEN
            raise StoreError(status, f"{what}: {_first(exc)}") from None
        except (hx.VaultDown, hx.InternalServerError, hx.BadGateway, hx.UnexpectedError,
                requests.RequestException) as exc:
            raise StoreError(UNREACHABLE, f"{what}: {type(exc).__name__} from {self.addr}") from None

    def _read(self) -> tuple[dict[str, Any], str]:
        kv = self._hvac().secrets.kv.v2
        resp = self._call("read", kv.read_secret_version, path=self.path, mount_point=self.mount,
                          raise_on_deleted_version=True)
        data = resp.get("data") or {}
        return dict(data.get("data") or {}), str((data.get("metadata") or {}).get("version"))

    # -- the SecretStore interface ---------------------------------------------------------------------
    def identity(self) -> tuple[str, str]:
        try:
            data = self._call("token lookup-self", self._hvac().auth.token.lookup_self).get("data") or {}
        except StoreError as exc:
            return "", f"token lookup-self failed: {exc.status}"
        return str(data.get("display_name") or data.get("entity_id") or ""), "Vault token lookup-self"

    def current(self) -> Version:
        fields, version = self._read()
        value = fields.pop(self.key, None)
        fields.clear()
        if not isinstance(value, str):
            return Version(version, None, 0)
        return Version(version, fingerprint(value.strip()), len(value.strip()))

    def can_write(self) -> tuple[bool, str]:
        api_path = f"{self.mount}/data/{self.path}"
        resp = self._call("capabilities-self", self._hvac().sys.get_capabilities, paths=[api_path])
        caps = resp.get(api_path) or (resp.get("data") or {}).get(api_path) or resp.get("capabilities") or []
        allowed = "root" in caps or ({"read", "update"} <= set(caps))
        return allowed, f"Vault sys/capabilities-self on {api_path}: {', '.join(caps) or 'none'} (needs read, update)"

    def write(self, new_value: str, before: Version) -> str:
        fields, version = self._read()
        if version != before.version:
            fields.clear()
            raise StoreError(CONFLICT, f"version {version} is current, not {before.version}: another writer; "
                                       "nothing written, read again")
        fields[self.key] = new_value
        kv = self._hvac().secrets.kv.v2
        try:
            resp = self._call("write", kv.create_or_update_secret, path=self.path, secret=fields,
                              cas=int(before.version or 0), mount_point=self.mount)
        finally:
            fields.clear()
        return str((resp.get("data") or {}).get("version"))

    def _vault(self, *args: str) -> str:
        token = f'VAULT_TOKEN="${self.token_env}" ' if self.token_env != "VAULT_TOKEN" else ""
        ns = [f"-namespace={self.namespace}"] if self.namespace else []
        return token + shlex.join(["vault", args[0], args[1], f"-address={self.addr}", *ns, f"-mount={self.mount}",
                                   *args[2:]])

    def command(self, env_var: str, before: Version) -> str:
        cas = [f"-cas={before.version}"] if before.version else []
        return (f'test -n "${env_var}" && printf %s "${env_var}" | '
                + self._vault("kv", "patch", "-method=rw", *cas, self.path, f"{self.key}=-"))

    def undo(self, before: Version, new_version: str) -> str:
        return self._vault("kv", "rollback", f"-version={before.version}", self.path)


def _first(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    return str(errors[0] if isinstance(errors, list) and errors else exc).split(", on ")[0][:200]
