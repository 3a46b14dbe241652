"""Incident figures (matplotlib, object API, no pyplot state): traffic and latency over time.

Every figure marks the incident window found by `impact` (shaded) and the applied changes
(vertical lines, labelled), so a reviewer sees at a glance whether a change preceded recovery.
Figures are saved as PNG beside the record and shown inline from the file, which renders the
same in JupyterLab, papermill output and nbconvert HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_SERIES = 8  # more lines than this stop being readable: the rest are summed into "other"


def _figure(rows: int, title: str) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(title)
    return fig, list(axes)


def _marks(ax: Any, impact: dict[str, Any] | None, changes: list[dict[str, Any]], legend: bool) -> None:
    import pandas as pd

    if impact and impact.get("found"):
        ax.axvspan(pd.Timestamp(impact["start"]), pd.Timestamp(impact["end"]), color="tab:red", alpha=0.12,
                   label="incident (detected)")
    for i, c in enumerate(changes):
        if c.get("at"):
            ax.axvline(pd.Timestamp(c["at"]), color="tab:green", linestyle="--", linewidth=1.5,
                       label=f"change: {c.get('action')} ({c.get('who') or '?'})" if legend else None)
            if legend:
                ax.annotate(f"change {i + 1}", (pd.Timestamp(c["at"]), 1), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", color="tab:green", fontsize=8)


def _lines(ax: Any, frame: Any, by: list[str], step_s: float, ylabel: str) -> None:
    """Per-second rates from increments, one line per `by` group (the largest MAX_SERIES; the rest summed)."""
    if frame.empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_ylabel(ylabel)
        return
    wide = frame.pivot_table(index="time", columns=by, values="increase", aggfunc="sum", fill_value=0) / step_s
    wide.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in wide.columns]
    order = wide.sum().sort_values(ascending=False).index
    if len(order) > MAX_SERIES:
        wide["other"] = wide[order[MAX_SERIES - 1:]].sum(axis=1)
        order = [*order[:MAX_SERIES - 1], "other"]
    for name in order:
        ax.plot(wide.index, wide[name], label=name, linewidth=1.4)
    ax.set_ylabel(ylabel)
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
        ax.legend(loc="upper left", fontsize=8, ncols=2)
    bottom.set_xlabel("time (UTC)")
    return fig


def latency(quantiles: dict[str, Any], *, impact: dict[str, Any] | None, changes: list[dict[str, Any]]) -> Any:
    """Latency percentiles over time (seconds), one line per quantile."""
    import pandas as pd

    fig, (ax,) = _figure(1, "Latency of calls to the Mistral API (all models)")
    drawn = 0
    for label, frame in quantiles.items():
        if frame is not None and not frame.empty:
            ax.plot(pd.to_datetime(frame["time"], utc=True), frame["value"].astype(float), label=label)
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no latency data", transform=ax.transAxes, ha="center", va="center", color="grey")
    _marks(ax, impact, changes, legend=True)
    ax.set_ylabel("seconds")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
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
