"""The Mistral API simulator against the fact sheet: routes, bodies, headers, fault modes, lifecycle."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import pytest

from runbook_lib.sim.mistral import MODEL_IDS, MODES, MistralSimulator

HEX32 = re.compile(r"^[0-9a-f]{32}$")
CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "Is the API up today?"}]}


@pytest.fixture
def key() -> str:
    return "sim-" + secrets.token_urlsafe(24)


@pytest.fixture
def sim(key: str) -> Iterator[MistralSimulator]:
    with MistralSimulator(api_keys=[key], seed=1) as s:
        yield s


@pytest.fixture
def client(sim: MistralSimulator, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {key}"}, timeout=5) as c:
        yield c


def _limits(r: httpx.Response) -> dict[str, int]:
    return {k: int(v) for k, v in r.headers.items() if k.startswith("x-ratelimit-")}


# -- routes ------------------------------------------------------------------------------------

def test_port_zero_reports_real_port_and_url_has_no_v1(sim: MistralSimulator) -> None:
    assert sim.port > 0 and sim.url == f"http://127.0.0.1:{sim.port}"
    assert httpx.get(f"{sim.url}/_sim/health").json() == {"ok": True}


def test_models_list_every_alias_is_its_own_card(client: httpx.Client) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert 10 <= len(ids) <= 15 and len(set(ids)) == len(ids)
    assert {"mistral-small-latest", "mistral-large-latest", "mistral-medium-latest", "codestral-latest",
            "open-mistral-nemo"} <= set(ids)
    cards = {m["id"]: m for m in body["data"]}
    assert len({m["created"] for m in body["data"]}) == 1
    assert abs(body["data"][0]["created"] - time.time()) < 5
    for m in body["data"]:
        assert m["type"] == "base" and m["object"] == "model" and m["owned_by"] == "mistralai"
        assert m["capabilities"]["completion_chat"] is True
        for alias in m["aliases"]:  # symmetric: each alias lists the others
            assert set(cards[alias]["aliases"]) | {alias} == set(m["aliases"]) | {m["id"]}
    assert set(cards["mistral-medium-latest"]["aliases"]) == {"mistral-medium-2508", "mistral-medium"}


def test_model_card_and_unknown_model(client: httpx.Client) -> None:
    card = client.get("/v1/models/codestral-latest").json()
    assert card["id"] == "codestral-latest" and card["capabilities"]["completion_fim"] is True
    r = client.get("/v1/models/mistral-medium-3-5-26-04")
    assert r.status_code == 404
    assert r.json() == {"object": "error", "message": "Invalid model: mistral-medium-3-5-26-04",
                        "type": "invalid_model", "param": None, "code": "1500", "raw_status_code": 404}


def test_chat_completion_shape(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["id", "object", "model", "usage", "created", "choices"]
    assert HEX32.match(body["id"]) and body["object"] == "chat.completion"
    assert body["model"] == "mistral-small-latest"
    u = body["usage"]
    assert 0 < u["prompt_tokens"] < 30 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["message"]["tool_calls"] is None and choice["message"]["prefix"] is False
    assert int(r.headers["x-ratelimit-tokens-query-cost"]) == u["total_tokens"]


def test_prompt_tokens_grow_with_the_prompt(client: httpx.Client) -> None:
    short = client.post("/v1/chat/completions", json=CHAT).json()["usage"]["prompt_tokens"]
    long_chat = dict(CHAT, messages=[{"role": "user", "content": "word " * 200}])
    long = client.post("/v1/chat/completions", json=long_chat).json()["usage"]["prompt_tokens"]
    assert long > short + 150


def test_chat_stream_sse(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/chat/completions", json=dict(CHAT, stream=True)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert len(chunks) >= 4
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["total_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(text.split()) > 5


def test_extra_field_is_422_extra_forbidden(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=dict(CHAT, max_completion_tokens=32000))
    assert r.status_code == 422
    assert r.json() == {"object": "error", "message": {"detail": [
        {"type": "extra_forbidden", "loc": ["body", "max_completion_tokens"], "msg": "Extra inputs are not permitted",
         "input": 32000}]}, "type": "invalid_request_error", "param": None, "code": None}


def test_missing_required_field_is_422(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"model": "mistral-small-latest"})
    assert r.status_code == 422
    detail = r.json()["message"]["detail"]
    assert [(d["type"], d["loc"]) for d in detail] == [("missing", ["body", "messages"])]
    assert client.post("/v1/chat/completions", content=b"{not json").status_code == 422


def test_unknown_model_is_400_invalid_model(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=dict(CHAT, model="mistral-medium-3.5"))
    assert r.status_code == 400
    assert r.json() == {"object": "error", "message": "Invalid model: mistral-medium-3.5", "type": "invalid_model",
                        "param": None, "code": "1500", "raw_status_code": 400}


def test_unknown_route_is_kong_404_before_auth(sim: MistralSimulator) -> None:
    r = httpx.get(f"{sim.url}/v1/chat/models")
    assert r.status_code == 404
    body = r.json()
    assert body["message"] == "no Route matched with those values" and HEX32.match(body["request_id"])


# -- auth --------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Bearer"},
                                     {"Authorization": "Basic abc"}])
def test_bad_or_missing_key_is_401(sim: MistralSimulator, headers: dict[str, str]) -> None:
    r = httpx.get(f"{sim.url}/v1/models", headers=headers)
    assert r.status_code == 401 and r.json() == {"detail": "Unauthorized"}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["mistral-correlation-id"]


def test_no_configured_keys_accepts_any_bearer() -> None:
    with MistralSimulator() as s:
        assert httpx.get(f"{s.url}/v1/models", headers={"Authorization": "Bearer anything"}).status_code == 200
        assert httpx.get(f"{s.url}/v1/models").status_code == 401


def test_request_log_never_holds_the_key(sim: MistralSimulator, client: httpx.Client, key: str) -> None:
    client.get("/v1/models")
    httpx.get(f"{sim.url}/v1/models")
    log = httpx.get(f"{sim.url}/_sim/requests").json()["requests"]
    assert [(e["method"], e["path"], e["status"], e["auth_present"]) for e in log] == [
        ("GET", "/v1/models", 200, True), ("GET", "/v1/models", 401, False)]
    assert all(e["time"].endswith("Z") for e in log)
    assert key not in repr(sim.requests) and key not in httpx.get(f"{sim.url}/_sim/requests").text


# -- rate-limit headers and real windows ---------------------------------------------------------

def test_ratelimit_headers_count_down(client: httpx.Client) -> None:
    first = client.get("/v1/models")
    second = client.post("/v1/chat/completions", json=CHAT)
    a, b = _limits(first), _limits(second)
    assert first.headers["mistral-correlation-id"] != second.headers["mistral-correlation-id"]
    assert a["x-ratelimit-limit-req-minute"] == 720 and a["x-ratelimit-limit-tokens-minute"] == 5_000_000
    assert 1 <= a["x-ratelimit-reset-req-minute"] <= 60
    if b["x-ratelimit-reset-req-minute"] <= a["x-ratelimit-reset-req-minute"]:  # same minute window
        assert b["x-ratelimit-remaining-req-minute"] == a["x-ratelimit-remaining-req-minute"] - 1
        assert (b["x-ratelimit-remaining-tokens-minute"]
                == a["x-ratelimit-remaining-tokens-minute"] - b["x-ratelimit-tokens-query-cost"])


def test_genuine_429_when_requests_per_minute_exhausted(key: str) -> None:
    with MistralSimulator(api_keys=[key], req_per_minute=3) as s, \
            httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {key}"}) as c:
        codes = []
        for _ in range(8):  # 8 > 2 windows' worth: a minute boundary cannot hide the limit
            r = c.get("/v1/models")
            codes.append(r.status_code)
            if r.status_code == 429:
                break
        assert codes[-1] == 429, codes
        assert r.json()["type"] == "rate_limited" and r.json()["code"] == "1300"
        assert r.headers["x-ratelimit-limit-req-minute"] == "3"
        assert r.headers["x-ratelimit-remaining-req-minute"] == "0"


def test_genuine_429_when_tokens_per_minute_exhausted(key: str) -> None:
    with MistralSimulator(api_keys=[key], tokens_per_minute=50) as s, \
            httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {key}"}) as c:
        codes = [c.post("/v1/chat/completions", json=CHAT).status_code for _ in range(5)]
        assert 429 in codes and codes[0] == 200, codes


# -- fault modes -------------------------------------------------------------------------------

def test_auth_failure_mode(sim: MistralSimulator, client: httpx.Client) -> None:
    sim.set_mode("auth_failure")
    for r in (client.get("/v1/models"), client.post("/v1/chat/completions", json=CHAT)):
        assert r.status_code == 401 and r.json() == {"detail": "Unauthorized"}


def test_rate_limited_mode(sim: MistralSimulator, client: httpx.Client) -> None:
    sim.set_mode("rate_limited")
    r = client.get("/v1/models")
    assert r.status_code == 429
    assert r.json() == {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "param": None,
                        "code": "1300", "raw_status_code": 429}
    assert r.headers["x-ratelimit-limit-req-minute"] == "0"
    assert r.headers["x-ratelimit-remaining-req-minute"] == "0"
    assert r.headers["mistral-correlation-id"]


def test_capacity_exceeded_mode_keeps_nonzero_remaining(sim: MistralSimulator, client: httpx.Client) -> None:
    sim.set_mode("capacity_exceeded")
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 429
    assert r.json() == {"object": "error", "message": "Service tier capacity exceeded for this model.",
                        "type": "invalid_request_error", "param": None, "code": None}
    assert int(r.headers["x-ratelimit-remaining-req-minute"]) > 0
    assert int(r.headers["x-ratelimit-limit-req-minute"]) == 720


@pytest.mark.parametrize("status,expected", [
    (500, {"detail": "Internal Server Error"}),
    (502, {"message": "An invalid response was received from the upstream server"}),
    (503, {"object": "error", "message": "Service unavailable", "type": "server_error", "param": None, "code": None,
           "raw_status_code": 503}),
])
def test_server_error_mode(sim: MistralSimulator, client: httpx.Client, status: int, expected: dict) -> None:
    sim.set_mode("server_error", status=status)
    r = client.get("/v1/models")
    assert r.status_code == status
    body = r.json()
    body.pop("request_id", None)
    assert body == expected


def test_slow_mode_adds_latency(sim: MistralSimulator, client: httpx.Client) -> None:
    sim.set_mode("slow", latency_s=0.3)
    t0 = time.monotonic()
    assert client.get("/v1/models").status_code == 200
    assert time.monotonic() - t0 >= 0.3


def test_flaky_mode_fails_a_fraction(key: str) -> None:
    with MistralSimulator(api_keys=[key], mode="flaky", fail_fraction=0.5, seed=7) as s, \
            httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {key}"}) as c:
        codes = [c.get("/v1/models").status_code for _ in range(80)]
    assert set(codes) <= {200, 429, 503} and {200, 429, 503} <= set(codes)
    failed = sum(code != 200 for code in codes) / len(codes)
    assert 0.3 < failed < 0.7


def test_hang_mode_times_out_client_and_stop_releases(key: str) -> None:
    sim = MistralSimulator(api_keys=[key], mode="hang").start()
    headers = {"Authorization": f"Bearer {key}"}
    try:
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{sim.url}/v1/models", headers=headers, timeout=0.5)
        assert time.monotonic() - t0 < 2
        outcome: dict[str, object] = {}

        def waiting_client() -> None:
            try:
                outcome["status"] = httpx.get(f"{sim.url}/v1/models", headers=headers, timeout=10).status_code
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        t = threading.Thread(target=waiting_client)
        t.start()
        time.sleep(0.3)
    finally:
        t0 = time.monotonic()
        sim.stop()
        stop_s = time.monotonic() - t0
    t.join(5)
    assert stop_s < 1.0
    assert not t.is_alive() and isinstance(outcome.get("error"), httpx.RemoteProtocolError | httpx.ReadError)


def test_hang_released_by_mode_change(sim: MistralSimulator, key: str) -> None:
    sim.set_mode("hang")
    result: dict[str, int] = {}
    t = threading.Thread(target=lambda: result.update(status=httpx.get(
        f"{sim.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code))
    t.start()
    time.sleep(0.3)
    assert "status" not in result
    sim.set_mode("ok")
    t.join(3)
    assert result == {"status": 200}


def test_modes_apply_to_v1_only(sim: MistralSimulator) -> None:
    sim.set_mode("hang")
    assert httpx.get(f"{sim.url}/_sim/health", timeout=2).json() == {"ok": True}
    assert httpx.get(f"{sim.url}/feed.rss", timeout=2).status_code == 200


def test_stopped_simulator_refuses_connections(key: str) -> None:
    sim = MistralSimulator(api_keys=[key]).start()
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=2) as c:
        assert c.get(f"{sim.url}/v1/models").status_code == 200  # leaves a pooled keep-alive connection
        sim.stop()
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            c.get(f"{sim.url}/v1/models")  # the pooled connection was dropped, not served
        with pytest.raises(httpx.ConnectError):
            c.get(f"{sim.url}/v1/models")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.url}/v1/models", timeout=2)


# -- admin -------------------------------------------------------------------------------------

def test_admin_mode_roundtrip(sim: MistralSimulator, client: httpx.Client) -> None:
    assert httpx.get(f"{sim.url}/_sim/mode").json() == {"mode": "ok", "status": 503, "latency_s": 3.0,
                                                         "fail_fraction": 0.3}
    r = httpx.post(f"{sim.url}/_sim/mode", json={"mode": "server_error", "status": 502})
    assert r.status_code == 200 and r.json()["mode"] == "server_error" and r.json()["status"] == 502
    assert client.get("/v1/models").status_code == 502
    assert httpx.post(f"{sim.url}/_sim/mode", json={"mode": "ok"}).json()["mode"] == "ok"
    assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize("payload,needle", [
    ({"mode": "meltdown"}, "accepted modes"),
    ({"mode": "server_error", "status": 404}, "status"),
    ({"mode": "flaky", "fail_fraction": 1.5}, "fail_fraction"),
    ({"mode": "slow", "latency_s": -1}, "latency_s"),
    ({"mode": "ok", "colour": "red"}, "unknown field"),
])
def test_admin_mode_validation(sim: MistralSimulator, payload: dict, needle: str) -> None:
    r = httpx.post(f"{sim.url}/_sim/mode", json=payload)
    assert r.status_code == 400 and needle in r.json()["error"]
    if payload["mode"] == "meltdown":
        assert all(m in r.json()["error"] for m in MODES)
    assert sim.mode == "ok"
    with pytest.raises(ValueError, match="accepted modes"):
        sim.set_mode("meltdown")


def test_request_log_is_bounded(key: str) -> None:
    with MistralSimulator(api_keys=[key]) as s, httpx.Client(base_url=s.url) as c:
        for _ in range(1010):
            c.get("/v1/nope")
        assert len(c.get("/_sim/requests").json()["requests"]) == 1000


# -- status page feed --------------------------------------------------------------------------

def _newest_item(sim: MistralSimulator) -> ET.Element:
    r = httpx.get(f"{sim.url}/feed.rss")
    assert r.status_code == 200 and "xml" in r.headers["content-type"]
    root = ET.fromstring(r.text)
    assert root.tag == "rss" and root.findtext("channel/title") == "Mistral AI Status Page"
    items = root.findall("channel/item")
    assert items and all(i.findtext("pubDate") and i.findtext("guid") for i in items)
    return items[0]


def test_feed_rss_follows_incident_modes(sim: MistralSimulator) -> None:
    newest = _newest_item(sim)
    assert "Status: Resolved" in newest.findtext("description", "")
    sim.set_mode("server_error", status=503)
    newest = _newest_item(sim)
    assert newest.findtext("title") == "Chat API Degraded"
    assert "Status: Investigating" in newest.findtext("description", "")
    assert "<li>Chat API</li>" in newest.findtext("description", "")
    assert re.match(r"https://status\.mistral\.ai/incident/[0-9a-f]{8}$", newest.findtext("link", ""))
    sim.set_mode("ok")
    resolved = _newest_item(sim)
    assert "Status: Resolved" in resolved.findtext("description", "")
    assert resolved.findtext("link") == newest.findtext("link")


def test_model_ids_constant_matches_listing(client: httpx.Client) -> None:
    assert tuple(m["id"] for m in client.get("/v1/models").json()["data"]) == MODEL_IDS
