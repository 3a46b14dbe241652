"""GCP Secret Manager through Google's `google-cloud-secret-manager` client.

Rotation is what Secret Manager recommends: add a new version (readers of `latest` get it), then
disable the version that was latest, so the old key stops being served but is kept for the undo.
Every call is bounded by `timeout_s` with the library's retries off (a rotation must end with a
verdict). Credentials are Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, a
workload identity, `gcloud auth application-default login`): nothing secret passes through here
but the key itself, read from the variable named by `new_key_env`.

The undo re-enables the old version and adds its payload again as the newest version (piped by
gcloud, never shown), then disables the new one: "latest" always names the newest version, so
enabling the old one alone would not give readers the old key back.
"""

from __future__ import annotations

import shlex
from typing import Any

from .. import params
from ..errors import MissingDependency
from ..secrets import fingerprint
from .base import FORBIDDEN, NOT_FOUND, UNAUTHENTICATED, UNREACHABLE, StoreError, Version

ADD, DISABLE, ACCESS = ("secretmanager.versions.add", "secretmanager.versions.disable",
                        "secretmanager.versions.access")


class GcpSecretStore:
    """projects/`project`/secrets/`secret`; the whole payload is the key."""

    provider = "gcp"

    def __init__(self, project: str, secret: str, *, timeout_s: float = 10.0, client: Any = None) -> None:
        self.project = params.text("gcp_project", project, maximum=100, allow_empty=False)
        self.secret = params.text("gcp_secret", secret, maximum=255, allow_empty=False)
        self.timeout_s = params.timeout("timeout_s", timeout_s)
        self.name = f"projects/{self.project}/secrets/{self.secret}"
        self.target = f"gcp {self.name}"
        self._client = client
        self.write_note = ""  # what write() did besides adding (the old version disabled or not)

    def _sm(self) -> Any:
        """The client: the one given (tests use the library's REST transport), else from ADC."""
        if self._client is None:
            try:
                from google.auth.exceptions import DefaultCredentialsError
                from google.cloud import secretmanager
            except ImportError:
                raise MissingDependency("google-cloud-secret-manager", "gcp") from None

            try:
                self._client = secretmanager.SecretManagerServiceClient()
            except DefaultCredentialsError as exc:
                raise StoreError(UNAUTHENTICATED, f"no Google credentials: {str(exc)[:200]}") from None
        return self._client

    def _call(self, what: str, method: str, **request: Any) -> Any:
        client = self._sm()
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax

        try:
            return getattr(client, method)(request=request, retry=None, timeout=self.timeout_s)
        except gx.NotFound as exc:
            raise StoreError(NOT_FOUND, f"{what}: {exc.message}") from None
        except (gx.PermissionDenied, gx.Forbidden) as exc:
            raise StoreError(FORBIDDEN, f"{what}: {exc.message}") from None
        except gx.Unauthenticated as exc:
            raise StoreError(UNAUTHENTICATED, f"{what}: {exc.message}") from None
        except (ax.RefreshError, ax.DefaultCredentialsError) as exc:  # refused, and the credentials cannot renew
            raise StoreError(UNAUTHENTICATED, f"{what}: the credentials were refused and cannot be refreshed "
                                              f"({type(exc).__name__})") from None
        except (gx.GoogleAPICallError, gx.RetryError, ax.TransportError) as exc:
            raise StoreError(UNREACHABLE, f"{what}: {type(exc).__name__}: {str(exc)[:200]}") from None
        except Exception as exc:  # noqa: BLE001 - requests' own errors under the REST transport
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise StoreError(UNREACHABLE, f"{what}: {type(exc).__name__}") from None
            raise

    # -- the SecretStore interface ---------------------------------------------------------------------
    def identity(self) -> tuple[str, str]:
        creds = getattr(getattr(self._sm(), "transport", None), "_credentials", None)
        email = getattr(creds, "service_account_email", "") or ""
        return (str(email), "the credentials' service account") if email and email != "default" else (
            "", "Secret Manager has no who-am-I call; the credentials name no service account")

    def current(self) -> Version:
        self._sm()
        from google.api_core import exceptions as gx

        try:
            resp = self._call("access latest", "access_secret_version", name=f"{self.name}/versions/latest")
        except StoreError as exc:
            if exc.status != NOT_FOUND:
                raise
            self._call("get secret", "get_secret", name=self.name)  # the secret exists, without an enabled version
            return Version(None, None, 0)
        except gx.FailedPrecondition:  # latest is disabled
            return Version(None, None, 0)
        value = resp.payload.data.decode("utf-8").strip()
        version = Version(resp.name.rsplit("/", 1)[1], fingerprint(value), len(value))
        value = ""
        return version

    def can_write(self) -> tuple[bool, str]:
        resp = self._call("testIamPermissions", "test_iam_permissions", resource=self.name,
                          permissions=[ADD, DISABLE, ACCESS])
        granted = list(resp.permissions)
        missing = [p for p in (ADD, DISABLE) if p not in granted]
        return not missing, (f"testIamPermissions on {self.name}: granted {', '.join(granted) or 'none'}"
                             + (f"; missing {', '.join(missing)}" if missing else ""))

    def write(self, new_value: str, before: Version) -> str:
        added = self._call("add version", "add_secret_version", parent=self.name,
                           payload={"data": new_value.encode("utf-8")})
        new_version = added.name.rsplit("/", 1)[1]
        if before.version:
            try:
                self._call("disable old version", "disable_secret_version", name=f"{self.name}/versions/{before.version}")
                self.write_note = f"Version {before.version} disabled."
            except StoreError as exc:  # the new key is in and served; only the old one stays enabled
                self.write_note = f"Version {before.version} NOT disabled ({exc.status}: {exc.message}): disable it by hand."
        return new_version

    def _gcloud(self, *args: str) -> str:
        return shlex.join(["gcloud", "secrets", "versions", *args, f"--project={self.project}"])

    def command(self, env_var: str, before: Version) -> str:
        add = (f'test -n "${env_var}" && printf %s "${env_var}" | '
               + self._gcloud("add", self.secret, "--data-file=-"))
        if not before.version:
            return add
        return add + " && " + self._gcloud("disable", before.version, f"--secret={self.secret}")

    def undo(self, before: Version, new_version: str) -> str:
        return (self._gcloud("enable", str(before.version), f"--secret={self.secret}") + " && "
                + self._gcloud("access", str(before.version), f"--secret={self.secret}") + " | "
                + self._gcloud("add", self.secret, "--data-file=-") + " && "
                + self._gcloud("disable", new_version, f"--secret={self.secret}"))
