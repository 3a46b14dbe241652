"""`runbook serve` on aiohttp: HTTPS with --tls-cert/--tls-key (a CA and certificate made here with
`cryptography`), and the refusal to listen beyond loopback with no token unless --insecure."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.serve.server import AlertServer, ServeConfig, is_loopback
from runbook_lib.sim._http import wait_until

RUNBOOK = Path(sys.executable).parent / "runbook"
TOKEN = "tls-test-" + "5b7e0c2a9d41f3e8"


def _pki(folder: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict[str, Path]:
    """A throwaway CA and a server certificate it signed for `names`; PEM files in `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "runbook-serve test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n) for n in names]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": folder / "ca.pem", "cert": folder / "serve.pem", "key": folder / "serve-key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


def _payload(name: str = "SomeoneElses") -> dict:
    return {"version": "4", "groupKey": "g", "status": "firing", "receiver": "runbook-serve", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
            "alerts": [{"status": "firing", "labels": {"alertname": name}, "annotations": {},
                        "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "ab12"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_https_with_the_given_certificate_and_the_token(tmp_path, monkeypatch):
    pki = _pki(tmp_path)
    monkeypatch.setenv("TLS_TEST_TOKEN", TOKEN)
    config = ServeConfig(port=0, output_dir=tmp_path / "outputs", warm=0, token_env="TLS_TEST_TOKEN",
                         tls_cert=pki["cert"], tls_key=pki["key"])
    with AlertServer(config, log=open(os.devnull, "w")) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with httpx.Client(verify=ssl.create_default_context(cafile=str(pki["ca"])), timeout=10) as client:
            assert client.get(f"{srv.url}/healthz").json() == {"status": "ok"}
            refused = client.post(f"{srv.url}/webhook", json=_payload())
            assert refused.status_code == 401 and "credentials" in refused.text
            ok = client.post(f"{srv.url}/webhook", json=_payload(), headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200 and ok.json() == {"accepted": 0, "ignored": 1, "queued": 0}
            tls = client.get(f"{srv.url}/metrics")
            assert 'runbook_serve_webhooks_total{outcome="accepted"} 1.0' in tls.text
        # a client that does not trust the CA is refused by the handshake; plain HTTP gets no answer
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{srv.url}/healthz", timeout=5)
        with pytest.raises(httpx.HTTPError):
            httpx.get(srv.url.replace("https://", "http://") + "/healthz", timeout=5)


@pytest.mark.parametrize("files, option, text", [
    (("cert", None), "--tls-key", "both or neither"),
    ((None, "key"), "--tls-cert", "both or neither"),
    (("cert", "missing"), "--tls-key", "readable PEM file"),
    (("cert", "other-key"), "--tls-cert", "matching the private key"),
    (("ca", "key"), "--tls-cert", "matching the private key"),
])
def test_tls_options_are_checked_naming_them(tmp_path, files, option, text):
    pki = _pki(tmp_path)
    pki["missing"] = tmp_path / "nope.pem"
    (tmp_path / "other").mkdir()
    pki["other-key"] = _pki(tmp_path / "other")["key"]  # a valid key, not the certificate's
    cert, key = (pki[f] if f else None for f in files)
    server = AlertServer(ServeConfig(port=0, output_dir=tmp_path / "outputs", warm=0, tls_cert=cert, tls_key=key),
                         log=open(os.devnull, "w"))
    with pytest.raises(ParameterError) as err:
        server.start()
    assert err.value.name == option and text in str(err.value)
    assert server.ssl_context is None and not server._workers  # refused before binding or starting workers


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.3.4.5") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("")
    assert not is_loopback("192.0.2.10") and not is_loopback("no-such-host.invalid")


def _serve(port: int, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(RUNBOOK), "serve", "--listen", f"0.0.0.0:{port}", "--output-dir",
                             str(tmp_path / "outputs"), *extra], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "serve.log", "ab"), env=env)


def test_no_token_beyond_loopback_is_refused_unless_insecure(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_SERVE_TOKEN"}
    refused = subprocess.run([str(RUNBOOK), "serve", "--listen", f"0.0.0.0:{port}", "--output-dir",
                              str(tmp_path / "outputs")], capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 2, refused.stderr
    assert "'--listen'" in refused.stderr and "--insecure" in refused.stderr and "RUNBOOK_SERVE_TOKEN" in refused.stderr
    assert not (tmp_path / "outputs").exists()

    for extra, run_env in ((("--insecure",), env), ((), {**env, "RUNBOOK_SERVE_TOKEN": TOKEN})):
        proc = _serve(port, tmp_path, *extra, env=run_env)
        try:
            assert wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200,
                              20), (tmp_path / "serve.log").read_text()
            webhook = httpx.post(f"http://127.0.0.1:{port}/webhook", json=_payload(), timeout=5)
            assert webhook.status_code == (200 if extra else 401), webhook.text
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        assert proc.returncode == 0
    log = (tmp_path / "serve.log").read_text()
    assert "--insecure: anyone who reaches this address can start runs" in log
    assert TOKEN not in log


def test_a_taken_port_is_named_with_its_option(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([str(RUNBOOK), "serve", "--listen", f"127.0.0.1:{port}", "--output-dir",
                              str(tmp_path / "outputs")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "'--listen'" in out.stderr and "in use" in out.stderr, out.stderr


def test_stop_drops_pooled_keepalive_connections(tmp_path):
    """A client holding a keep-alive connection cannot reach a stopped server through it."""
    srv = AlertServer(ServeConfig(port=0, output_dir=tmp_path / "outputs"), log=open(os.devnull, "w")).start()
    client = httpx.Client(timeout=3)
    try:
        assert client.get(f"{srv.url}/healthz").status_code == 200
        srv.close()
        with pytest.raises(httpx.HTTPError):
            client.get(f"{srv.url}/healthz")
    finally:
        client.close()
        srv.close()


def test_the_real_alertmanager_delivers_over_https_with_the_shipped_route(stack, tmp_path, monkeypatch,
                                                                         require_binary):
    """The shipped alertmanager.yml (webhook URL https://, its tls_config ca_file and bearer token file
    filled in, group_wait shortened) delivers a Mistral alert to serve over TLS: one incident."""
    import yaml

    from runbook_lib.records.incident import read_index
    from runbook_lib.sim.alertmanager import BINARY, LocalAlertmanager

    require_binary(BINARY)
    pki = _pki(tmp_path)
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setenv("RUNBOOK_SERVE_TOKEN", TOKEN)
    stack.set_mode("auth_failure")
    assert stack.wait_for_service_status({"down", "degraded"}, timeout_s=10)
    config = ServeConfig(port=0, output_dir=tmp_path / "outputs", warm=0, tls_cert=pki["cert"], tls_key=pki["key"],
                         parameters={"prometheus_url": "", "timeout_s": 2.0, "mistral_url": stack.mistral_url,
                                     "service_health_url": stack.service_health_url})
    with AlertServer(config, log=open(tmp_path / "serve.log", "w")) as srv:
        shipped = yaml.safe_load((Path(__file__).resolve().parent.parent / "deploy" / "alertmanager"
                                  / "alertmanager.yml").read_text())
        shipped["route"].update(group_wait="1s", group_interval="1s")
        hook = next(r for r in shipped["receivers"] if r["name"] == "runbook-serve")["webhook_configs"][0]
        assert hook["url"].startswith("http://127.0.0.1:")
        hook["url"] = f"{srv.url}/webhook"
        hook["http_config"]["authorization"]["credentials_file"] = str(tmp_path / "token")
        hook["http_config"]["tls_config"] = {"ca_file": str(pki["ca"])}

        class ShippedRoute(LocalAlertmanager):
            def config_text(self) -> str:
                return yaml.safe_dump(shipped)

        with ShippedRoute(hook["url"]) as am:
            labels = {"alertname": "MistralAuthFailures", "severity": "page", "error_class": "auth",
                      "namespace": "shop", "service": "checkout"}
            posted = httpx.post(f"{am.url}/api/v2/alerts", timeout=5, json=[
                {"labels": labels, "annotations": {"runbook": "diagnose_auth", "summary": "401s"}}])
            assert posted.status_code == 200, posted.text
            outputs = tmp_path / "outputs"
            found = lambda: [read_index(p) for p in outputs.iterdir()  # noqa: E731
                             if p.is_dir() and not p.name.startswith(".") and read_index(p)]
            assert wait_until(lambda: [i for i in found() if i.get("status") in ("triaged", "diagnosed", "failed")],
                              60, 0.3), f"{am.log_tail()}\n{(tmp_path / 'serve.log').read_text()}"
    [incident] = found()
    assert incident["source"] == "alertmanager" and incident["alert"]["name"] == "MistralAuthFailures"
    assert incident["service"] == {"namespace": "shop", "service": "checkout"}
    assert incident["status"] == "diagnosed" and incident["error_class"] == "auth", incident
