"""Incident figures (matplotlib, object API, no pyplot state): traffic and latency over time.

Every figure marks the incident window found by `impact` (shaded) and the applied changes
(vertical lines, labelled), so a reviewer sees at a glance whether a change preceded recovery.
Figures are saved as PNG beside the record and shown inline from the file, which renders the
same in JupyterLab, papermill output and nbconvert HTML.

Time axes are always set explicitly (`time_axis`): clock times in UTC over the window the data
covers. Left to itself, matplotlib's date autoscale turns a single sample into a four-year axis,
which is exactly what a 5xx incident looks like in its first minute.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from numbers import Real
from pathlib import Path
from typing import Any

MAX_SERIES = 8  # more lines than this stop being readable: the rest are summed into "other"
# Series can be identical (two models failing the same way): each gets its own dash pattern and
# marker, and earlier series are drawn wider, so a later line on top leaves the earlier one visible.
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_MARKERS = 15  # per line: enough to tell lines apart, few enough to keep the shape readable
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, "fontsize": 8}


PLOTS_EXTRA = "pip install 'mistral-runbooks[plots]'"


def missing() -> str | None:
    """Why figures cannot be drawn here, or None: matplotlib is an extra (`[plots]`), so a production
    image may lack it; the runbooks then leave the figures out and say so, the numbers unchanged."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed ({PLOTS_EXTRA}): figures left out; every number above is complete"
    return None


def _figure(rows: int, title: str, width: float = 11, height: float = 3.2) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(title)
    return fig, list(axes)


def series_style(i: int, points: int) -> dict[str, Any]:
    """Plot keywords for the i-th series: distinct dashes and marker, so overlapping series stay apart.

    Markers also make a one-sample series visible (a single point draws no line).
    """
    every = max(1, points // MAX_MARKERS)
    return {"linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)],
            "markevery": (i % every, every), "markersize": 4.5, "linewidth": max(1.0, 2.4 - 0.35 * i),
            "alpha": 0.9}


def utc(value: Any) -> datetime:
    """An instant (epoch seconds, ISO text, datetime or pandas Timestamp) as an aware UTC datetime."""
    import pandas as pd

    if isinstance(value, Real):  # numpy numbers too: pandas would read a bare number as nanoseconds
        return datetime.fromtimestamp(float(value), UTC)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def time_axis(ax: Any, start: Any, end: Any, *, min_span_s: float = 60.0, pad: float = 0.0) -> None:
    """Clock times in UTC on the x axis over [start, end], never narrower than `min_span_s`.

    Explicit limits and locator: the window asked for is the window shown, however few samples.
    `pad` (a fraction of the span, each side) keeps the markers of the first and last samples whole.
    """
    from matplotlib.dates import MINUTELY, SECONDLY, AutoDateLocator, DateFormatter, date2num

    lo, hi = utc(start), utc(end)
    if hi < lo:
        lo, hi = hi, lo
    missing = timedelta(seconds=min_span_s) - (hi - lo)
    if missing > timedelta(0):
        lo, hi = lo - missing / 2, hi + missing / 2
    lo, hi = lo - (hi - lo) * pad, hi + (hi - lo) * pad
    span = (hi - lo).total_seconds()
    fmt = "%H:%M:%S" if span < 240 else "%H:%M" if span <= 86400 else "%m-%d %H:%M"
    locator = AutoDateLocator(tz=UTC, minticks=3, maxticks=10)
    for freq in (SECONDLY, MINUTELY):  # add 2 s / 2 min steps: a 10 s watch gets more than two ticks
        locator.intervald[freq] = [1, 2, 5, 10, 15, 30]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(DateFormatter(fmt, tz=UTC))
    ax.set_xlim(date2num(lo), date2num(hi))


def _legend(ax: Any) -> None:
    """A legend beside the axes (it never hides data), only when something is labelled.

    `ax.legend()` on axes without a labelled artist warns "No artists with labels found", which a
    kernel prints to stderr: a red box in the record for a figure that is fine.
    """
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**LEGEND)


def _marks(ax: Any, impact: dict[str, Any] | None, changes: list[dict[str, Any]], legend: bool) -> None:
    import pandas as pd

    if impact and impact.get("found"):
        ax.axvspan(pd.Timestamp(impact["start"]), pd.Timestamp(impact["end"]), color="tab:red", alpha=0.12,
                   label="incident (detected)" if legend else None)
    for i, c in enumerate(changes):
        if c.get("at"):
            ax.axvline(pd.Timestamp(c["at"]), color="tab:green", linestyle="--", linewidth=1.5,
                       label=f"change: {c.get('action')} ({c.get('who') or '?'})" if legend else None)
            if legend:
                ax.annotate(f"change {i + 1}", (pd.Timestamp(c["at"]), 1), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", color="tab:green", fontsize=8)


def _instants(frames: list[Any], impact: dict[str, Any] | None, changes: list[dict[str, Any]]) -> list[datetime]:
    """Every instant a figure shows: its samples, the incident window and the changes."""
    out = [utc(t) for f in frames if f is not None and not f.empty for t in (f["time"].min(), f["time"].max())]
    if impact and impact.get("found"):
        out += [utc(impact["start"]), utc(impact["end"])]
    return out + [utc(c["at"]) for c in changes if c.get("at")]


def _lines(ax: Any, frame: Any, by: list[str], step_s: float, ylabel: str) -> None:
    """Per-second rates from increments, one line per `by` group (the largest MAX_SERIES; the rest summed)."""
    ax.set_ylabel(ylabel)
    if frame.empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    wide = frame.pivot_table(index="time", columns=by, values="increase", aggfunc="sum", fill_value=0) / step_s
    wide.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in wide.columns]
    order = wide.sum().sort_values(ascending=False, kind="stable").index
    if len(order) > MAX_SERIES:
        wide["other"] = wide[order[MAX_SERIES - 1:]].sum(axis=1)
        order = [*order[:MAX_SERIES - 1], "other"]
    for i, name in enumerate(order):
        ax.plot(wide.index, wide[name], label=name, **series_style(i, len(wide)))
    top = float(wide[list(order)].to_numpy().max())
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)  # headroom for the change labels along the top
    ax.grid(alpha=0.3)


def traffic(requests: Any, errors: Any, *, step_s: float, impact: dict[str, Any] | None,
            changes: list[dict[str, Any]], source: str = "metrics") -> Any:
    """Request rate per model and code (top) and error rate per model and code (bottom)."""
    fig, (top, bottom) = _figure(2, f"Calls to the Mistral API per model and status code ({source}, per "
                                     f"{step_s:g} s step)")
    _lines(top, requests, ["model", "code"], step_s, "requests/s")
    _lines(bottom, errors, ["model", "code"], step_s, "failed calls/s")
    for i, ax in enumerate((top, bottom)):
        _marks(ax, impact, changes, legend=i == 0)
        _legend(ax)
    if when := _instants([requests, errors], impact, changes):
        time_axis(top, min(when), max(when), min_span_s=4 * step_s, pad=0.01)
    bottom.set_xlabel("time (UTC)")
    return fig


def latency(quantiles: dict[str, Any], *, impact: dict[str, Any] | None, changes: list[dict[str, Any]],
            threshold_s: float | None = None) -> Any:
    """Latency percentiles over time (seconds), one line per quantile, and the bound calls are judged by.

    `threshold_s` (the postmortem's `latency_threshold_s`) is drawn as a labelled horizontal line, so
    a reviewer sees when the percentiles crossed the bound that makes a call "slow".
    """
    import pandas as pd

    fig, (ax,) = _figure(1, "Latency of calls to the Mistral API (all models)")
    drawn = 0
    for label, frame in quantiles.items():
        if frame is not None and not frame.empty:
            ax.plot(pd.to_datetime(frame["time"], utc=True), frame["value"].astype(float), label=label,
                    **series_style(drawn, len(frame)))
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no latency data", transform=ax.transAxes, ha="center", va="center", color="grey")
    if threshold_s is not None:
        ax.axhline(threshold_s, color="tab:red", linestyle=(0, (6, 3)), linewidth=1.3,
                   label=f"latency threshold ({threshold_s:g} s)")
    _marks(ax, impact, changes, legend=True)
    if when := _instants(list(quantiles.values()), impact, changes):
        time_axis(ax, min(when), max(when), pad=0.01)
    peaks = [f["value"].astype(float).max() for f in quantiles.values() if f is not None and not f.empty]
    highest = float(pd.Series([*peaks, threshold_s or 0.0], dtype=float).max())  # NaN (no calls) skipped
    ax.set_ylim(0, highest * 1.15 if highest > 0 else 1)  # headroom for the change labels along the top
    ax.set_ylabel("seconds")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def error_mix(frame: Any, *, start: Any, end: Any) -> Any:
    """5xx per second by status code over the queried window [start, end], one marked line per code.

    The x axis is the window queried, not the samples' extent: at the start of an incident a code
    has one sample, and the reviewer must see where in the last 30 min it falls.
    """
    import pandas as pd

    fig, (ax,) = _figure(1, "Mistral API errors per second by status code (last 30 min)", width=8, height=3)
    if frame is None or frame.empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
    else:
        for i, (code, grp) in enumerate(frame.sort_values("time").groupby("code", sort=True)):
            # not clipped: the newest sample sits on the window's right edge and must show whole
            ax.plot(pd.to_datetime(grp["time"], utc=True), grp["value"].astype(float), label=f"HTTP {code}",
                    clip_on=False, **series_style(i, len(grp)))
        top = float(frame["value"].astype(float).max())
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)  # NaN or 0: still a readable axis
    time_axis(ax, start, end)
    ax.set_ylabel("errors/s")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def sample_times(samples: list[dict[str, Any]], started_at: Any = None) -> list[datetime]:
    """Each monitor sample's UTC time: its own `at`, else `started_at` plus its `t_s`."""
    out = []
    for s in samples:
        if s.get("at"):
            out.append(utc(s["at"]))
        elif started_at is not None:
            out.append(utc(started_at) + timedelta(seconds=float(s["t_s"])))
        else:
            raise ValueError("a monitor sample without `at` needs the monitor's start time (started_at)")
    return out


def recovery_monitor(samples: list[dict[str, Any]], *, started_at: Any = None) -> Any:
    """The recovery watch: HTTP status (healthy green, else red) and latency of each probe, at UTC times."""
    fig, (top, bottom) = _figure(2, "Recovery monitor: GET /v1/models", width=8, height=2.2)
    times = sample_times(samples, started_at)
    codes = [s.get("status_code") or 0 for s in samples]
    top.step(times, codes, where="post", color="grey", linewidth=1)
    for healthy, color, label in ((True, "tab:green", "healthy"), (False, "tab:red", "not healthy")):
        pts = [(t, c) for t, c, s in zip(times, codes, samples) if bool(s.get("healthy")) is healthy]
        if pts:
            top.plot([t for t, _ in pts], [c for _, c in pts], linestyle="none", marker="o", color=color,
                     label=label)
    top.set_ylabel("HTTP status\n(0 = none)")
    top.margins(y=0.15)
    bottom.plot(times, [s.get("latency_ms") for s in samples], marker="o", markersize=4, color="tab:orange")
    bottom.set_ylabel("latency ms")
    bottom.margins(y=0.1)
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("time (UTC)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    _legend(top)
    if times:  # from the first probe on (the watch's start)
        time_axis(top, min(times), max(max(times), min(times) + timedelta(seconds=10)), min_span_s=10, pad=0.03)
    else:
        top.text(0.5, 0.5, "no probes", transform=top.transAxes, ha="center", va="center", color="grey")
    return fig


def save_and_show(fig: Any, path: str | Path) -> Path:
    """Write the PNG and show it inline (from the file) when running in a kernel."""
    path = Path(path)
    fig.savefig(path, dpi=90)
    from ..record import ipython

    if ipython() is not None:
        from IPython.display import Image, display

        display(Image(filename=str(path)))
    return path
