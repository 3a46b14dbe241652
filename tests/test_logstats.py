import json

from runbook_lib.sources.logstats import estimate_error_rate, parse


def _line(model, code):
    return json.dumps({"ts": "2026-11-23T10:00:00Z", "level": "error" if code != "200" else "info",
                       "msg": f"mistral request {'ok' if code == '200' else 'failed'}: {code}",
                       "model": model, "code": code, "latency_ms": 12.0})


def test_estimate_counts_requests_and_errors_per_model():
    lines = [_line("a", "200")] * 6 + [_line("a", "429")] * 2 + [_line("b", "503")] * 2 + \
        ["plain text startup line", "{not json", json.dumps({"msg": "no code field"})]
    est = estimate_error_rate(lines, window_s=10)
    assert est["estimate"] is True and est["requests"] == 10 and est["errors"] == 4
    assert est["error_ratio"] == 0.4
    assert est["per_model"]["a"] == {"requests_per_s": 0.8, "errors_per_s": 0.2}
    assert est["per_model"]["b"] == {"requests_per_s": 0.2, "errors_per_s": 0.2}


def test_no_request_lines_is_no_data_not_zero():
    est = estimate_error_rate(["starting", "ready"], window_s=300)
    assert est["requests"] == 0 and est["error_ratio"] is None


def test_transport_errors_count_as_errors():
    assert estimate_error_rate([_line("a", "000")], 1)["errors"] == 1
    assert parse('["a list"]') is None


def test_entries_read_by_kube_are_accepted():
    entries = [{"line": _line("a", "429"), "pod": "p"}, {"code": "200", "model": "a"}, {"code": None, "msg": "x"}]
    est = estimate_error_rate(entries, 2)
    assert est["requests"] == 2 and est["errors"] == 1
