"""The incident figures read right: small hand-built frames rendered with every warning an error.

A figure in a record is evidence: a chart whose axis spans four years, whose counts are
fractional, whose lines hide each other or whose kernel printed a warning misleads the reviewer.
Each test renders one figure from a few rows and checks the matplotlib objects (limits, tickers,
lines, legends), then draws it, so a warning raised while rendering fails the test too.
"""

from __future__ import annotations

import io
import re
import gc
import warnings
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from matplotlib.dates import DateFormatter, num2date
from matplotlib.ticker import MaxNLocator

from runbook_lib.analysis import plots
from runbook_lib.records import report
from runbook_lib.runbooks import diagnose_server_error

END = datetime(2026, 12, 4, 18, 30, tzinfo=UTC)
START = END - timedelta(minutes=30)


@pytest.fixture(autouse=True)
def warnings_are_errors():
    """A warning while building or drawing a figure is a red box in the record: fail instead.

    Garbage an earlier test in this worker left (an unclosed event loop's sockets) is collected
    first: its ResourceWarning, raised whenever matplotlib's allocations trigger a collection, is
    not this figure's (CI failed two plot tests on a loop a fake server had not closed).
    """
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def render(fig) -> bytes:
    """Draw and encode the figure as the records do (warnings surface here too)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def xlim_utc(ax) -> tuple[datetime, datetime]:
    lo, hi = ax.get_xlim()
    return num2date(lo, tz=UTC), num2date(hi, tz=UTC)


def tick_labels(ax) -> list[str]:
    ax.figure.canvas.draw()
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text()]


def assert_utc_clock(ax, fmt: str) -> None:
    """The x axis shows UTC clock times in `fmt`, every tick inside the limits."""
    formatter = ax.xaxis.get_major_formatter()
    assert isinstance(formatter, DateFormatter) and formatter.fmt == fmt and formatter.tz == UTC
    pattern = re.escape(fmt).replace("%H", r"\d\d").replace("%M", r"\d\d").replace("%S", r"\d\d")
    labels = tick_labels(ax)  # drawn ticks only: those inside the limits
    assert len(labels) >= 2 and all(re.fullmatch(pattern, t) for t in labels), labels


def labelled_lines(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def rates(times, models: list[str], increase: float = 30.0, code: str = "503") -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"time": list(times), "model": m, "code": code, "increase": increase})
                      for m in models], ignore_index=True)


# -- 1. the 5xx runbook's error mix ---------------------------------------------------------------

def test_error_mix_with_one_sample_shows_the_queried_window():
    frame = pd.DataFrame({"time": [pd.Timestamp(END - timedelta(seconds=20))], "value": [2.5], "code": ["503"]})
    # the runbook's own path: epoch seconds of the range query's window, outside a kernel nothing is shown
    fig = diagnose_server_error._plot_error_mix(frame, START.timestamp(), END.timestamp())
    (ax,) = fig.axes
    lo, hi = xlim_utc(ax)
    assert abs((lo - START).total_seconds()) < 1e-3 and abs((hi - END).total_seconds()) < 1e-3
    (line,) = ax.get_lines()
    assert line.get_label() == "HTTP 503" and len(line.get_xdata()) == 1
    assert line.get_marker() not in (None, "None", "", " ")  # a single sample is a visible point
    assert ax.get_xlabel() == "time (UTC)"
    assert_utc_clock(ax, "%H:%M")
    assert tick_labels(ax)[0] == "18:00" and tick_labels(ax)[-1] == "18:30"
    assert ax.get_title() == "" and "last 30 min" in fig.get_suptitle()
    assert render(fig)


def test_error_mix_codes_each_get_a_distinct_style():
    times = [END - timedelta(minutes=m) for m in (3, 2, 1)]
    frame = pd.concat([pd.DataFrame({"time": times, "value": 1.0, "code": c}) for c in ("500", "503")])
    (ax,) = plots.error_mix(frame, start=START, end=END).axes
    lines = labelled_lines(ax)
    assert set(lines) == {"HTTP 500", "HTTP 503"}
    assert len({(ln.get_linestyle(), ln.get_marker()) for ln in lines.values()}) == 2
    assert ax.get_legend() is not None


# -- 2. the postmortem's traffic and latency -----------------------------------------------------

def test_identical_series_stay_distinguishable():
    times = pd.date_range(START, periods=30, freq="60s")
    frame = rates(times, ["mistral-small-latest", "mistral-large-latest"])
    fig = plots.traffic(frame, frame, step_s=60, impact=None, changes=[])
    for ax in fig.axes:
        a, b = labelled_lines(ax).values()
        assert list(a.get_ydata()) == list(b.get_ydata())  # truly on top of each other
        assert (a.get_linestyle(), a.get_marker()) != (b.get_linestyle(), b.get_marker())
        assert a.get_linewidth() > b.get_linewidth()  # the one underneath shows as an outline
        assert a.get_color() != b.get_color()
        legend = ax.get_legend()
        assert sorted(t.get_text() for t in legend.get_texts()) == sorted(labelled_lines(ax))
        assert legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted()).x0 >= 1.0  # beside the plot
    lo, hi = xlim_utc(fig.axes[0])
    assert lo <= times[0] and hi >= times[-1] and hi - lo < timedelta(hours=1)
    assert_utc_clock(fig.axes[1], "%H:%M")
    assert render(fig)


def test_one_sample_of_traffic_keeps_a_sane_axis():
    t = pd.Timestamp(END)
    frame = rates([t], ["m"])
    fig = plots.traffic(frame, frame, step_s=15, impact=None, changes=[])
    lo, hi = xlim_utc(fig.axes[0])
    assert lo < t < hi and timedelta(minutes=1) <= hi - lo <= timedelta(minutes=2)
    assert all(ln.get_marker() not in (None, "None", "") for ln in fig.axes[0].get_lines())
    assert render(fig)


def test_no_failed_calls_and_no_incident_draws_without_a_warning():
    """The warning found in postmortem records: `legend()` on the failed-calls axes with nothing labelled."""
    times = pd.date_range(START, periods=5, freq="60s")
    empty = pd.DataFrame(columns=["time", "model", "code", "increase"])
    fig = plots.traffic(rates(times, ["m"], code="200"), empty, step_s=60, impact={"found": False}, changes=[])
    top, bottom = fig.axes
    assert top.get_legend() is not None and bottom.get_legend() is None
    assert any(t.get_text() == "no data" for t in bottom.texts)
    assert render(fig)  # would raise "No artists with labels found to put in legend"


def test_latency_draws_the_threshold_line_with_its_label():
    times = pd.date_range(START, periods=10, freq="60s")
    quantiles = {"p50": pd.DataFrame({"time": times, "value": 0.1}),
                 "p95": pd.DataFrame({"time": times.astype(str), "value": [0.1 + i / 20 for i in range(10)]})}
    change = {"at": (START + timedelta(minutes=4)).isoformat(), "action": "set env", "who": "alice"}
    fig = plots.latency(quantiles, impact=None, changes=[change], threshold_s=1.5)
    (ax,) = fig.axes
    lines = labelled_lines(ax)
    threshold = lines["latency threshold (1.5 s)"]
    assert list(threshold.get_ydata()) == [1.5, 1.5] and list(threshold.get_xdata()) == [0, 1]  # full width
    assert ax.get_ylim()[1] > 1.5 > max(lines["p95"].get_ydata())  # shown even above every sample
    assert "latency threshold (1.5 s)" in [t.get_text() for t in ax.get_legend().get_texts()]
    p50, p95 = lines["p50"], lines["p95"]
    assert (p50.get_linestyle(), p50.get_marker()) != (p95.get_linestyle(), p95.get_marker())
    assert ax.get_xlabel() == "time (UTC)"
    assert_utc_clock(ax, "%H:%M")
    assert render(fig)


def test_latency_without_threshold_draws_none():
    times = pd.date_range(START, periods=3, freq="60s")
    fig = plots.latency({"p99": pd.DataFrame({"time": times, "value": 0.2})}, impact=None, changes=[])
    assert not [n for n in labelled_lines(fig.axes[0]) if "threshold" in n]
    assert render(fig)


# -- 3. the recovery monitor ----------------------------------------------------------------------

def monitor_samples(at: bool = True) -> list[dict]:
    out = []
    for i in range(5):
        s = {"t_s": round(i * 0.4, 2), "status_code": 503 if i < 3 else 200, "classification": "x",
             "latency_ms": 10.0 + i, "healthy": i >= 3, "consecutive_healthy": max(0, i - 2)}
        if at:
            s["at"] = (END + timedelta(seconds=i * 0.4)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out.append(s)
    return out


def test_recovery_monitor_plots_probes_at_their_utc_times():
    samples = monitor_samples()
    fig = diagnose_server_error._plot_monitor(samples)
    top, bottom = fig.axes
    (latency_line,) = bottom.get_lines()
    xs = [num2date(x, tz=UTC) if isinstance(x, float) else x for x in latency_line.get_xdata()]
    assert [x.astimezone(UTC) for x in xs] == [END + timedelta(seconds=i * 0.4) for i in range(5)]
    lo, hi = xlim_utc(bottom)
    assert lo <= END and lo > END - timedelta(seconds=1) and hi >= END + timedelta(seconds=1.6)
    assert bottom.get_xlabel() == "time (UTC)"
    assert_utc_clock(bottom, "%H:%M:%S")
    assert set(labelled_lines(top)) == {"healthy", "not healthy"}
    assert render(fig)


def test_recovery_monitor_times_from_the_start_when_samples_have_none():
    times = plots.sample_times(monitor_samples(at=False), started_at=END.isoformat())
    assert times == [END + timedelta(seconds=i * 0.4) for i in range(5)]
    with pytest.raises(ValueError, match="started_at"):
        plots.sample_times(monitor_samples(at=False))
    fig = plots.recovery_monitor(monitor_samples(at=False), started_at=END)
    assert xlim_utc(fig.axes[1])[0] <= END
    assert render(fig)


# -- 4. `runbook report` ---------------------------------------------------------------------------

def hand_report(incidents: list[tuple[str, str, str]]) -> dict:
    """report()'s shape from (day, class, severity) rows, each with a postmortem."""
    frame = pd.DataFrame(incidents, columns=["day", "class", "severity"])
    counts = pd.crosstab(frame["class"], frame["severity"])
    counts.index.name, counts.columns.name = "class", "severity"
    timing = pd.DataFrame({"incidents": frame.groupby("day").size()})
    timing["postmortems"] = timing["incidents"]
    for col, minutes in (("median_ttd_s", 2), ("median_ttm_s", 10), ("median_ttr_s", 30)):
        timing[col] = [minutes * 60.0] * len(timing)
    timing.index.name = "day"
    return {"counts": counts, "timing": timing, "incidents": len(frame), "without_postmortem": 0}


@pytest.mark.parametrize("incidents", [
    [("2026-11-23", "auth", "P1")],
    [("2026-11-23", "auth", "P1"), ("2026-11-23", "auth", "P2")],
    [("2026-11-23", "auth", "P1"), ("2026-11-23", "rate_limit", "P2"), ("2026-11-25", "provider_error", "P1")],
], ids=["one", "two-same-day", "three-two-days"])
def test_report_counts_whole_incidents_over_the_days_reported(incidents, tmp_path):
    rep = hand_report(incidents)
    png = report.plot_report(rep, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = report.report_figure(rep)
    left, right = fig.axes[:2]
    assert isinstance(left.yaxis.get_major_locator(), MaxNLocator)
    ticks = [t for t in left.get_yticks() if left.get_ylim()[0] <= t <= left.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    days = sorted({datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=UTC) for d, _, _ in incidents})
    lo, hi = xlim_utc(right)
    assert lo == days[0] - timedelta(hours=12) and hi == days[-1] + timedelta(hours=12)
    formatter = right.xaxis.get_major_formatter()
    assert isinstance(formatter, DateFormatter) and formatter.fmt == "%Y-%m-%d" and formatter.tz == UTC
    assert tick_labels(right) == [d.strftime("%Y-%m-%d") for d in
                                  (days[0] + timedelta(days=i) for i in range((days[-1] - days[0]).days + 1))]


# -- 5. deterministic and small --------------------------------------------------------------------

def test_figures_are_deterministic_and_small():
    frame = pd.DataFrame({"time": [pd.Timestamp(END)], "value": [1.0], "code": ["503"]})
    first, second = (render(plots.error_mix(frame, start=START, end=END)) for _ in range(2))
    assert first == second and len(first) < 100_000
