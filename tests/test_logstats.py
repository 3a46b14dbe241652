import json

import pytest

from runbook_lib.sources import logagg, loglines
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


# -- one error rule: loglines.is_error, for logstats and logagg alike ------------------------------
# code as the line holds it -> is it an error? Only three ASCII digits starting with 2 are OK.
ODD_CODES = [
    ("200", False), ("204", False), ("299", False), (200, False), (299, False),
    ("2xx", True), ("2XX", True), ("20", True), ("2000", True), (" 200", True), ("200 ", True), ("200.0", True),
    ("+200", True), ("\u0662\u0660\u0660", True), ("\uff12\uff10\uff10", True),  # Arabic-Indic, fullwidth digits
    ("000", True), ("429", True), ("503", True), ("", True), ("abc", True), (503, True), (0, True), (200.0, True),
    (True, True),
]


@pytest.mark.parametrize("code,error", ODD_CODES, ids=[repr(c) for c, _ in ODD_CODES])
def test_one_error_rule_for_odd_codes(code, error):
    """The rule itself, and logstats and logagg giving its answer on the same line (fast and json.loads paths)."""
    assert loglines.is_error(str(code)) is error
    lines = [json.dumps({"ts": "2026-11-23T10:00:00.000Z", "level": "info", "msg": "m", "model": "m", "code": code,
                         "latency_ms": 1.0, "correlation_id": None}, ensure_ascii=False),  # the service's layout
             json.dumps({"code": code, "model": "m", "ts": "2026-11-23T10:00:00Z"}),  # any key order
             json.dumps({"ts": "2026-11-23T10:00:00Z", "model": "m", "code": code, "meta": {"retry": [1]}})]  # nested
    for line in lines:
        est = estimate_error_rate([line], window_s=1)
        agg = logagg.aggregate([line])
        assert (est["requests"], agg.parsed) == (1, 1), line
        assert est["errors"] == int(agg.frame["errors"].sum()) == int(error), line


def test_estimate_and_aggregate_agree_on_a_mixed_log():
    lines = [json.dumps({"ts": f"2026-11-23T10:00:{i:02d}Z", "model": f"m{i % 3}", "code": code})
             for i, (code, _error) in enumerate(ODD_CODES * 2)]
    est = estimate_error_rate(lines, window_s=60)
    totals = logagg.totals(logagg.aggregate(lines))
    assert (est["requests"], est["errors"]) == (totals["requests"], totals["errors"]) == (
        len(lines), 2 * sum(error for _code, error in ODD_CODES))


def test_http_code_is_what_the_rule_reads():
    assert [loglines.http_code(c) for c in ("200", 429, "000", "2xx", " 200", "\u0662\u0660\u0660", None)] == [
        "200", "429", "000", None, None, None, None]
    assert loglines.request({"code": 503}) == ("?", "503") and loglines.request({"code": None, "model": "m"}) is None


def test_an_estimate_from_no_logs_says_why_there_were_none():
    """No pods matched: the estimate's reason says so, never "no requests"."""
    note = "no pods matched `app=nobody` in namespace `default`"
    est = estimate_error_rate([], window_s=60, no_source=note)
    assert est["requests"] == 0 and est["error_ratio"] is None and est["reason"] == note
    assert estimate_error_rate(["starting"], window_s=60)["reason"] == "no request lines in the pods' logs"
    assert estimate_error_rate([_line("a", "200")], window_s=60)["reason"] is None
