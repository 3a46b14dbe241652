"""Timeline entries from alert exports, events, records and changes, merged in time order."""

from __future__ import annotations

import pandas as pd

from runbook_lib.analysis import timeline


def test_alert_spans_start_and_stop():
    times = [f"2026-11-23T10:00:{s:02d}Z" for s in (10, 20, 30)] + ["2026-11-23T10:02:00Z"]
    alerts = pd.DataFrame({"time": times, "alertname": "MistralServerErrors", "severity": "page", "value": 1})
    entries = timeline.from_alerts(alerts, step_s=10)
    assert [(e["time"], e["event"], e["kind"]) for e in entries] == [
        ("2026-11-23T10:00:10Z", "Alert MistralServerErrors firing (page)", "start"),
        ("2026-11-23T10:00:40Z", "Alert MistralServerErrors stopped firing", "stop"),   # last sample + step
        ("2026-11-23T10:02:00Z", "Alert MistralServerErrors firing (page)", "start")]   # still firing at the end
    assert timeline.from_alerts(pd.DataFrame(columns=["time", "value"]), step_s=10) == []


def test_events_filtered_by_window_and_normal_churn_grouped():
    events = [{"last_seen": "2026-11-23T09:00:00Z", "type": "Warning", "reason": "Old", "object": "pod/a",
               "message": "before the window"},
              {"last_seen": "2026-11-23T10:00:05Z", "type": "Warning", "reason": "BackOff", "object": "pod/a",
               "message": "restarting", "count": 3},
              *[{"last_seen": "2026-11-23T10:00:06Z", "type": "Normal", "reason": "Started", "object": f"pod/p{i}",
                 "message": "Started container app"} for i in range(3)]]
    entries = timeline.from_events(events, since="2026-11-23T10:00:00Z")
    assert [e["event"] for e in entries] == ["Warning BackOff pod/a: restarting (x3)",
                                             "Normal Started x3: pod/p0, pod/p1, pod/p2"]


def test_merge_orders_records_changes_and_impact():
    records = [{"name": "verdict", "recorded_at": "2026-11-23T10:00:20+00:00", "value": {"line": "P1 x -> y"}},
               {"name": "change_env", "recorded_at": "2026-11-23T10:00:25+00:00", "value": {"applied": True}}]
    changes = [{"at": "2026-11-23T10:00:25Z", "who": "bob", "action": "set env", "target": "deployment/app",
                "verified": True, "undo": "kubectl set env deployment/app X-"}]
    impact = {"found": True, "start": "2026-11-23T10:00:00Z", "peak": "2026-11-23T10:00:10Z",
              "end": "2026-11-23T10:00:40Z", "peak_error_ratio": 1.0, "failed_requests": 12, "duration_s": 40}
    merged = timeline.merge(timeline.from_records("triage", records), timeline.from_changes(changes),
                            timeline.from_impact(impact))
    assert list(merged["event"]) == ["Impact started: bad calls (failed, timed out or slow) crossed the threshold",
                                     "Peak: 100% of calls bad", "triage runbook started",
                                     "triage: verdict: P1 x -> y", "CHANGE by bob: set env on deployment/app",
                                     "Impact ended: 12 bad calls (12 failed) in 40 s"]
    assert merged.loc[merged["source"] == "change", "undo"].item() == "kubectl set env deployment/app X-"


def test_from_notifications_gives_fire_and_resolve_once_each():
    from runbook_lib.analysis import timeline

    alerts = [{"status": "firing", "name": "MistralServerErrors", "starts_at": "2026-11-23T15:19:52.627Z",
               "ends_at": "0001-01-01T00:00:00Z", "received_at": "2026-11-23T15:19:53Z"},
              {"status": "firing", "name": "MistralServerErrors", "starts_at": "2026-11-23T15:19:52.627Z",
               "ends_at": "0001-01-01T00:00:00Z", "received_at": "2026-11-23T19:19:53Z"},  # a repeat
              {"status": "resolved", "name": "MistralServerErrors", "starts_at": "2026-11-23T15:19:52.627Z",
               "ends_at": "2026-11-23T15:20:11.627Z", "received_at": "2026-11-23T15:20:11Z"}]
    out = timeline.from_notifications(alerts)
    assert [(e["time"], e["kind"]) for e in out] == [("2026-11-23T15:19:52.627Z", "start"),
                                                     ("2026-11-23T15:20:11.627Z", "stop")]
    assert out[0]["source"] == "alertmanager" and "MistralServerErrors firing" in out[0]["event"]
    assert timeline.from_notifications(None) == []
