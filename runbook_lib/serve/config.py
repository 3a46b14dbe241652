"""`runbook serve`'s settings (ServeConfig) and the checks of its exposure: who can reach it, over what.

Without a token, serve listens on loopback only unless `insecure` (anyone who can reach it could start
runs and choose their labels); with `tls_cert` and `tls_key` it speaks HTTPS. Each refusal is a
ParameterError naming the option, raised before anything is bound or written.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from .labelmap import LabelMap

DEFAULT_PORT = 9095
DEFAULT_TOKEN_ENV = "RUNBOOK_SERVE_TOKEN"


@dataclass
class JobSettings:
    """`--dispatch kubernetes`: where and how each incident's Job runs (dispatch.py builds the spec)."""

    image: str = ""
    namespace: str = "mistral-runbooks"
    service_account: str = "mistral-runbooks"  # the read-only one of deploy/kubernetes/rbac.yaml
    output_dir: str = ""  # what the Job's respond writes to (s3://bucket/prefix in a cluster); "" = --output-dir
    api_key_secret: str = "mistral-api-key"  # Secret holding MISTRAL_API_KEY, mounted as env, never a parameter
    kubeconfig: str = ""  # serve's own connection ("" = $KUBECONFIG, ~/.kube/config or in-cluster)
    context: str = ""
    ttl_s: int = 86400  # ttlSecondsAfterFinished: the record lives in the archive, the Job object a day
    max_jobs: int = 100  # Jobs followed at once (in flight); more wait, spooled
    poll_s: float = 1.0  # one LIST of serve's Jobs per poll, however many are followed
    start_grace_s: float = 300.0  # beyond --run-timeout: scheduling and image pull before activeDeadline counts


@dataclass
class ServeConfig:
    """Everything `serve` needs; the CLI fills it from flags."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    output_dir: Path = Path("outputs")
    state_dir: Path | None = None  # default: <output_dir>/.serve (not an incident: the archive skips it)
    workers: int = 2
    warm: int = 2  # standbys kept ready (imports done, a fresh kernel each; runner.StandbyPool); 0: cold runs
    queue_max: int = 100
    max_body_bytes: int = 1024 * 1024
    max_connections: int = 64  # open connections at once; more are answered 503 and closed
    header_timeout_s: float = 10.0  # a new connection's request headers must arrive within this
    body_timeout_s: float = 30.0  # a body must arrive within this of its headers (408)
    run_timeout_s: float = 1800.0
    grace_s: float = 10.0
    token_env: str = DEFAULT_TOKEN_ENV
    correlate: bool = True  # a new alert joins the incident of its service that is already firing
    label_map: LabelMap = field(default_factory=LabelMap)  # service identity + parameters from labels
    tls_cert: Path | None = None  # PEM certificate (chain); with tls_key, serve speaks HTTPS
    tls_key: Path | None = None
    insecure: bool = False  # allow a non-loopback address without a token
    parameters: dict[str, Any] = field(default_factory=dict)  # passed to every `respond`
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "runbook_lib"])
    dispatch: str = "local"  # how a respond runs: dispatch.DISPATCHERS (local subprocess, kubernetes Job)
    job: JobSettings = field(default_factory=JobSettings)

    @property
    def state(self) -> Path:
        return Path(self.state_dir) if self.state_dir else Path(self.output_dir) / ".serve"


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not host:
        return False  # all interfaces
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def check_exposure(config: ServeConfig) -> None:
    """Refuse a non-loopback address with no token, unless `insecure`: anyone reaching it could start runs."""
    if config.insecure or is_loopback(config.host) or os.environ.get(config.token_env, ""):
        return
    raise ParameterError("--listen", f"{config.host}:{config.port}",
                         f"a loopback address (127.0.0.1, ::1, localhost) while no token is set (${config.token_env} "
                         "is empty): set the token (--token-env names its variable) so webhooks must carry it, "
                         "or pass --insecure to listen on this address without one")


def tls_context(config: ServeConfig) -> ssl.SSLContext | None:
    """The server-side TLS context from --tls-cert/--tls-key, or None; errors name the option."""
    cert, key = config.tls_cert, config.tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing, given = ("--tls-cert", key) if cert is None else ("--tls-key", cert)
        raise ParameterError(missing, None, f"a PEM file, given together with {'--tls-key' if cert is None else '--tls-cert'}"
                                            f" ({given}): both or neither")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise ParameterError(option, str(path), "a readable PEM file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise ParameterError("--tls-cert", str(cert), f"a PEM certificate matching the private key in --tls-key "
                                                      f"({key}); OpenSSL said: {exc.reason or exc}") from None
    except OSError as exc:
        raise ParameterError("--tls-key", str(key), f"a readable PEM private key ({exc.strerror or exc})") from None
    return context
