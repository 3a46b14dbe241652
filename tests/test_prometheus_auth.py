"""Prometheus access against the REAL Debian `prometheus` started with `--web.config.file`.

Two genuine servers scrape the simulated service: one with TLS and basic auth (bcrypt hash), one
with TLS that requires a client certificate. Prometheus has no bearer-token auth of its own, so the
bearer mode is proven through a small aiohttp gateway (as kube-rbac-proxy or an OAuth proxy would
stand in front of it): it answers 401 unless `Authorization: Bearer <token>` is exactly right, then
forwards to the basic-auth server with its own credentials. Each mode is shown to work (real data
comes back) and to fail with the parameter named, never the secret; `promtool check web-config`
accepts both web configs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runbook_lib import params
from runbook_lib.errors import ParameterError, SourceUnavailable
from runbook_lib.sources import metrics
from runbook_lib.sources.metrics import Prometheus
from tls_support import TestCA

pytestmark = pytest.mark.xdist_group("prometheus")

USER = "oncall"
SERIES = "mistral_requests_total"


def _free_port() -> int:
    from runbook_lib.sim._daemon import free_port

    return free_port()


class RealPrometheus:
    """The Debian binary with a scrape config and a web config (TLS, auth), ready-checked with them."""

    def __init__(self, binary: str, folder: Path, web_config: str, targets: list[str], client: dict[str, Any]):
        self.folder, self.port = folder, _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.web = folder / "web.yml"
        self.web.write_text(web_config)
        jobs = "".join(f"  - job_name: {service}\n    static_configs:\n      - targets: [\"{t}\"]\n"
                       f"        labels: {{namespace: prod, service: {service}}}\n"
                       for service, t in (("api", targets[0]), ("batch", targets[0])))
        (folder / "prometheus.yml").write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}")
        self.log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", f"--web.config.file={self.web}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"], stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"https://127.0.0.1:{self.port}"
        self.client = client  # httpx options that get through: for the readiness and data waits only
        self._wait(lambda c: c.get(f"{self.url}/-/ready").status_code == 200, 20, "ready")

    def _wait(self, check: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, **self.client) as c:
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if check(c):
                        return
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                time.sleep(0.2)
        tail = (self.folder / "prometheus.log").read_text(errors="replace")[-800:]
        self.stop()
        raise AssertionError(f"prometheus not {what} within {timeout_s} s: {tail}")

    def wait_for_data(self) -> None:
        def has(c: httpx.Client) -> bool:  # both jobs scraped, with a rate over the shortest window used
            r = c.get(f"{self.url}/api/v1/query",
                      params={"query": f"sum by (service) (rate({SERIES}[5s])) > 0"}).json()
            return len(r["data"]["result"]) == 2
        self._wait(has, 30, "scraping")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


class BearerGateway:
    """aiohttp in a thread: 401 unless `Authorization: Bearer <token>`; then forwards to `upstream`.

    Records the `X-Scope-OrgID` it saw (the extra-headers mode) and never logs the token.
    """

    def __init__(self, token: str, upstream: str, upstream_ssl: ssl.SSLContext, upstream_auth: tuple[str, str]):
        self.token, self.upstream, self.upstream_ssl, self.upstream_auth = token, upstream, upstream_ssl, upstream_auth
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tenants: list[str | None] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bearer-gateway")
        self._thread.start()
        assert self._ready.wait(10), "gateway did not start"

    def _run(self) -> None:
        from aiohttp import ClientSession, TCPConnector, web

        async def handle(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.Response(status=401, text="Unauthorized\n")
            self.tenants.append(request.headers.get("X-Scope-OrgID"))
            basic = "Basic " + base64.b64encode(":".join(self.upstream_auth).encode()).decode()
            async with ClientSession(connector=TCPConnector(ssl=self.upstream_ssl)) as s:
                async with s.get(self.upstream + request.path, params=request.query,
                                 headers={"Authorization": basic}) as r:
                    return web.Response(status=r.status, body=await r.read(), content_type="application/json")

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/{tail:.*}", handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())
        self._loop.run_forever()

    def stop(self) -> None:
        async def down() -> None:
            await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()  # else its self-pipe sockets surface as ResourceWarnings in a later test


@pytest.fixture(scope="module")
def servers(require_binary, tmp_path_factory) -> Iterator[dict[str, Any]]:
    import bcrypt

    from runbook_lib.sim.stack import EmbeddedStack

    binary = require_binary("prometheus")
    folder = tmp_path_factory.mktemp("prom-auth")
    ca = TestCA(folder / "pki")
    server, client = ca.server(), ca.client()
    password = "pw-" + secrets.token_urlsafe(18)
    token = "tok-" + secrets.token_urlsafe(24)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()  # cost 4: fast, still bcrypt
    tls = f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n"
    web_basic = tls + f"basic_auth_users:\n  {USER}: {hashed}\n"
    web_mtls = tls + f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca.cert}\n"
    trust = ssl.create_default_context(cafile=str(ca.cert))
    with_cert = ssl.create_default_context(cafile=str(ca.cert))
    with_cert.load_cert_chain(str(client.cert), str(client.key))
    key = "sim-" + secrets.token_urlsafe(24)
    started: list[Any] = []
    try:
        with EmbeddedStack(api_key=key, rate=10.0) as stack:
            target = stack.service.url.split("://", 1)[1]
            basic = RealPrometheus(binary, folder / "basic", web_basic, [target],
                                   {"verify": trust, "auth": (USER, password)})
            started.append(basic)
            mtls = RealPrometheus(binary, folder / "mtls", web_mtls, [target], {"verify": with_cert})
            started.append(mtls)
            gateway = BearerGateway(token, basic.url, trust, (USER, password))
            started.append(gateway)
            basic.wait_for_data()
            mtls.wait_for_data()
            token_file = folder / "token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            yield {"basic": basic, "mtls": mtls, "gateway": gateway, "ca": ca, "client": client,
                   "password": password, "token": token, "token_file": token_file, "folder": folder,
                   "web_configs": [basic.web, mtls.web], "stack": stack, "key": key}
    finally:
        for s in reversed(started):
            s.stop()


def _no_secret(result: Any, *secret_values: str) -> None:
    text = json.dumps(result.to_dict() if hasattr(result, "to_dict") else result)
    for value in secret_values:
        assert value not in text


def test_promtool_accepts_both_web_configs(servers, require_binary):
    out = subprocess.run([require_binary("promtool"), "check", "web-config", *map(str, servers["web_configs"])],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (out.stdout + out.stderr).count("SUCCESS") == 2, out.stdout + out.stderr


def test_basic_auth_over_tls_with_the_ca_bundle_reads_real_series(servers, monkeypatch):
    monkeypatch.setenv("PROM_PASSWORD", servers["password"])
    prom = Prometheus(servers["basic"].url, username=USER, password_env="PROM_PASSWORD",
                      ca_bundle=str(servers["ca"].cert))
    result = metrics.instant_sync(prom, SERIES, 5)
    assert result.status == metrics.OK, result.error
    assert {s["labels"]["service"] for s in result.series} == {"api", "batch"}
    # the same credentials for range queries and the config read (evidence, 5xx history)
    assert metrics.scrape_interval(prom, 5) == 1.0
    frame = metrics.range_query(prom, f"sum(rate({SERIES}[5s]))", time.time() - 20, time.time(), 2, 5)
    assert len(frame) > 0 and frame["value"].notna().any()


def test_wrong_password_is_unavailable_naming_the_parameter_never_the_secret(servers, monkeypatch):
    wrong = "nope-" + secrets.token_urlsafe(12)
    monkeypatch.setenv("PROM_PASSWORD", wrong)
    prom = Prometheus(servers["basic"].url, username=USER, password_env="PROM_PASSWORD",
                      ca_bundle=str(servers["ca"].cert))
    result = metrics.instant_sync(prom, SERIES, 5)
    assert result.status == metrics.UNAVAILABLE
    assert "HTTP 401" in result.error and "prometheus_password_env" in result.error and "$PROM_PASSWORD" in result.error
    _no_secret(result, wrong, servers["password"])
    with pytest.raises(SourceUnavailable, match="prometheus_password_env") as exc:
        metrics.range_query(prom, SERIES, time.time() - 10, time.time(), 2, 5)
    assert wrong not in str(exc.value)
    # no credentials at all: the message says which parameters to set
    bare = metrics.instant_sync(Prometheus(servers["basic"].url, ca_bundle=str(servers["ca"].cert)), SERIES, 5)
    assert bare.status == metrics.UNAVAILABLE and "prometheus_username" in bare.error


def test_password_env_unset_is_named(servers, monkeypatch):
    monkeypatch.delenv("PROM_PASSWORD", raising=False)
    prom = Prometheus(servers["basic"].url, username=USER, password_env="PROM_PASSWORD",
                      ca_bundle=str(servers["ca"].cert))
    result = metrics.instant_sync(prom, SERIES, 5)
    assert result.status == metrics.UNAVAILABLE and "$PROM_PASSWORD is not set" in result.error


def test_untrusted_certificate_names_the_ca_parameter_and_ssl_cert_file_works(servers, monkeypatch):
    monkeypatch.setenv("PROM_PASSWORD", servers["password"])
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    prom = Prometheus(servers["basic"].url, username=USER, password_env="PROM_PASSWORD")
    result = metrics.instant_sync(prom, SERIES, 5)
    assert result.status == metrics.UNAVAILABLE and "prometheus_ca_bundle" in result.error, result.error
    # httpx's environment: SSL_CERT_FILE alone is enough (and a CA parameter that is not a file is named)
    monkeypatch.setenv("SSL_CERT_FILE", str(servers["ca"].cert))
    assert metrics.instant_sync(prom, SERIES, 5).status == metrics.OK
    missing = Prometheus(servers["basic"].url, username=USER, password_env="PROM_PASSWORD",
                         ca_bundle=str(servers["folder"] / "no-such-ca.pem"))
    r = metrics.instant_sync(missing, SERIES, 5)
    assert r.status == metrics.UNAVAILABLE and r.error.startswith("prometheus_ca_bundle: no such file")


def test_client_certificate_is_required_and_accepted(servers):
    ca, client = servers["ca"], servers["client"]
    good = Prometheus(servers["mtls"].url, ca_bundle=str(ca.cert), client_cert=str(client.cert),
                      client_key=str(client.key))
    result = metrics.instant_sync(good, SERIES, 5)
    assert result.status == metrics.OK, result.error
    assert metrics.scrape_interval(good, 5) == 1.0
    without = metrics.instant_sync(Prometheus(servers["mtls"].url, ca_bundle=str(ca.cert)), SERIES, 5)
    assert without.status == metrics.UNAVAILABLE and "prometheus_client_cert" in without.error, without.error
    swapped = Prometheus(servers["mtls"].url, ca_bundle=str(ca.cert), client_cert=str(client.cert),
                         client_key=str(ca.pair.key))  # a key that is not the certificate's
    r = metrics.instant_sync(swapped, SERIES, 5)
    assert r.status == metrics.UNAVAILABLE and "prometheus_client_cert/prometheus_client_key" in r.error


def test_bearer_token_from_a_file_and_extra_headers_through_a_gateway(servers, tmp_path):
    gw = servers["gateway"]
    prom = Prometheus(gw.url, bearer_token_file=str(servers["token_file"]),
                      headers=params.request_headers("prometheus_headers", "X-Scope-OrgID: tenant-a"))
    before = len(gw.tenants)
    result = metrics.instant_sync(prom, SERIES, 5)
    assert result.status == metrics.OK, result.error
    assert {s["labels"]["service"] for s in result.series} == {"api", "batch"}  # real data via Prometheus
    assert gw.tenants[before:] == ["tenant-a"]
    wrong = tmp_path / "wrong-token"
    wrong.write_text("tok-" + secrets.token_urlsafe(24))
    refused = metrics.instant_sync(Prometheus(gw.url, bearer_token_file=str(wrong)), SERIES, 5)
    assert refused.status == metrics.UNAVAILABLE
    assert "HTTP 401" in refused.error and "prometheus_bearer_token_file" in refused.error
    _no_secret(refused, wrong.read_text(), servers["token"])
    gone = metrics.instant_sync(Prometheus(gw.url, bearer_token_file=str(tmp_path / "absent")), SERIES, 5)
    assert gone.status == metrics.UNAVAILABLE and gone.error.startswith("prometheus_bearer_token_file: cannot read")


def test_metrics_selector_scopes_every_query_to_our_series(servers):
    prom = Prometheus(servers["mtls"].url, ca_bundle=str(servers["ca"].cert), client_cert=str(servers["client"].cert),
                      client_key=str(servers["client"].key),
                      selector=params.metrics_selector("metrics_selector", '{namespace="prod",service="api"}'))
    scoped = metrics.instant_sync(prom, SERIES, 5)
    assert scoped.status == metrics.OK
    assert scoped.query == f'{SERIES}{{namespace="prod",service="api"}}'
    assert scoped.series and {s["labels"]["service"] for s in scoped.series} == {"api"}
    # the triage queries (sum by model) count one job's requests, not both
    both = asyncio.run(metrics.triage_metrics(Prometheus(prom.url, ca_bundle=prom.ca_bundle,
                                                         client_cert=prom.client_cert, client_key=prom.client_key),
                                              "10s", 5))
    ours = asyncio.run(metrics.triage_metrics(prom, "10s", 5))
    assert 'service="api"' in ours["requests_per_model"].query
    total = sum(s["value"] for s in both["requests_per_model"].series)
    api = sum(s["value"] for s in ours["requests_per_model"].series)
    assert total > 0 and api == pytest.approx(total / 2, rel=0.25)  # the same target scraped as two services


@pytest.mark.parametrize("given, name", [
    ({"prometheus_bearer_token_file": "/t", "prometheus_username": "u"}, "prometheus_bearer_token_file"),
    ({"prometheus_password_env": "PROM_PASSWORD"}, "prometheus_username"),
    ({"prometheus_client_key": "/k"}, "prometheus_client_cert"),
    ({"prometheus_password_env": "hunter2-not-a-name!"}, "prometheus_password_env"),
    ({"prometheus_headers": "Authorization: Bearer abc"}, "prometheus_headers"),
    ({"metrics_selector": 'up or vector(1)'}, "metrics_selector"),
])
def test_access_parameters_refused_together_naming_the_parameter(given, name):
    with pytest.raises(ParameterError) as exc:
        params.prometheus_access(**given)
    assert exc.value.name == name
    assert "abc" not in str(exc.value)


@pytest.mark.notebook
def test_triage_with_basic_auth_and_with_wrong_credentials(servers, monkeypatch, run_triage, tmp_path):
    """The notebook path: right credentials give the metrics step; wrong ones leave it unavailable, named."""
    stack = servers["stack"]
    monkeypatch.setenv("MISTRAL_API_KEY", servers["key"])
    common = dict(prometheus_url=servers["basic"].url, prometheus_username=USER,
                  prometheus_password_env="PROM_PASSWORD", prometheus_ca_bundle=str(servers["ca"].cert),
                  metrics_selector='{service="api"}', metrics_window="10s", samples=1)
    monkeypatch.setenv("PROM_PASSWORD", servers["password"])
    good = run_triage(stack, **common)
    assert good.ok, good.error
    from runbook_lib.record import read_records

    step = read_records(good.notebook_path)["error_rate"]
    assert step["status"] == "ok" and step["per_model"], step
    assert all('service="api"' in q for q in step["queries"].values() if "mistral_" in q)
    wrong = "bad-" + secrets.token_urlsafe(16)
    monkeypatch.setenv("PROM_PASSWORD", wrong)
    bad = run_triage(stack, **common, incident_id="wrongpw")
    assert bad.ok, bad.error  # a verdict, not a crash
    step = read_records(bad.notebook_path)["error_rate"]
    assert step["status"] == "unavailable" and "prometheus_password_env" in step["reason"]
    assert any("metrics" in s for s in bad.verdict["unavailable"])
    for path in [*Path(good.record_dir).rglob("*"), *Path(bad.record_dir).rglob("*")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert wrong not in text and servers["password"] not in text, path


def test_evidence_range_exports_with_credentials_and_scoped_or_listed_missing(servers, monkeypatch, tmp_path,
                                                                             dead_port):
    """The evidence bundle's metrics through basic auth over TLS, scoped by the selector; refused: missing, named."""
    from runbook_lib.records import collect as evidence

    cfg = tmp_path / "kc"  # an unreachable cluster: only the metrics part matters here
    cfg.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "x",
                               "clusters": [{"name": "x", "cluster": {"server": f"http://127.0.0.1:{dead_port}"}}],
                               "users": [{"name": "x", "user": {"token": "t"}}],
                               "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
    monkeypatch.setenv("PROM_PASSWORD", servers["password"])
    prom = Prometheus(servers["basic"].url, username=USER, password_env="PROM_PASSWORD",
                      ca_bundle=str(servers["ca"].cert), selector='service="api"')
    end = time.time()
    manifest = evidence.collect(tmp_path, "ok", start=end - 30, end=end, kubeconfig=str(cfg), prometheus_url=prom,
                                secrets=[servers["password"]], timeout_s=3.0)
    exported = {f["path"]: f for f in manifest["files"] if f["path"].startswith("metrics/")}
    assert "metrics/requests_total_by_model_code.csv" in exported, manifest["missing"]
    assert 'service="api"' in exported["metrics/requests_total_by_model_code.csv"]["source"]
    monkeypatch.setenv("PROM_PASSWORD", "wrong-" + secrets.token_urlsafe(12))
    refused = evidence.collect(tmp_path, "refused", start=end - 30, end=end, kubeconfig=str(cfg),
                               prometheus_url=prom, timeout_s=3.0)
    missing = [m for m in refused["missing"] if m["what"].startswith("metrics")]
    assert len(missing) == 1 and "HTTP 401" in missing[0]["reason"] and "prometheus_password_env" in missing[0]["reason"]
    everything = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert servers["password"] not in everything


def test_the_password_env_is_a_secret_env_refused_as_a_parameter_value(monkeypatch):
    from runbook_lib.secrets import check_no_secret_values

    value = "pw-" + secrets.token_urlsafe(12)
    monkeypatch.setenv("PROM_PASS_PLAIN", value)  # a name the secret-name pattern alone would not catch
    check_no_secret_values({"operator": value})  # not named by any parameter: not known as a secret
    with pytest.raises(ParameterError) as exc:
        check_no_secret_values({"prometheus_password_env": "PROM_PASS_PLAIN", "operator": value})
    assert exc.value.name == "operator" and value not in str(exc.value)
