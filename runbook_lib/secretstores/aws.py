"""AWS Secrets Manager through `boto3` (the maintained AWS SDK).

Rotation is `PutSecretValue`: a new version labelled AWSCURRENT (readers get it), and Secrets Manager
moves AWSPREVIOUS to the version that was current, so the old key is kept for the undo. The undo is
`UpdateSecretVersionStage`: AWSCURRENT moved back to the old version id (AWSPREVIOUS then follows to the
new one). The key is the whole SecretString, or one field of a JSON SecretString (`key`), the other
fields written back unchanged. PutSecretValue has no check-and-set: the version is read again just
before the write, so a rotation racing another writer is a `conflict` unless the race is within that gap.

Region, endpoint and credentials come from the environment and boto3's standard chain only
(AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_PROFILE,
AWS_ACCESS_KEY_ID..., web identity, instance role): never parameters. Every call is bounded
(`timeout_s` to connect and to read, one attempt: a rotation must end with a verdict). Secrets Manager
has no dry run and no permission query short of IAM's policy simulator (which needs IAM rights a
rotation role rarely has): the dry run reads the secret's metadata (`DescribeSecret`: it exists, the
credentials are accepted) and says that write permission is known only at the write.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from typing import Any

from .. import params
from ..errors import MissingDependency, ParameterError
from ..secrets import fingerprint
from .base import CONFLICT, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED, UNREACHABLE, StoreError, Version

CURRENT, PREVIOUS = "AWSCURRENT", "AWSPREVIOUS"
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")  # us-east-1, ap-southeast-2, us-gov-west-1
SECRET_ID = re.compile(r"^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$")
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL")
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
DENIED = {"AccessDeniedException", "AccessDenied"}
BAD_CREDENTIALS = {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
                   "SignatureDoesNotMatch", "ExpiredTokenException", "ExpiredToken", "IncompleteSignature"}


def endpoint_from_env() -> str:
    """The endpoint boto3 will use when one is set in the environment ("" = AWS's own), without userinfo."""
    for name in ENDPOINT_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            return re.sub(r"//[^/@]*@", "//", value)
    return ""


def region_from_env() -> str:
    return next((os.environ[n].strip() for n in REGION_ENVS if os.environ.get(n, "").strip()), "")


def make_client(service: str, region: str, timeout_s: float) -> Any:
    """A boto3 client from the standard chain, `timeout_s` to connect and to read, one attempt (no retries)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingDependency("boto3", "aws") from None
    config = Config(region_name=region, connect_timeout=timeout_s, read_timeout=timeout_s,
                    retries={"max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client(service, config=config)


def probe(timeout_s: float) -> tuple[bool, str]:
    """For `runbook doctor`: one ListSecrets (MaxResults=1, reads no value) in the environment's region: the
    endpoint answers and the credentials are accepted. Named by error code or type, never by a message."""
    try:
        from botocore import exceptions as bx
    except ImportError:
        return False, "boto3 is not installed: .venv/bin/pip install -e '.[aws]'"
    where = endpoint_from_env() or "AWS"
    try:
        make_client("secretsmanager", region_from_env(), timeout_s / 2).list_secrets(MaxResults=1)
    except bx.ClientError as exc:
        code = str((exc.response.get("Error") or {}).get("Code") or "")
        if code in DENIED:
            return True, (f"{where} answered; the credentials are accepted but may not ListSecrets ({code}); a "
                          "rotation needs GetSecretValue, DescribeSecret, PutSecretValue on its secret")
        return False, f"{where} answered {code}" + (": the credentials are refused" if code in BAD_CREDENTIALS else "")
    except (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError) as exc:
        return False, f"no usable credentials in boto3's chain ({type(exc).__name__})"
    except (bx.BotoCoreError, OSError) as exc:
        return False, f"unreachable: {type(exc).__name__} from {where}"
    return True, f"{where} answered ListSecrets: the credentials are accepted"


class AwsSecretStore:
    """Secret `secret_id` in `region` ("" = the environment's); the key is the SecretString or its JSON `key`."""

    provider = "aws"

    def __init__(self, region: str, secret_id: str, *, key: str = "", timeout_s: float = 10.0,
                 client: Any = None) -> None:
        region = params.text("aws_region", region, maximum=30).strip() or region_from_env()
        if not REGION.match(region):
            raise ParameterError("aws_region", region, "an AWS region such as eu-west-1 (--aws-region, the "
                                                       "spec's aws://REGION/SECRET, else $AWS_REGION)")
        self.region = region
        self.secret_id = params.text("aws_secret_id", secret_id, maximum=2048, allow_empty=False)
        if not SECRET_ID.match(self.secret_id):
            raise ParameterError("aws_secret_id", self.secret_id, "a secret name (letters, digits, /_+=.@-) or "
                                                                 "its ARN, e.g. prod/mistral-api-key")
        arn_region = self.secret_id.split(":")[3] if self.secret_id.startswith("arn:") else region
        if arn_region != region:
            raise ParameterError("aws_region", region, f"the region of the secret's ARN ({arn_region})")
        self.key = params.text("aws_key", key, maximum=200)
        self.timeout_s = params.timeout("timeout_s", timeout_s)
        self.endpoint = endpoint_from_env()
        where = f" at {self.endpoint}" if self.endpoint else ""
        self.target = f"aws secretsmanager {self.region}/{self.secret_id}" + (f"[{self.key}]" if self.key else "") + where
        self._client = client
        self._sts: Any = None
        self._binary = False  # the current version is a SecretBinary: written back as one
        self.write_note = ""

    def _boto(self, service: str = "secretsmanager") -> Any:
        """A client from boto3's standard chain (region, endpoint and credentials from the environment), bounded."""
        if service == "secretsmanager" and self._client is not None:
            return self._client
        if service == "sts" and self._sts is not None:
            return self._sts
        client = make_client(service, self.region, self.timeout_s)
        if service == "sts":
            self._sts = client
        else:
            self._client = client
        return client

    def _call(self, what: str, method: str, service: str = "secretsmanager", **kwargs: Any) -> Any:
        client = self._boto(service)
        from botocore import exceptions as bx

        try:
            return getattr(client, method)(**kwargs)
        except bx.ClientError as exc:
            err = exc.response.get("Error") or {}
            code, message = str(err.get("Code") or ""), str(err.get("Message") or "")[:200]
            status = (NOT_FOUND if code == "ResourceNotFoundException" else FORBIDDEN if code in DENIED
                      else UNAUTHENTICATED if code in BAD_CREDENTIALS else CONFLICT if code in (
                          "InvalidRequestException", "ResourceExistsException") else UNREACHABLE)
            on = f" of {kwargs['SecretId']}" if "SecretId" in kwargs else ""
            raise StoreError(status, f"{what}{on} answered {code}: {message}") from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError,
                bx.TokenRetrievalError) as exc:
            raise StoreError(UNAUTHENTICATED, f"{what}: no usable AWS credentials in the standard chain "
                                              f"({type(exc).__name__})") from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                bx.ConnectionClosedError, bx.HTTPClientError) as exc:
            raise StoreError(UNREACHABLE, f"{what}: {type(exc).__name__} from "
                                          f"{self.endpoint or 'the AWS endpoint of ' + self.region}") from None

    def _read(self) -> tuple[str, str]:
        """(AWSCURRENT's whole value, its version id), asked by label as readers (External Secrets, SDKs) do."""
        resp = self._call("GetSecretValue", "get_secret_value", SecretId=self.secret_id, VersionStage=CURRENT)
        self._binary = "SecretString" not in resp and "SecretBinary" in resp
        raw = resp.get("SecretString")
        if raw is None:
            raw = bytes(resp.get("SecretBinary") or b"").decode("utf-8", "replace")
        return raw, str(resp.get("VersionId"))

    def _value(self) -> tuple[str | None, str]:
        """(the key as readers get it, or None when the field is absent; AWSCURRENT's version id)."""
        raw, version = self._read()
        if not self.key:
            return raw.strip(), version
        fields = _fields(raw)
        value = fields.pop(self.key, None)
        fields.clear()
        return (value.strip() if isinstance(value, str) else None), version

    # -- the SecretStore interface ---------------------------------------------------------------------
    def identity(self) -> tuple[str, str]:
        try:
            arn = self._call("sts get-caller-identity", "get_caller_identity", service="sts").get("Arn")
        except StoreError as exc:
            return "", f"sts get-caller-identity failed: {exc.status}"
        return str(arn or ""), "STS GetCallerIdentity"

    def current(self) -> Version:
        try:
            value, version = self._value()
        except StoreError as exc:
            if exc.status != NOT_FOUND:
                raise
            self._call("DescribeSecret", "describe_secret", SecretId=self.secret_id)  # exists, without AWSCURRENT
            return Version(None, None, 0)
        if value is None:
            return Version(version, None, 0)
        held = Version(version, fingerprint(value), len(value))
        value = ""
        return held

    def can_write(self) -> tuple[bool, str]:
        meta = self._call("DescribeSecret", "describe_secret", SecretId=self.secret_id)
        if meta.get("DeletedDate"):
            return False, f"DescribeSecret: {self.secret_id} is scheduled for deletion (restore it first)"
        stages = meta.get("VersionIdsToStages") or {}
        return True, (f"DescribeSecret answered ({len(stages)} version(s) labelled); Secrets Manager has no dry run "
                      "or permission query, so PutSecretValue permission (and a resource policy's) is known only "
                      "at the write")

    def write(self, new_value: str, before: Version) -> str:
        raw, version = self._read() if before.version else ("{}", None)
        if version != before.version:
            raw = ""
            raise StoreError(CONFLICT, f"version {version} is AWSCURRENT, not {before.version}: another writer; "
                                       "nothing written, read again")
        payload = new_value
        if self.key:  # the other fields as read with the version just checked
            fields = _fields(raw)
            fields[self.key] = new_value
            payload = json.dumps(fields)
            fields.clear()
        raw = ""
        body: dict[str, Any] = ({"SecretBinary": payload.encode("utf-8")} if self._binary else {"SecretString": payload})
        try:
            resp = self._call("PutSecretValue", "put_secret_value", SecretId=self.secret_id,
                              ClientRequestToken=str(uuid.uuid4()), **body)
        finally:
            payload, body = "", {}
        if before.version:
            self.write_note = f"Version {before.version} is now {PREVIOUS} (kept for the undo)."
        return str(resp.get("VersionId"))

    def _aws(self, *args: str) -> str:
        endpoint = [f"--endpoint-url={self.endpoint}"] if self.endpoint else []
        return shlex.join(["aws", "secretsmanager", *args, f"--region={self.region}", *endpoint])

    def command(self, env_var: str, before: Version) -> str:
        put = self._aws("put-secret-value", f"--secret-id={self.secret_id}", "--secret-string=file:///dev/stdin")
        if not self.key:
            return f'test -n "${env_var}" && printf %s "${env_var}" | ' + put
        get = self._aws("get-secret-value", f"--secret-id={self.secret_id}", "--query=SecretString", "--output=text")
        jq = shlex.join(["jq", "-c", f".[{json.dumps(self.key)}] = env.{env_var}"])  # jq reads the key from the env
        return f'test -n "${env_var}" && {get} | {jq} | {put}'

    def undo(self, before: Version, new_version: str) -> str:
        return self._aws("update-secret-version-stage", f"--secret-id={self.secret_id}", f"--version-stage={CURRENT}",
                         f"--move-to-version-id={before.version}", f"--remove-from-version-id={new_version}")


def _fields(raw: str) -> dict[str, Any]:
    try:
        fields = json.loads(raw)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise StoreError(CONFLICT, "the SecretString is not a JSON object, so it has no field to rotate: "
                                   "drop the #FIELD from the store spec to rotate the whole value")
    return fields
