"""Impact detection and counting on hand-built counter exports (numbers worked out by hand)."""

from __future__ import annotations

import pandas as pd
import pytest

from runbook_lib.analysis import impact

T0 = pd.Timestamp("2026-11-23T10:00:00Z")


def _export(series: dict[tuple[str, str], list[float | None]], start: int = 0) -> pd.DataFrame:
    """A long counter export: one row per (series, sample), samples 10 s apart from T0 + start*10 s."""
    rows = []
    for (model, code), values in series.items():
        offset = start if code != "503" else 0
        for i, v in enumerate(values):
            if v is not None:
                rows.append({"time": (T0 + pd.Timedelta(seconds=10 * (i + offset))).isoformat(), "model": model,
                             "code": code, "value": v})
    return pd.DataFrame(rows)


def test_increments_handle_baseline_births_and_resets():
    frame = _export({("m", "200"): [100, 110, 120, 5, 15],          # reset between samples 2 and 3
                     ("m", "503"): [None, None, 4, 10, 10]})         # born at sample 2
    inc = impact.increments(frame)
    got = {(r.code, r.time.isoformat()): r.increase for r in inc.itertuples()}
    assert got[("200", "2026-11-23T10:00:10+00:00")] == 10
    assert got[("200", "2026-11-23T10:00:30+00:00")] == 5   # reset: counted from the restart
    assert got[("503", "2026-11-23T10:00:20+00:00")] == 4   # born in the window: its first value counts
    assert got[("503", "2026-11-23T10:00:30+00:00")] == 6
    assert ("200", "2026-11-23T10:00:00+00:00") not in got   # a baseline is not an interval
    assert inc["increase"].sum() == 10 + 10 + 5 + 10 + 4 + 6 + 0


def test_origin_decides_what_is_a_baseline():
    errors = _export({("m", "503"): [3, 5]})
    assert impact.increments(errors)["increase"].tolist() == [2]            # alone: first sample is a baseline
    assert impact.increments(errors, origin=T0 - pd.Timedelta(seconds=60))["increase"].tolist() == [3, 2]


def _steps(errors_per_step: list[int], requests: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    times = [T0 + pd.Timedelta(seconds=10 * i) for i in range(len(errors_per_step))]
    req = pd.DataFrame({"time": times, "model": "m", "code": "200", "increase": [float(requests)] * len(times)})
    err = pd.DataFrame({"time": times, "model": "m", "code": "429", "increase": [float(e) for e in errors_per_step]})
    err = err[err["increase"] > 0]
    return impact.per_step(req, err), err


def test_detect_start_peak_end_and_counts():
    steps, err = _steps([0, 0, 3, 10, 6, 0, 4, 0, 0, 0, 1, 0])
    # bad (>=5%, >=1): steps 2,3,4,6 (gap of 1 <= 2) and 10 (gap of 3: a separate, smaller episode)
    found = impact.detect(steps, err, step_s=10)
    assert found.found
    assert found.start == "2026-11-23T10:00:10Z"   # start of the first bad step (sample 2 covers 10..20 s)
    assert found.end == "2026-11-23T10:01:00Z"     # the last bad step's sample time
    assert found.peak == "2026-11-23T10:00:30Z" and found.peak_error_ratio == 1.0
    assert found.duration_s == 50
    assert found.failed_requests == 3 + 10 + 6 + 0 + 4 and found.failed_in_window == 24
    assert found.by_code == {"429": 23} and found.affected_models == ["m"]
    assert found.unanswered_s == 10                  # one step (3) answered nothing in time
    hang, err = _steps([0, 4, 10, 10, 10, 3, 0])     # three steps in a row answered nothing, edges did
    assert impact.detect(hang, err, step_s=10).unanswered_s == 30
    assert "counter increments per 10 s step" in found.method


def test_thresholds_and_no_incident():
    steps, err = _steps([0, 1, 0, 0], requests=100)          # 1% of calls: under the 5% default
    assert not impact.detect(steps, err, step_s=10).found
    assert impact.detect(steps, err, step_s=10, min_ratio=0.01).found
    assert not impact.detect(steps, err, step_s=10, min_ratio=0.01, min_errors=2).found
    empty = impact.per_step(pd.DataFrame(columns=["time", "increase"]), pd.DataFrame(columns=["time", "increase"]))
    assert not impact.detect(empty, pd.DataFrame(), step_s=10).found


@pytest.mark.parametrize("gap,episodes_joined", [(2, True), (0, False)])
def test_gap_joins_episodes(gap, episodes_joined):
    steps, err = _steps([5, 0, 5])
    found = impact.detect(steps, err, step_s=10, max_gap=gap)
    assert (found.failed_requests == 10) is episodes_joined
