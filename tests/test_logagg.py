"""logagg: exact counts from messy JSON-lines logs, the same as a plain json.loads reading, streamed."""

from __future__ import annotations

import gzip
import io
import json
import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from runbook_lib import _time
from runbook_lib.sources import logagg, loglines

# A hand-written log: every kind of line the service and its neighbours write, one or two of each.
MIXED = [
    '{"ts": "2026-11-23T10:15:02.123Z", "level": "info", "msg": "mistral request ok: 200", '
    '"model": "mistral-small-latest", "code": "200", "latency_ms": 120.5, "correlation_id": "a1"}',
    '{"ts": "2026-11-23T10:15:59.999Z", "level": "error", "msg": "rate limited \\"slow down\\"", '
    '"model": "mistral-small-latest", "code": "429", "latency_ms": 80.0, "correlation_id": "a2"}',
    '{"correlation_id": "a3", "latency_ms": 5000.0, "code": "000", "model": "mistral-large-latest", '
    '"msg": "timeout", "level": "error", "ts": "2026-11-23T10:16:00.000Z"}',  # keys reversed
    "Traceback (most recent call last):",
    "",
    '{"ts": "2026-11-23T10:16:30.5Z", "level": "info", "msg": "starting worker"}',  # not a request
    '{"ts": "2026-11-23T10:16:31.000Z", "level": "error", "model": "mistral-large-latest", "code": "503", "msg": "tru',
    '{"ts":"2026-11-23T10:16:45Z","model":"mistral-large-latest","code":"503","latency_ms":12}',  # compact
    '{"ts": "2026-11-23T11:16:50+01:00", "model": "mistral-small-latest", "code": "401", "msg": "Unauthorized"}',
    '{"ts": "2026-11-23T10:17:00Z", "model": "mistral-small-latest", "code": 200, "meta": {"retry": [1, 2]}}',
    '{"ts": "2026-11-23T10:17:05Z", "code": "200"}',  # no model
    '{"ts": "not a time", "model": "mistral-small-latest", "code": "200"}',
    '{"ts": "2026-11-23T10:17:10Z", "model": "mistral-small-latest", "code": null}',
]
T = pd.Timestamp


def _rows(agg: logagg.LogAggregate) -> dict[tuple[str, str, str], tuple[int, int]]:
    return {(b.strftime("%H:%M:%S"), m, c): (r, e) for b, m, c, r, e in agg.frame.itertuples(index=False)}


def test_mixed_log_exact_counts():
    agg = logagg.aggregate(MIXED)
    assert _rows(agg) == {
        ("10:15:00", "mistral-small-latest", "200"): (1, 0),
        ("10:15:00", "mistral-small-latest", "429"): (1, 1),
        ("10:16:00", "mistral-large-latest", "000"): (1, 1),
        ("10:16:00", "mistral-large-latest", "503"): (1, 1),
        ("10:16:00", "mistral-small-latest", "401"): (1, 1),  # 11:16:50+01:00
        ("10:17:00", "?", "200"): (1, 0),
        ("10:17:00", "mistral-small-latest", "200"): (1, 0),  # int code, nested value: the json.loads path
    }
    assert list(agg.frame.columns) == ["bucket", "model", "code", "requests", "errors"]
    assert str(agg.frame["bucket"].dt.tz) == "UTC"
    assert (agg.lines, agg.parsed, agg.skipped) == (13, 7, 6)
    assert agg.skipped_by == {"not_json": 3, "no_code": 2, "bad_ts": 1}
    assert agg.first_ts == T("2026-11-23T10:15:02Z") and agg.last_ts == T("2026-11-23T10:17:05Z")
    assert agg.source == "lines from list"


def test_frame_is_sorted_by_bucket_model_code():
    agg = logagg.aggregate(list(reversed(MIXED)))
    f = agg.frame
    assert f.equals(f.sort_values(["bucket", "model", "code"], ignore_index=True))
    assert f.index.tolist() == list(range(len(f)))
    assert f["requests"].dtype == "int64" and f["errors"].dtype == "int64"


def test_bucket_flooring_60_and_10_seconds():
    lines = [json.dumps({"ts": ts, "model": "m", "code": "200"}) for ts in
             ("2026-11-23T10:15:00.000Z", "2026-11-23T10:15:09.999Z", "2026-11-23T10:15:10.000Z",
              "2026-11-23T10:15:59.999999Z", "2026-11-23T10:16:00Z", "2026-11-23T10:15:55.5+00:00")]
    by60 = logagg.aggregate(lines, freq_s=60).frame
    assert by60["bucket"].tolist() == [T("2026-11-23T10:15Z"), T("2026-11-23T10:16Z")]
    assert by60["requests"].tolist() == [5, 1]
    by10 = logagg.aggregate(lines, freq_s=10).frame
    assert [b.strftime("%M:%S") for b in by10["bucket"]] == ["15:00", "15:10", "15:50", "16:00"]
    assert by10["requests"].tolist() == [2, 1, 2, 1]
    with pytest.raises(ValueError):
        logagg.aggregate(lines, freq_s=0)


def test_per_bucket_and_totals():
    agg = logagg.aggregate(MIXED)
    pb = logagg.per_bucket(agg)
    assert pb.index.tolist() == [T("2026-11-23T10:15Z"), T("2026-11-23T10:16Z"), T("2026-11-23T10:17Z")]
    assert pb["requests"].tolist() == [2, 3, 2]
    assert pb["errors"].tolist() == [1, 3, 0]
    assert pb["error_ratio"].tolist() == [0.5, 1.0, 0.0]
    small = logagg.per_bucket(agg, model="mistral-small-latest")
    assert small["requests"].tolist() == [2, 1, 1] and small["errors"].tolist() == [1, 1, 0]

    # Every 10 s from 10:15:00 to 10:17:00: the quiet buckets are there, with no ratio.
    pb10 = logagg.per_bucket(logagg.aggregate(MIXED, freq_s=10))
    assert len(pb10) == 13 and int(pb10["requests"].sum()) == 7
    assert pb10.loc[T("2026-11-23T10:15:10Z"), "requests"] == 0
    assert math.isnan(pb10.loc[T("2026-11-23T10:15:10Z"), "error_ratio"])
    assert pb10.loc[T("2026-11-23T10:16:50Z"), "errors"] == 1
    assert len(logagg.per_bucket(logagg.aggregate(MIXED, freq_s=10), fill=False)) == 6

    tot = logagg.totals(agg)
    assert (tot["requests"], tot["errors"]) == (7, 4)
    assert tot["error_ratio"] == round(4 / 7, 6)
    assert tot["per_model"] == {
        "?": {"requests": 1, "errors": 0, "error_ratio": 0.0},
        "mistral-large-latest": {"requests": 2, "errors": 2, "error_ratio": 1.0},
        "mistral-small-latest": {"requests": 4, "errors": 2, "error_ratio": 0.5},
    }
    assert tot["per_code"] == {"000": 1, "200": 3, "401": 1, "429": 1, "503": 1}
    assert (tot["first_ts"], tot["last_ts"]) == ("2026-11-23T10:15:02Z", "2026-11-23T10:17:05Z")
    json.dumps(tot)  # plain numbers, ready for the incident record


@pytest.mark.parametrize("source", [[], iter([]), [""], ["", "banner", "  "]])
def test_empty_input_gives_an_empty_frame(source):
    agg = logagg.aggregate(source)
    assert list(agg.frame.columns) == ["bucket", "model", "code", "requests", "errors"]
    assert agg.frame.empty and agg.parsed == 0 and agg.first_ts is None and agg.last_ts is None
    assert str(agg.frame["bucket"].dtype).startswith("datetime64") and str(agg.frame["bucket"].dt.tz) == "UTC"
    assert logagg.per_bucket(agg).empty
    assert logagg.totals(agg)["requests"] == 0 and logagg.totals(agg)["error_ratio"] is None


def test_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    agg = logagg.aggregate(tmp_path / "empty.jsonl")
    assert agg.frame.empty and agg.lines == 0


def test_pods_jsonl_variant():
    """The evidence bundle's lines: sorted keys, code/model null for non-request lines, the raw line inside."""
    raw_ok = json.dumps({"ts": "2026-11-23T10:15:02.000Z", "model": "m", "code": "200"})
    entries = [
        {"ts": "2026-11-23T10:15:03Z", "pod": "p1", "container": "c", "previous": False, "level": "error",
         "code": "401", "model": "mistral-small-latest", "msg": "Unauthorized", "error_class": "auth",
         "line": json.dumps({"ts": "2026-11-23T10:15:03.100Z", "code": "401", "model": "mistral-small-latest"})},
        {"ts": "2026-11-23T10:15:04Z", "pod": "p1", "container": "c", "previous": True, "level": "info",
         "code": None, "model": None, "msg": raw_ok, "error_class": "other", "line": raw_ok},  # no code
        {"ts": "2026-11-23T10:16:10Z", "pod": "p2", "container": "c", "previous": False, "level": "error",
         "code": "429", "model": None, "msg": "HTTP 429 rate limited", "error_class": "rate_limit",
         "line": "ERROR HTTP 429 rate limited"},
        {"ts": None, "pod": "p2", "container": "c", "previous": False, "level": "error", "code": "503",
         "model": "m", "msg": "x", "error_class": "server", "line": "x"},
    ]
    lines = [json.dumps(e, sort_keys=True) for e in entries]
    agg = logagg.aggregate(lines)
    assert _rows(agg) == {("10:15:00", "mistral-small-latest", "401"): (1, 1), ("10:16:00", "?", "429"): (1, 1)}
    assert agg.skipped_by == {"not_json": 0, "no_code": 1, "bad_ts": 1}


def _write(path: Path, lines: list[str], opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_gzip_file_same_counts_as_plain(tmp_path):
    plain = logagg.aggregate(_write(tmp_path / "a.jsonl", MIXED * 50))
    gz = logagg.aggregate(_write(tmp_path / "a.jsonl.gz", MIXED * 50, gzip.open), chunk_bytes=1000)
    assert gz.frame.equals(plain.frame) and gz.frame["requests"].sum() == 350
    assert (gz.lines, gz.skipped_by) == (plain.lines, plain.skipped_by) == (650, {"not_json": 150, "no_code": 100,
                                                                                   "bad_ts": 50})
    assert gz.source.endswith("a.jsonl.gz (gzip)")
    # detected by content, not by name
    renamed = (tmp_path / "a.jsonl.gz").rename(tmp_path / "rotated.log.1")
    assert logagg.aggregate(str(renamed)).frame.equals(plain.frame)


def test_file_objects_text_and_binary(tmp_path):
    expected = logagg.aggregate(MIXED).frame
    path = _write(tmp_path / "a.jsonl", MIXED)
    with open(path, encoding="utf-8") as fh:
        assert logagg.aggregate(fh, chunk_bytes=64).frame.equals(expected)
    assert logagg.aggregate(io.BytesIO(path.read_bytes()), chunk_bytes=7).frame.equals(expected)


def test_iterable_of_lines_with_or_without_newlines():
    expected = logagg.aggregate(MIXED).frame
    assert logagg.aggregate(line + "\n" for line in MIXED).frame.equals(expected)
    assert logagg.aggregate([line.encode() + b"\r\n" for line in MIXED]).frame.equals(expected)
    with pytest.raises(TypeError):
        logagg.aggregate(b"{}")  # bytes are not a list of lines


def test_service_log_lines_take_the_quickest_pattern(tmp_path):
    """The simulator's `_record` writes what the layout-specific pattern expects (a change there shows here)."""
    from runbook_lib.sim.service import Call, ServiceSimulator

    log = tmp_path / "service.jsonl"
    svc = ServiceSimulator("http://127.0.0.1:9", "sk-test", log_path=str(log))
    svc._record(Call(1795428902.25, "mistral-small-latest", "200", 12.5, None, "cid-1"))
    svc._record(Call(1795428903.5, "mistral-large-latest", "429", 80.0, 'rate limited: "slow down"', None))
    lines = log.read_bytes().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert tuple(json.loads(line)) == loglines.FIELDS  # the schema's names, in the order it writes them
        m = logagg._LINE_RX.match(line)
        assert m is not None and m.group(1) and not m.group(logagg._LINE_RX.groups)
    agg = logagg.aggregate(log)
    assert _rows(agg) == {("10:15:00", "mistral-large-latest", "429"): (1, 1),
                          ("10:15:00", "mistral-small-latest", "200"): (1, 0)}


def test_fast_path_needs_no_json_loads_for_plain_records(monkeypatch):
    """The point of the module: well-formed lines never reach the slow per-line json.loads."""
    calls = []
    real = json.loads
    monkeypatch.setattr(logagg.json, "loads", lambda s, *a, **k: calls.append(s) or real(s, *a, **k))
    agg = logagg.aggregate(MIXED[:3] * 1000)
    assert agg.parsed == 3000 and calls == []
    logagg.aggregate(MIXED)
    assert len(calls) == 5  # plain text, truncated, int code + nested value, bad ts, null code


# -- equality with a straightforward json.loads reading -------------------------------------------
def _reference(lines: list[bytes], freq_s: int) -> tuple[Counter, int]:
    """json.loads per line, times read by the project's one ISO reader (`_time.parse`)."""
    groups: Counter = Counter()
    for raw in lines:
        try:
            obj = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            continue
        if not isinstance(obj, dict) or obj.get("code") is None:
            continue
        dt = _time.parse(obj.get("ts"))
        if dt is None:
            continue
        second = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)
        groups[(second - second % freq_s, str(obj.get("model") or "?"), str(obj["code"]))] += 1
    return groups, len(lines)


def _as_counter(agg: logagg.LogAggregate) -> Counter:
    return Counter({(int(b.timestamp()), m, c): r
                    for b, m, c, r in agg.frame[["bucket", "model", "code", "requests"]].itertuples(index=False)})


EDGE_LINES = [
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "code": "503"}',  # duplicate: last wins
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "code": null}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "ts": "2026-11-23T11:00:00Z"}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "mistral\\u002dsmall", "code": "200"}',  # escape in model
    b'{"ts": "2026-11-23T10:15:02Z", "model": "caf\xc3\xa9", "code": "200"}',  # utf-8
    b'{"ts": "2026-11-23T10:15:02Z", "model": "bad\xff\xfe", "code": "200"}',  # invalid utf-8
    b'{"ts": "2026-11-23T10:15:02Z", "model": "", "code": ""}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": 7, "code": 429}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": 429.0}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": -0}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": true}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "latency_ms": NaN}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "x": -Infinity}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "x": 1e400, "y": -0.5E-3}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "x": 01}',  # leading zero: invalid
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200",}',  # trailing comma
    b'{"ts": "2026-11-23T10:15:02Z" "model": "a", "code": "200"}',  # missing comma
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200"}}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200"} x',
    b'  {"ts" : "2026-11-23T10:15:02Z" ,"model":"a" , "code" :"200"}\t\r',
    b'\x0c{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200"}',  # form feed is not JSON whitespace
    b'\xef\xbb\xbf{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200"}',  # BOM
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "msg": "tab\there"}',  # raw control char
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "msg": "q\\"uote\\\\", "k\\"ey": 1}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "msg": "\\ud83d\\ude00 \\x"}',  # bad escape
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "co\\u0064e": "503"}',  # escaped key = code
    b'{"ts": "2026-11-23T10:15:60Z", "model": "a", "code": "200"}',  # leap second: fromisoformat says no
    b'{"ts": "2026-02-30T10:15:02Z", "model": "a", "code": "200"}',
    b'{"ts": "2026-11-23T10:15:02+24:00", "model": "a", "code": "200"}',
    b'{"ts": "2026-11-23T10:15:02.1234567-05:30", "model": "a", "code": "200"}',
    b'{"ts": "2026-11-23T10:15:02", "model": "a", "code": "200"}',  # naive: UTC
    b'{"ts": "2026-11-23 10:15:02,5Z", "model": "a", "code": "200"}',
    b'{"ts": "2026-11-23T10:15:02.Z", "model": "a", "code": "200"}',
    b'{"ts": "2026-11-23T10:15:02z", "model": "a", "code": "200"}',  # lower-case z: _time.parse takes it
    b'{"ts": " 2026-11-23T10:15:02Z ", "model": "a", "code": "200"}',  # padded: so does _time.parse
    b'{"ts": "2026-11-23T10:15:02.123456789Z", "model": "a", "code": "200"}',  # nanoseconds, as Kubernetes writes
    b'{"ts": "", "model": "a", "code": "200"}',
    b'{"ts": 1795436102, "model": "a", "code": "200"}',
    b'{"ts": "1969-12-31T23:59:59.5Z", "model": "a", "code": "200"}',
    b'{"model": "a", "code": "200"}',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a"}',
    b'{}',
    b'[{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200"}]',
    b'"just a string"',
    b'{"ts": "2026-11-23T10:15:02Z", "model": "a", "code": "200", "nested": {"code": "503", "ts": "x"}}',
    # our service's exact layout (its own quicker pattern), valid and not
    b'{"ts": "2026-11-23T10:15:02.123Z", "level": "error", "msg": "said \\"no\\"", "model": "m", "code": "429", '
    b'"latency_ms": 80.5, "correlation_id": null}',
    b'{"ts": "2026-11-23T10:15:02.123Z", "level": "info", "msg": "ok", "model": "m", "code": "200", '
    b'"latency_ms": 80.5, "correlation_id": "c1"',  # cut just before the brace
    b'{"ts": "2026-11-23T10:15:02.123Z", "level": "info", "msg": "ok", "model": "m", "code": "200", '
    b'"latency_ms": 80.5, "correlation_id": "c1"}, {}',
    b'{"ts": "2026-11-23T10:15:02.123Z", "level": "info", "msg": "ok", "model": "m", "code": "200", '
    b'"latency_ms": 80.5, "correlation_id": "c1", "code": "503"}',  # one more key: the any-order pattern
    b'{"ts": "2026-11-23T10:15:02.123Z", "level": "info", "msg": "ok", "model": "m", "code": 200, '
    b'"latency_ms": 8, "correlation_id": "c1"}',
    b'{"ts": "2026-11-23T10:15:02.123Z", "level": "info", "msg": "ok", "model": "m", "code": "200", '
    b'"latency_ms": 08, "correlation_id": "c1"}',
    b'{"ts": "2026-11-23T10:15:02.123Z", "level": "info", "msg": "ok", "model": "m\\u00e9", "code": "200", '
    b'"latency_ms": 1, "correlation_id": 5}',
]


@pytest.mark.parametrize("line", EDGE_LINES, ids=range(len(EDGE_LINES)))
def test_edge_lines_match_json_loads(line):
    expected, _ = _reference([line], 60)
    agg = logagg.aggregate([line])
    assert _as_counter(agg) == expected
    assert agg.parsed == sum(expected.values()) and agg.lines == 1


def _noisy_log(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    models = ["mistral-small-latest", "mistral-large-latest", "codestral-latest", "mistral-embed"]
    t0 = datetime(2026, 11, 23, 9, 58, tzinfo=UTC).timestamp()
    out = []
    for i in range(n):
        ts = datetime.fromtimestamp(t0 + i * 0.05 + rnd.random() * 0.01, UTC)
        code = rnd.choice(["200"] * 12 + ["429", "503", "000", "401"])
        rec = {"ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "level": "info" if code == "200" else "error",
               "msg": rnd.choice(["ok", 'said "slow down"', "caf\u00e9 \u2603", "back\\slash", "tab\tnl\n"]),
               "model": rnd.choice(models), "code": code, "latency_ms": round(rnd.uniform(10, 2000), 1),
               "correlation_id": rnd.choice([f"{rnd.getrandbits(64):016x}", None])}
        kind = rnd.random()
        if kind < 0.05:
            rec = dict(reversed(list(rec.items())))
        elif kind < 0.07:
            rec["ts"] = ts.isoformat()  # +00:00, microseconds
        elif kind < 0.08:
            rec["ts"] = ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        elif kind < 0.09:
            rec["code"] = int(code)
        elif kind < 0.10:
            rec["code"] = None
        elif kind < 0.11:
            del rec["code"]
        elif kind < 0.12:
            rec["extra"] = {"attempt": rnd.randint(1, 3), "tags": ["a", "b"]}
        elif kind < 0.13:
            rec["model"] = None
        elif kind < 0.14:
            rec["ts"] = rnd.choice(["yesterday", "2026-13-01T00:00:00Z", 1795436102])
        text = json.dumps(rec, ensure_ascii=rnd.random() < 0.5, separators=rnd.choice([(", ", ": "), (",", ":")]))
        data = text.encode()
        noise = rnd.random()
        if noise < 0.01:
            data = data[: rnd.randrange(1, len(data))]  # truncated
        elif noise < 0.015:
            data = b"  File \"/app/client.py\", line 88, in call"
        elif noise < 0.02:
            data = b""
        elif noise < 0.022:
            data += b"\r"
        elif noise < 0.024:
            data = data.replace(b"model", b"mod\xffel")
        out.append(data)
    return out


@pytest.mark.parametrize("freq_s,chunk_bytes", [(60, logagg.CHUNK_BYTES), (10, 4096)])
def test_equals_json_loads_reference_on_a_noisy_generated_file(tmp_path, freq_s, chunk_bytes):
    lines = _noisy_log(50_000, seed=freq_s)
    path = tmp_path / "noisy.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected, n = _reference(lines, freq_s)
    agg = logagg.aggregate(path, freq_s=freq_s, chunk_bytes=chunk_bytes)
    assert _as_counter(agg) == expected
    assert agg.lines == n == 50_000 and agg.parsed == sum(expected.values())
    assert agg.parsed > 45_000 and all(n > 300 for n in agg.skipped_by.values())  # noise of every kind, most count
    assert agg.skipped == agg.lines - agg.parsed == sum(agg.skipped_by.values())
    errors = sum(v for (_, _, code), v in expected.items() if code not in ("200",))
    assert int(agg.frame["errors"].sum()) == errors


# -- streaming ------------------------------------------------------------------------------------
def test_reads_a_generator_lazily_block_by_block(monkeypatch):
    """Blocks are counted while the generator is still producing: nothing waits for the whole input."""
    produced = 0
    seen: list[tuple[int, int]] = []

    def lines():
        nonlocal produced
        for i in range(20_000):
            produced += 1
            yield MIXED[i % len(MIXED)]

    real = logagg._scan_block
    monkeypatch.setattr(logagg, "_scan_block", lambda counts, data: (seen.append((produced, len(data))),
                                                                      real(counts, data)))
    agg = logagg.aggregate(lines(), chunk_bytes=16_384)
    longest = max(len(line) for line in MIXED) + 1
    assert len(seen) > 50
    assert seen[0][0] < 200  # the first block was counted after ~16 KiB of lines, not after 20,000 lines
    assert all(size < 16_384 + longest for _, size in seen)
    assert agg.lines == 20_000 and agg.parsed == sum(1 for i in range(20_000) if i % 13 in (0, 1, 2, 7, 8, 9, 10))


def test_file_much_bigger_than_a_block(tmp_path):
    """Block edges fall in the middle of lines (and of a line longer than a block): counts are unchanged."""
    long_line = json.dumps({"ts": "2026-11-23T10:15:30Z", "model": "m", "code": "503", "msg": "x" * 5000})
    lines = (MIXED + [long_line]) * 300
    path = _write(tmp_path / "big.jsonl", lines)
    agg = logagg.aggregate(path, chunk_bytes=997)
    assert agg.lines == 14 * 300 and agg.parsed == 8 * 300
    assert _rows(agg)[("10:15:00", "m", "503")] == (300, 300)
    assert _rows(agg)[("10:16:00", "mistral-small-latest", "401")] == (300, 300)
    assert agg.frame.equals(logagg.aggregate(lines).frame)


def test_last_line_without_newline_is_counted(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(MIXED[:3]))
    assert logagg.aggregate(path, chunk_bytes=50).parsed == 3


# -- a big plain file counted by worker processes ---------------------------------------------------
@pytest.mark.parametrize("workers,trailing_newline", [(3, True), (4, False)])
def test_workers_count_exactly_what_json_loads_counts(tmp_path, workers, trailing_newline):
    """Byte ranges cut at line starts, counted in spawned processes and summed: the same counts,
    lines, skips and first/last as the reference reading, whatever falls on a cut."""
    lines = _noisy_log(30_000, seed=5)
    path = tmp_path / "noisy.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline else b""))
    ranges = logagg._ranges(path, workers)  # noqa: SLF001 - the cuts themselves are the risk
    assert len(ranges) == workers and ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    data = path.read_bytes()
    for a, b in ranges:
        assert a == 0 or data[a - 1:a] == b"\n", "a range starts inside a line"
    expected, n = _reference(lines, 60)
    agg = logagg.aggregate(path, workers=workers)
    serial = logagg.aggregate(path, workers=1)
    assert _as_counter(agg) == expected == _as_counter(serial)
    assert agg.lines == n == serial.lines and agg.skipped_by == serial.skipped_by
    assert (agg.first_ts, agg.last_ts, agg.source) == (serial.first_ts, serial.last_ts, serial.source)
    assert agg.frame.equals(serial.frame)


def test_gzip_and_small_files_stay_in_this_process(tmp_path):
    lines = [json.dumps({"ts": "2026-01-01T00:00:00Z", "model": "m", "code": "200"}).encode()] * 10
    gz = _write(tmp_path / "a.jsonl.gz", [x.decode() for x in lines], opener=gzip.open)
    plain = _write(tmp_path / "a.jsonl", [x.decode() for x in lines])
    assert logagg._ranges(gz, 3) == [] and logagg._ranges(plain, None) == []  # noqa: SLF001
    assert logagg.aggregate(gz, workers=3).parsed == 10
    with pytest.raises(ValueError, match="workers"):
        logagg.aggregate(plain, workers=0)
