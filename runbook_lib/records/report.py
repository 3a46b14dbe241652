"""`runbook report`: incidents per class x severity and the median times per day, with a PNG.

pandas and matplotlib are imported inside the functions, never at import time: importing this
module (as the CLI does for every command) costs nothing, and `runbook list` never loads them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..paths import is_url
from .archive import SEVERITIES
from .remote import scan


def report(root: str | Path) -> dict[str, Any]:
    """Counts per class x severity, and per day the median times to detect/mitigate/resolve.

    Medians come from postmortem sections only; incidents without one are counted per day but left
    out of the medians (`without_postmortem` says how many), never counted as zero.
    """
    import pandas as pd

    found = scan(root)
    frame = pd.DataFrame(found.incidents, columns=["id", "start", "severity", "error_class", "has_postmortem",
                                                   "ttd_s", "ttm_s", "ttr_s"])
    frame["severity"] = frame["severity"].fillna("unknown")
    frame["error_class"] = frame["error_class"].fillna("unknown")
    counts = pd.crosstab(frame["error_class"], frame["severity"]) if len(frame) else pd.DataFrame()
    if len(counts):
        order = [s for s in SEVERITIES if s in counts.columns] + sorted(set(counts.columns) - set(SEVERITIES))
        counts = counts[order]
        counts.index.name, counts.columns.name = "class", "severity"
    frame["day"] = pd.to_datetime(frame["start"], utc=True, errors="coerce").dt.strftime("%Y-%m-%d")
    dated = frame.dropna(subset=["day"])
    timing = pd.DataFrame(columns=["incidents", "postmortems", "median_ttd_s", "median_ttm_s", "median_ttr_s"])
    if len(dated):
        with_pm = dated[dated["has_postmortem"]]
        timing = pd.DataFrame({"incidents": dated.groupby("day").size(),
                               "postmortems": with_pm.groupby("day").size()}).fillna(0).astype(int)
        for col in ("ttd_s", "ttm_s", "ttr_s"):
            timing[f"median_{col}"] = pd.to_numeric(with_pm[col], errors="coerce").groupby(with_pm["day"]).median()
        timing.index.name = "day"
    return {"counts": counts, "timing": timing, "incidents": len(frame),
            "without_postmortem": int((~frame["has_postmortem"].astype(bool)).sum()),
            "undated": int(len(frame) - len(dated)), "skipped": len(found.skipped)}


def default_plot(root: str | Path) -> Path:
    """Where `runbook report` draws without --plot: beside the archive, or ./report.png for an s3:// one."""
    return Path("report.png") if is_url(root) else Path(root) / "report.png"


def plot_report(rep: dict[str, Any], path: str | Path) -> Path:
    """A PNG: incidents per class stacked by severity, and the median times per day (minutes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report_figure(rep).savefig(path, format="png", dpi=100)
    return path


def report_figure(rep: dict[str, Any]) -> Any:
    """The report's figure, unsaved (tests read its axes).

    Counts get integer ticks (half an incident means nothing) and the days axis spans the days in
    the report, so one day of data is one day wide, not matplotlib's four-year default.
    """
    # not pyplot: no global backend switch inside a notebook
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    counts, timing = rep["counts"], rep["timing"]
    if len(counts):
        counts.plot(kind="bar", stacked=True, ax=left, rot=30)
        left.legend(title="severity", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    else:
        left.text(0.5, 0.5, "no incidents", ha="center", va="center", transform=left.transAxes)
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set(title="Incidents per class and severity", xlabel="class", ylabel="incidents")
    days: set[datetime] = set()
    for col, label in (("median_ttd_s", "time to detect"), ("median_ttm_s", "time to mitigate"),
                       ("median_ttr_s", "time to resolve")):
        series = timing[col].dropna() if col in timing else []
        if len(series):
            x = [_day(d) for d in series.index]
            right.plot(x, [v / 60 for v in series], marker="o", markersize=4, label=label)
            days.update(x)
    if days:
        _days_axis(right, min(days), max(days))
        right.set_ylim(bottom=0)
        right.legend()
    else:
        right.text(0.5, 0.5, "no postmortem timings", ha="center", va="center", transform=right.transAxes)
    right.set(title="Median times per day (postmortems only)", xlabel="day (UTC)", ylabel="minutes")
    # a figure label, not an annotation: the layout makes room for it below the tick labels
    fig.supxlabel(f"{rep.get('without_postmortem', 0)} incident(s) without a postmortem: not in the medians",
                  fontsize=8, x=0.75)
    return fig


def _day(text: str) -> datetime:
    """A report day (`2026-11-23`, UTC) as midnight UTC."""
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)


def _days_axis(ax: Any, first: datetime, last: datetime) -> None:
    """One tick per day (fewer when many), half a day of margin each side: a single day stays a day."""
    from matplotlib.dates import DateFormatter, DayLocator, date2num

    span_days = (last - first).days + 1
    ax.xaxis.set_major_locator(DayLocator(interval=max(1, -(-span_days // 7)), tz=UTC))
    ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d", tz=UTC))
    ax.set_xlim(date2num(first - timedelta(hours=12)), date2num(last + timedelta(hours=12)))
    if span_days > 3:
        ax.tick_params(axis="x", labelrotation=30)


def report_json(rep: dict[str, Any]) -> dict[str, Any]:
    """The report as plain JSON values (NaN medians become null)."""
    def rows(df: Any) -> dict[str, Any]:
        return {str(k): {c: (None if v != v else v) for c, v in row.items()} for k, row in
                df.astype(object).to_dict(orient="index").items()}

    return {**{k: v for k, v in rep.items() if k not in ("counts", "timing")},
            "counts": rows(rep["counts"]), "timing": rows(rep["timing"])}
