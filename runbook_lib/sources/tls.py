"""TLS settings for outbound calls (Prometheus, the Mistral API, our service): one place, named problems.

httpx reads `SSL_CERT_FILE`/`SSL_CERT_DIR` and `HTTPS_PROXY`/`NO_PROXY` from the environment when it
builds its own SSL context; a custom CA bundle or a client certificate needs a context built here,
which must keep honouring those variables so that setting one parameter does not silently drop the
environment's trust store. Problems name the parameter that caused them, never the file's content.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from ..errors import SourceUnavailable


class TlsSetupError(SourceUnavailable):
    """A CA bundle or client certificate parameter that cannot be used: names the parameter."""

    def __init__(self, parameter: str, reason: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {reason}")


def ssl_context(*, ca_bundle: str = "", client_cert: str = "", client_key: str = "",
                names: tuple[str, str, str] = ("ca_bundle", "client_cert", "client_key")) -> ssl.SSLContext | bool:
    """`verify=` for httpx: True (httpx's own default, environment honoured) unless a CA or cert is given.

    `names` are the parameters' names as the notebook calls them, for the error messages.
    """
    if not (ca_bundle or client_cert):
        return True
    ca_name, cert_name, key_name = names
    try:
        if ca_bundle:
            ctx = ssl.create_default_context(cafile=_readable(ca_name, ca_bundle))
        elif os.environ.get("SSL_CERT_FILE"):
            ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            ctx = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
        else:
            import certifi

            ctx = ssl.create_default_context(cafile=certifi.where())
    except ssl.SSLError as exc:
        raise TlsSetupError(ca_name, f"not a PEM CA bundle ({exc.reason or exc})") from None
    if client_cert:
        cert = _readable(cert_name, client_cert)
        key = _readable(key_name, client_key) if client_key else None
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise TlsSetupError(cert_name if not client_key else f"{cert_name}/{key_name}",
                                f"certificate and key do not load as a PEM pair ({exc.reason or exc})") from None
    return ctx


def _readable(parameter: str, path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise TlsSetupError(parameter, f"no such file: {path}")
    if not os.access(p, os.R_OK):
        raise TlsSetupError(parameter, f"cannot read {path} (permissions)")
    return str(p)


def exception_chain(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """The exception and its causes/contexts/grouped members: anyio buries ECONNREFUSED (and TLS alerts) deep."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack and len(seen) < limit:
        e = stack.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        stack.extend([e.__cause__, e.__context__, *getattr(e, "exceptions", ())])
    return seen


def describe_tls_error(exc: BaseException, *, ca_name: str, cert_name: str) -> str | None:
    """A TLS failure in words that name the parameter to fix; None when `exc` is not about TLS."""
    text = " ".join(repr(e) for e in exception_chain(exc)).lower()
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        return (f"TLS: the server's certificate is not trusted (set {ca_name} to the CA bundle that signed it, "
                "or SSL_CERT_FILE)")
    if "certificate required" in text or "certificate_required" in text or "handshake failure" in text \
            or "bad certificate" in text or "unknown ca" in text:
        return f"TLS: the server refused our client certificate or wants one (check {cert_name})"
    if "wrong version number" in text or "record layer failure" in text:
        return "TLS: the server does not speak TLS on this port (use http://, or the right port)"
    return None
