"""The official `mistralai` SDK (3.x, `mistralai.client`) behaves against the simulator as against the API.

What it parses, streams and raises here is what the fact sheet says it does against api.mistral.ai:
200 -> models, 422 -> HTTPValidationError, other 4xx/5xx -> SDKError with the status, no answer ->
the HTTP library's timeout (the SDK has no retries by default).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from runbook_lib.sim.mistral import MODEL_IDS, MistralSimulator

client_mod = pytest.importorskip("mistralai.client")
Mistral, errors = client_mod.Mistral, client_mod.errors
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def key() -> str:
    return "sim-" + secrets.token_urlsafe(24)


@pytest.fixture
def sim(key: str) -> Iterator[MistralSimulator]:
    with MistralSimulator(api_keys=[key], seed=3) as s:
        yield s


@pytest.fixture
def sdk(sim: MistralSimulator, key: str) -> Mistral:
    return Mistral(api_key=key, server_url=sim.url)


def test_list_and_retrieve_models(sdk: Mistral) -> None:
    listing = sdk.models.list()
    assert [m.id for m in listing.data] == list(MODEL_IDS)
    assert all(type(m).__name__ == "BaseModelCard" for m in listing.data)  # not UnknownModelListData
    small = next(m for m in listing.data if m.id == "mistral-small-latest")
    assert small.aliases == ["mistral-small-2506"] and small.capabilities.vision is True
    assert sdk.models.retrieve(model_id="open-mistral-nemo").id == "open-mistral-nemo"


def test_chat_complete(sdk: Mistral) -> None:
    res = sdk.chat.complete(model="mistral-large-latest", messages=MESSAGES)
    assert res.model == "mistral-large-latest" and res.object == "chat.completion"
    assert res.choices[0].message.content and res.choices[0].finish_reason == "stop"
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens


def test_chat_stream(sdk: Mistral) -> None:
    deltas, finish, usage = [], None, None
    for event in sdk.chat.stream(model="mistral-small-latest", messages=MESSAGES):
        choice = event.data.choices[0]
        deltas.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
        usage = event.data.usage or usage
    text = "".join(deltas)
    assert len(deltas) >= 4 and len(text.split()) > 5
    assert finish == "stop" and usage is not None and usage.total_tokens > 0


def _raised(call) -> Exception:
    with pytest.raises(errors.MistralError) as info:
        call()
    return info.value


@pytest.mark.parametrize("mode,opts,status", [
    ("auth_failure", {}, 401),
    ("rate_limited", {}, 429),
    ("capacity_exceeded", {}, 429),
    ("server_error", {"status": 500}, 500),
    ("server_error", {"status": 502}, 502),
    ("server_error", {"status": 503}, 503),
])
def test_fault_modes_raise_sdkerror(sim: MistralSimulator, sdk: Mistral, mode: str, opts: dict, status: int) -> None:
    sim.set_mode(mode, **opts)
    for call in (sdk.models.list, lambda: sdk.chat.complete(model="mistral-small-latest", messages=MESSAGES)):
        exc = _raised(call)
        assert type(exc) is errors.SDKError and exc.status_code == status
        assert str(exc).startswith(f"API error occurred: Status {status}")


def test_wrong_key_is_sdkerror_401(sim: MistralSimulator) -> None:
    exc = _raised(Mistral(api_key="revoked-key", server_url=sim.url).models.list)
    assert type(exc) is errors.SDKError and exc.status_code == 401 and '"Unauthorized"' in exc.body


def test_invalid_model_is_sdkerror_400(sdk: Mistral) -> None:
    exc = _raised(lambda: sdk.chat.complete(model="mistral-medium-3.5", messages=MESSAGES))
    assert type(exc) is errors.SDKError and exc.status_code == 400 and "invalid_model" in exc.body


def test_validation_error_is_http_validation_error(sdk: Mistral) -> None:
    # the SDK forbids unknown fields itself, so use a value outside the spec's range (temperature <= 1.5)
    exc = _raised(lambda: sdk.chat.complete(model="mistral-small-latest", messages=MESSAGES, temperature=2.0))
    assert type(exc) is errors.HTTPValidationError and exc.status_code == 422
    assert exc.data.detail is None  # the wrapped form puts `detail` under `message` (fact sheet §2)
    assert "less_than_equal" in exc.body


def test_conversations_the_api_cannot_serve_are_sdkerror_400(sim: MistralSimulator, key: str) -> None:
    """`messages=[]` and a last `assistant` message without `prefix: true`: 400, as the real API answers.

    Both are valid under the published schema (no minItems; `prefix` defaults to false), so the SDK
    sends them and the serving layer refuses them: SDKError (not HTTPValidationError), with the body.
    """
    import json

    import httpx2

    sent: list[bytes] = []
    sdk = Mistral(api_key=key, server_url=sim.url, client=httpx2.Client(
        follow_redirects=True, event_hooks={"request": [lambda r: sent.append(r.read())]}))
    empty = _raised(lambda: sdk.chat.complete(model="mistral-small-latest", messages=[]))
    assert type(empty) is errors.SDKError and empty.status_code == 400
    assert json.loads(empty.body) == {"object": "error", "message": "Conversation must have at least one message",
                                      "type": "invalid_request_message_order", "param": None, "code": "3230"}
    history = [*MESSAGES, {"role": "assistant", "content": "Hello"}]
    last = _raised(lambda: sdk.chat.complete(model="mistral-small-latest", messages=history))
    assert type(last) is errors.SDKError and last.status_code == 400
    assert json.loads(last.body)["message"] == ("Expected last role User or Tool (or Assistant with prefix True) "
                                                "for serving but got assistant")
    assert json.loads(sent[0])["messages"] == []  # what the SDK put on the wire
    assert json.loads(sent[1])["messages"][-1].get("prefix", False) is False
    # the same last message marked as a prefix is a request the API serves (it continues the text)
    ok = sdk.chat.complete(model="mistral-small-latest",
                           messages=[*MESSAGES, {"role": "assistant", "content": "Hello", "prefix": True}])
    assert ok.choices[0].finish_reason == "stop"
    with pytest.raises(errors.SDKError, match="got system"):
        sdk.chat.complete(model="mistral-small-latest", messages=[{"role": "system", "content": "Be brief."}])
    tool_last = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "abc123xyz", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "abc123xyz", "name": "f"}]
    assert sdk.chat.complete(model="mistral-small-latest", messages=tool_last).object == "chat.completion"


def test_genuine_rate_limit_is_sdkerror_429(key: str) -> None:
    with MistralSimulator(api_keys=[key], req_per_minute=2) as s:
        sdk = Mistral(api_key=key, server_url=s.url)
        statuses = []
        for _ in range(6):
            try:
                sdk.models.list()
                statuses.append(200)
            except errors.SDKError as exc:
                statuses.append(exc.status_code)
                break
        assert statuses[-1] == 429, statuses


def test_hang_is_a_transport_timeout(sim: MistralSimulator, sdk: Mistral) -> None:
    import httpx2  # what the 3.x SDK uses, imported as httpx inside it

    sim.set_mode("hang")
    t0 = time.monotonic()
    with pytest.raises(httpx2.TimeoutException):
        sdk.models.list(timeout_ms=300)
    assert time.monotonic() - t0 < 2


def test_stopped_simulator_is_connect_error(key: str) -> None:
    import httpx2

    sim = MistralSimulator(api_keys=[key]).start()
    url = sim.url
    sim.stop()
    with pytest.raises(httpx2.ConnectError):
        Mistral(api_key=key, server_url=url).models.list(timeout_ms=2000)
