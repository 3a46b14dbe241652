"""'Our service' simulator: health follows the API's faults, metrics and logs agree with its calls."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runbook_lib.sim._http import wait_until
from runbook_lib.sim.mistral import MistralSimulator
from runbook_lib.sim.service import ServiceSimulator
from runbook_lib.sim.stack import EmbeddedStack

RATE = 100.0  # fast load and a short window: faults show in well under a second


@pytest.fixture
def key() -> str:
    return "sim-" + secrets.token_urlsafe(24)


@pytest.fixture
def sim(key: str) -> Iterator[MistralSimulator]:
    with MistralSimulator(api_keys=[key], req_per_minute=100_000, seed=5) as s:
        yield s


@pytest.fixture
def svc(sim: MistralSimulator, key: str, tmp_path: Path) -> Iterator[ServiceSimulator]:
    with ServiceSimulator(sim.url, key, rate=RATE, window=10, timeout_s=1.0,
                          log_path=str(tmp_path / "service.jsonl")) as s:
        yield s


def _mistral(svc: ServiceSimulator) -> dict:
    return httpx.get(svc.health_url, timeout=2).json()["services"]["mistral"]


def _wait_status(svc: ServiceSimulator, status: str, timeout_s: float = 5) -> bool:
    return wait_until(lambda: _mistral(svc)["status"] == status, timeout_s, 0.05)


def _pause(svc: ServiceSimulator) -> dict:
    """Stop the load through the admin route and wait until nothing is in flight."""
    assert httpx.post(f"{svc.url}/_sim/load", json={"rate": 0}).json() == {"rate": 0.0}
    seen: list[dict] = []

    def settled() -> bool:  # nothing in flight and nothing changed over the last poll
        seen.append(httpx.get(f"{svc.url}/_sim/stats").json())
        return len(seen) > 1 and seen[-1]["in_flight"] == 0 and seen[-1] == seen[-2]

    assert wait_until(settled, 5, 0.1)
    return seen[-1]


def test_unknown_before_any_call(sim: MistralSimulator, key: str) -> None:
    with ServiceSimulator(sim.url, key, rate=0) as s:
        r = httpx.get(s.health_url)
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok"
        m = body["services"]["mistral"]
        assert m["status"] == "unknown" and m["requests"] == 0 and m["last_status"] is None
        assert m["p95_latency_ms"] is None and m["checked_at"].endswith("Z")
        assert s.port > 0 and s.metrics_url == f"{s.url}/metrics"


def test_health_follows_ok_down_degraded(sim: MistralSimulator, svc: ServiceSimulator) -> None:
    assert _wait_status(svc, "ok")
    m = _mistral(svc)
    assert m["error_rate"] == 0 and m["last_status"] == "200" and m["last_error"] is None
    assert 0 < m["requests"] <= 10 and m["p95_latency_ms"] < 500

    sim.set_mode("auth_failure")
    assert _wait_status(svc, "down")
    r = httpx.get(svc.health_url)
    assert r.status_code == 503 and r.json()["status"] == "down"
    m = r.json()["services"]["mistral"]
    assert m["error_rate"] == 1.0 and m["last_status"] == "401"
    assert m["last_error"] == "mistral request failed: 401 Unauthorized"

    sim.set_mode("flaky", fail_fraction=0.5)
    assert _wait_status(svc, "degraded")
    r = httpx.get(svc.health_url)
    assert r.status_code == 200 and r.json()["status"] == "degraded"
    assert 0 < r.json()["services"]["mistral"]["error_rate"] < 1


def test_rate_limit_shows_in_last_error(sim: MistralSimulator, svc: ServiceSimulator) -> None:
    sim.set_mode("rate_limited")
    assert _wait_status(svc, "down")
    m = _mistral(svc)
    assert m["last_status"] == "429" and m["last_error"] == "mistral request failed: 429 rate_limited"


def test_refused_connection_is_code_000(key: str) -> None:
    dead = MistralSimulator(api_keys=[key]).start()
    url = dead.url
    dead.stop()
    with ServiceSimulator(url, key, rate=RATE, window=5, timeout_s=0.5) as s:
        assert _wait_status(s, "down")
        m = _mistral(s)
        assert m["last_status"] == "000" and m["last_error"].startswith("mistral request failed: 000 ConnectError")


def test_hang_is_timeout_000_and_stop_is_bounded(sim: MistralSimulator, key: str) -> None:
    sim.set_mode("hang")
    s = ServiceSimulator(sim.url, key, rate=RATE, window=4, timeout_s=0.3, max_concurrency=4).start()
    try:
        assert _wait_status(s, "down", 5)
        assert _mistral(s)["last_status"] == "000" and "ReadTimeout" in _mistral(s)["last_error"]
        assert s.stats()["skipped"] > 0  # saturated: ticks skipped, threads not multiplied
    finally:
        t0 = time.monotonic()
        s.stop()
        assert time.monotonic() - t0 < 2.5


def test_metrics_families_labels_and_counts_match_stats(sim: MistralSimulator, svc: ServiceSimulator) -> None:
    sim.set_mode("flaky", fail_fraction=0.5)
    assert wait_until(lambda: svc.stats()["completed"] >= 40, 5, 0.05)
    stats = _pause(svc)
    r = httpx.get(svc.metrics_url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {"mistral_requests", "mistral_errors", "mistral_request_duration_seconds"} <= set(families)
    assert families["mistral_requests"].type == "counter" and families["mistral_errors"].type == "counter"
    assert families["mistral_request_duration_seconds"].type == "histogram"

    requests = {(s.labels["model"], s.labels["code"]): s.value
                for s in families["mistral_requests"].samples if s.name == "mistral_requests_total"}
    errors = {(s.labels["model"], s.labels["code"]): s.value
              for s in families["mistral_errors"].samples if s.name == "mistral_errors_total"}
    expected = {(model, code): n for model, codes in stats["by_model"].items() for code, n in codes.items()}
    assert requests == expected
    assert {m for m, _ in requests} == {"mistral-small-latest", "mistral-large-latest"}
    assert {c for _, c in requests} >= {"200"} and {c for _, c in errors} <= {"429", "503"}
    assert errors == {k: v for k, v in expected.items() if k[1] != "200"} and errors
    assert sum(errors.values()) == stats["errors"]

    buckets = [s for s in families["mistral_request_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["model"] == "mistral-small-latest"]
    bounds = [s.labels["le"] for s in buckets]
    assert float(bounds[0]) == 0.01 and "30.0" in bounds and bounds[-1] == "+Inf"
    count = next(s.value for s in families["mistral_request_duration_seconds"].samples
                 if s.name.endswith("_count") and s.labels["model"] == "mistral-small-latest")
    assert count == sum(stats["by_model"]["mistral-small-latest"].values())


def test_two_services_in_one_process_have_separate_registries(sim: MistralSimulator, key: str) -> None:
    with ServiceSimulator(sim.url, key, rate=RATE) as a, ServiceSimulator(sim.url, key, rate=0) as b:
        assert wait_until(lambda: a.stats()["completed"] > 5, 5, 0.05)
        assert "mistral_requests_total{" in httpx.get(a.metrics_url).text
        assert "mistral_requests_total{" not in httpx.get(b.metrics_url).text


def test_log_lines_are_json_with_errors_and_no_key(sim: MistralSimulator, svc: ServiceSimulator, key: str,
                                                   tmp_path: Path) -> None:
    assert _wait_status(svc, "ok")
    sim.set_mode("rate_limited")
    assert _wait_status(svc, "down")
    _pause(svc)
    text = (tmp_path / "service.jsonl").read_text()
    assert key not in text and key[4:12] not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(set(line) == {"ts", "level", "msg", "model", "code", "latency_ms", "correlation_id"} for line in lines)
    assert all(line["ts"].endswith("Z") for line in lines)
    infos = [line for line in lines if line["level"] == "info"]
    errs = [line for line in lines if line["level"] == "error"]
    assert infos and all(line["code"] == "200" for line in infos)
    assert errs and all(line["code"] == "429" and line["msg"] == "mistral request failed: 429 rate_limited"
                        for line in errs)
    assert all(line["correlation_id"] for line in lines)
    assert len(lines) == svc.stats()["completed"]


def test_load_admin_validation_and_pacing(sim: MistralSimulator, key: str) -> None:
    with ServiceSimulator(sim.url, key, rate=0) as s:
        assert httpx.post(f"{s.url}/_sim/load", json={"rate": -1}).status_code == 400
        assert httpx.post(f"{s.url}/_sim/load", json={"speed": 1}).status_code == 400
        assert httpx.post(f"{s.url}/_sim/load", content=b"nope").status_code == 400
        time.sleep(0.3)
        assert s.stats()["sent"] == 0
        assert httpx.post(f"{s.url}/_sim/load", json={"rate": 40}).status_code == 200
        time.sleep(1.0)
        sent = s.stats()["sent"]
        assert 25 <= sent <= 55, sent
        by_model = _pause(s)["by_model"]
        small, large = (sum(by_model[m].values()) for m in ("mistral-small-latest", "mistral-large-latest"))
        assert abs(small - large) <= 1  # round-robin


def test_missing_key_service_sees_401(sim: MistralSimulator) -> None:
    with ServiceSimulator(sim.url, None, rate=RATE, window=5) as s:
        assert _wait_status(s, "down")
        assert _mistral(s)["last_status"] == "401"


def test_unknown_service_route_is_404(svc: ServiceSimulator) -> None:
    assert httpx.get(f"{svc.url}/nope").status_code == 404


def test_embedded_stack_wiring_and_bounded_stop(key: str) -> None:
    stack = EmbeddedStack(api_key=key, rate=RATE, window=5, timeout_s=0.5).start()
    try:
        assert stack.mistral_url == stack.mistral.url and stack.service_health_url.endswith("/health")
        assert stack.service.mistral_url == stack.mistral_url
        assert stack.wait_for_service_status({"ok"}, 5)
        stack.set_mode("server_error", status=502)
        assert stack.wait_for_service_status({"down"}, 5)
        assert stack.service.health()["services"]["mistral"]["last_status"] == "502"
        stack.set_mode("hang")
        time.sleep(0.2)  # calls now hanging inside the simulator
    finally:
        t0 = time.monotonic()
        stack.stop()
        assert time.monotonic() - t0 < 2.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(stack.service_health_url, timeout=1)
    with pytest.raises(TypeError, match="unknown option"):
        EmbeddedStack(api_key=key, colour="red")
