import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runbook_lib.runbooks import comms


class _Receiver(BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received = []
    _Receiver.status = 200
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, _Receiver
    srv.shutdown()


def _msgs():
    return comms.render(level="P1", status="INVESTIGATING", impact="Users cannot use AI features",
                        action="Rotating the API key", commander="alice", affected=["Chat assistant"],
                        now=datetime(2026, 11, 23, 10, 7, 30, tzinfo=UTC))


def test_templates_are_filled_with_cadence():
    m = _msgs()
    assert ":red_circle: P1 INCIDENT: Mistral AI Integration" in m.internal
    assert "**Next update**: 10:23 UTC (every 15 min for P1)" in m.internal
    assert "@alice" in m.internal and "[" not in m.internal
    assert "- Chat assistant" in m.external and "Last updated: 2026-11-23 10:07 UTC" in m.external
    assert m.next_update_utc == "2026-11-23T10:23Z"


def test_save_writes_both_files(tmp_path):
    paths = comms.save(_msgs(), tmp_path)
    assert [p.name for p in paths] == ["message-internal-slack.md", "message-external-statuspage.md"]
    assert "P1 INCIDENT" in paths[0].read_text()


def test_post_to_local_webhook(receiver, monkeypatch):
    srv, handler = receiver
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{srv.server_address[1]}/hook")
    result = comms.post_to_slack(_msgs(), "SLACK_WEBHOOK_URL", timeout_s=2)
    assert result["posted"] and handler.received[0]["text"].startswith(":red_circle: P1")
    assert "127.0.0.1" not in result["reason"]


def test_failed_post_is_reported_not_raised(receiver, monkeypatch):
    srv, handler = receiver
    handler.status = 500
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{srv.server_address[1]}/hook")
    assert comms.post_to_slack(_msgs(), "SLACK_WEBHOOK_URL", 2) == {
        "posted": False, "reason": "webhook answered HTTP 500: ok"}
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    assert not comms.post_to_slack(_msgs(), "SLACK_WEBHOOK_URL", 1)["posted"]
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    assert "not set" in comms.post_to_slack(_msgs(), "SLACK_WEBHOOK_URL")["reason"]
