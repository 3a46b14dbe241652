"""The secret stores' rows in `runbook doctor` (Vault, GCP Secret Manager, AWS Secrets Manager).

Configured means the environment names the store (what `runbook rotate-key` and `diagnose_auth` would use
without more options); the probe changes nothing and reads no secret value: Vault's `token lookup-self`,
a GET of Secret Manager's endpoint (the Google credentials are not exchanged: that would be the only
check, and it is slow and unbounded in google-auth), and a ListSecrets of one entry in AWS. Credentials
appear as a variable name and fingerprint, failures by status code or exception type only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

from ..notify.base import Configured, secret, setting
from . import aws

GCP_ENDPOINT = "https://secretmanager.googleapis.com/"


def _shown(env_name: str) -> str:
    return str(secret(env_name)).split(": ", 1)[-1]


def _no_userinfo(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)


class VaultCheck:
    """VAULT_ADDR and the token in VAULT_TOKEN (rotate-key's defaults)."""

    name = "vault"

    def configured(self) -> Configured:
        addr, token = setting("VAULT_ADDR"), secret("VAULT_TOKEN")
        missing = ([] if addr else ["VAULT_ADDR"]) + ([] if token.present else ["VAULT_TOKEN"])
        return Configured(not missing, {"VAULT_ADDR": _no_userinfo(addr) or "(unset)",
                                        "VAULT_TOKEN": _shown("VAULT_TOKEN")}, missing)

    def probe(self, timeout_s: float) -> tuple[bool, str]:
        """`GET /v1/auth/token/lookup-self`: Vault answers and accepts the token (any token may look itself up)."""
        import httpx

        addr = setting("VAULT_ADDR").rstrip("/")
        headers = {"X-Vault-Token": secret("VAULT_TOKEN").reveal() or ""}
        if setting("VAULT_NAMESPACE"):
            headers["X-Vault-Namespace"] = setting("VAULT_NAMESPACE")
        try:
            r = httpx.get(f"{addr}/v1/auth/token/lookup-self", headers=headers, timeout=timeout_s,
                          verify=setting("VAULT_CACERT") or True, follow_redirects=False)
        except httpx.HTTPError as exc:
            return False, f"unreachable: {type(exc).__name__}"
        finally:
            headers.clear()
        if r.status_code != 200:
            return False, f"Vault answered HTTP {r.status_code}" + (": the token is refused" if r.status_code == 403 else "")
        try:
            name = str((r.json().get("data") or {}).get("display_name") or "")
        except ValueError:
            name = ""
        lib = "" if importlib.util.find_spec("hvac") else "; hvac is not installed (.venv/bin/pip install -e '.[vault]')"
        return lib == "", f"token accepted (lookup-self{': ' + name if name else ''}){lib}"


class GcpCheck:
    """A service-account file in GOOGLE_APPLICATION_CREDENTIALS (workload identity is not seen without a call)."""

    name = "gcp_secret_manager"

    def configured(self) -> Configured:
        path = setting("GOOGLE_APPLICATION_CREDENTIALS")
        return Configured(bool(path), {"GOOGLE_APPLICATION_CREDENTIALS": path or "(unset; a workload identity is "
                                                                                 "not detected here)"},
                          [] if path else ["GOOGLE_APPLICATION_CREDENTIALS"])

    def probe(self, timeout_s: float) -> tuple[bool, str]:
        import httpx

        path = Path(setting("GOOGLE_APPLICATION_CREDENTIALS"))
        try:
            kind = str(json.loads(path.read_text()).get("type") or "unknown")
        except (OSError, ValueError, AttributeError) as exc:
            return False, f"the credentials file cannot be read as JSON ({type(exc).__name__})"
        if importlib.util.find_spec("google.cloud.secretmanager") is None:
            return False, "google-cloud-secret-manager is not installed: .venv/bin/pip install -e '.[gcp]'"
        try:
            r = httpx.get(GCP_ENDPOINT, timeout=timeout_s)
        except httpx.HTTPError as exc:
            return False, f"{GCP_ENDPOINT} unreachable: {type(exc).__name__}; credentials file type {kind}"
        return True, (f"{GCP_ENDPOINT} answered HTTP {r.status_code}; credentials file type {kind} (not exchanged "
                      "for a token: the rotation's testIamPermissions is the check)")


class AwsCheck:
    """A region in AWS_REGION/AWS_DEFAULT_REGION; credentials from boto3's chain, endpoint from AWS_ENDPOINT_URL."""

    name = "aws_secrets_manager"

    def configured(self) -> Configured:
        region = aws.region_from_env()
        settings = {"AWS_REGION": region or "(unset)"}
        if aws.endpoint_from_env():
            settings["AWS_ENDPOINT_URL"] = aws.endpoint_from_env()
        if setting("AWS_PROFILE"):
            settings["AWS_PROFILE"] = setting("AWS_PROFILE")
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            settings["AWS_ACCESS_KEY_ID"] = _shown("AWS_ACCESS_KEY_ID")
            settings["AWS_SECRET_ACCESS_KEY"] = _shown("AWS_SECRET_ACCESS_KEY")
        elif not setting("AWS_PROFILE"):
            settings["credentials"] = "boto3's chain (web identity, container or instance role, ~/.aws)"
        return Configured(bool(region), settings, [] if region else ["AWS_REGION"])

    def probe(self, timeout_s: float) -> tuple[bool, str]:
        return aws.probe(timeout_s)


def checks() -> list[object]:
    """The doctor's secret-store rows, in README order."""
    return [VaultCheck(), GcpCheck(), AwsCheck()]
