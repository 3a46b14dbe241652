"""Network diagnosis of the path to the Mistral API, one phase at a time.

curl's `000` (and an httpx timeout) says only that something on the way failed. Measuring DNS
resolution, TCP connect, TLS handshake and time to first byte separately says which: a slow
resolver, a black-holed egress (TCP never completes), a TLS-intercepting proxy, or a slow API.
Each phase has its own bound; a failed phase ends the measurement with its reason.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
              "NO_PROXY", "no_proxy")


@dataclass
class Phase:
    name: str
    ok: bool
    ms: float | None
    detail: str


@dataclass
class NetReport:
    url: str
    host: str
    port: int
    addresses: list[str] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    failed_phase: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proxy_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Proxy variables as set, with any credentials in them masked."""
    env = os.environ if environ is None else environ
    out = {}
    for name in PROXY_VARS:
        if name in env:
            value = env[name]
            parts = urlsplit(value) if "://" in value else None
            if parts and (parts.username or parts.password):
                value = value.replace(parts.netloc, f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else ""))
            out[name] = value
    return out


async def _phase(name: str, coro: Any, timeout_s: float) -> tuple[Phase, Any]:
    t0 = time.perf_counter()
    try:
        value = await asyncio.wait_for(coro, timeout_s)
    except (asyncio.TimeoutError, TimeoutError):
        return Phase(name, False, None, f"no answer within {timeout_s:g} s"), None
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Phase(name, False, round((time.perf_counter() - t0) * 1000, 1), f"{type(exc).__name__}: {exc}"), None
    return Phase(name, True, round((time.perf_counter() - t0) * 1000, 1), ""), value


async def diagnose(url: str, timeout_s: float = 5.0, path: str = "/v1/models", ca_bundle: str = "") -> NetReport:
    """Resolve, connect, handshake (https) and wait for the first byte of `GET path` (no key sent).

    Direct, never through a proxy (the proxy variables are reported separately); the handshake
    trusts `ca_bundle` when given, else the system store (which honours `SSL_CERT_FILE`).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    report = NetReport(url, host, port)
    loop = asyncio.get_running_loop()

    phase, infos = await _phase("dns", loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s)
    report.phases.append(phase)
    if not phase.ok:
        report.failed_phase = "dns"
        return report
    report.addresses = sorted({info[4][0] for info in infos})
    phase.detail = ", ".join(report.addresses)
    family, _, _, _, sockaddr = infos[0]

    phase, conn = await _phase("tcp", asyncio.open_connection(sockaddr[0], port), timeout_s)
    phase.detail = phase.detail or f"connected to {sockaddr[0]}:{port}"
    report.phases.append(phase)
    if not phase.ok:
        report.failed_phase = "tcp"
        return report
    reader, writer = conn
    try:
        if tls:
            ctx = ssl.create_default_context(cafile=ca_bundle or None)
            phase, _ = await _phase("tls", writer.start_tls(ctx, server_hostname=host), timeout_s)
            if phase.ok:
                cipher = writer.get_extra_info("cipher")
                phase.detail = f"{writer.get_extra_info('ssl_object').version()} {cipher[0] if cipher else ''}"
            report.phases.append(phase)
            if not phase.ok:
                report.failed_phase = "tls"
                return report
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mistral-runbooks-netdiag\r\n"
                   "Accept: application/json\r\nConnection: close\r\n\r\n").encode()
        writer.write(request)

        async def first_line() -> bytes:
            await writer.drain()
            return await reader.readline()

        phase, line = await _phase("first_byte", first_line(), timeout_s)
        if phase.ok:
            phase.detail = (line or b"").decode("latin-1").strip() or "connection closed without an answer"
            phase.ok = bool(line)
        report.phases.append(phase)
        if not phase.ok:
            report.failed_phase = "first_byte"
    finally:
        writer.close()
    return report
