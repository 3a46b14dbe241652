"""When the incident started, peaked and ended, and what it cost, from counters (or logs).

Detection works on per-step counts, not on `rate()` curves: a `[1m]` rate stays up for a minute
after the errors stop and smears the start, while counter increments between two samples say
exactly how many calls failed in that interval. A step is *bad* when its errors reach `min_errors`
and `min_ratio` of its calls. Bad steps separated by at most `max_gap` good ones form one episode;
the incident is the episode with the most failed calls. Its start is the beginning of its first
bad step (the errors began in that interval), its end the end of its last bad step, its peak the
step with the highest error ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .._time import iso_z

MIN_RATIO = 0.05
MIN_ERRORS = 1
MAX_GAP_STEPS = 2


def increments(frame: Any, keys: tuple[str, ...] = ("model", "code"), origin: Any = None) -> Any:
    """Per-interval increases of counter series (a long export: time, value, *keys) -> time, *keys, increase.

    A drop is a counter reset (a restarted pod): the new value is what was counted since. A series
    present at the first sample of the export is its baseline; one that appears later was born
    there, so its first value counts (client libraries create a labelled counter at its first event).
    `origin` is when the data begins (default: this export's first sample); pass the earliest sample
    of a series known to exist throughout (total requests) so error series born later are counted.
    """
    import numpy as np
    import pandas as pd

    keys = tuple(k for k in keys if k in frame.columns)
    columns = ["time", *keys, "increase"]
    if frame.empty or "value" not in frame:
        return pd.DataFrame(columns=columns)
    frame = frame.dropna(subset=["value"]).copy()
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    first_time = frame["time"].min() if origin is None else pd.Timestamp(origin)
    parts = []
    for key, g in (frame.groupby(list(keys), dropna=False, sort=True) if keys else [((), frame)]):
        g = g.sort_values("time")
        v = g["value"].to_numpy(dtype=float)
        d = np.diff(v, prepend=np.nan)
        d = np.where(d < 0, v, d)
        d[0] = np.nan if g["time"].iloc[0] <= first_time else v[0]  # a baseline is not an interval
        part = pd.DataFrame({"time": g["time"].to_numpy(), "increase": d}).dropna(subset=["increase"])
        for name, value in zip(keys, key if isinstance(key, tuple) else (key,), strict=True):
            part[name] = str(value)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)[columns].sort_values("time", ignore_index=True)


def per_step(requests: Any, errors: Any) -> Any:
    """Requests, errors and error ratio per sample time (all models and codes) from two increment frames."""
    import pandas as pd

    req = requests.groupby("time")["increase"].sum() if not requests.empty else pd.Series(dtype=float)
    err = errors.groupby("time")["increase"].sum() if not errors.empty else pd.Series(dtype=float)
    steps = pd.DataFrame({"requests": req, "errors": err}).fillna(0.0).sort_index()
    steps.index.name = "time"
    # a call that got no answer may be counted as an error only: never a ratio above 1
    steps["error_ratio"] = steps["errors"] / steps[["requests", "errors"]].max(axis=1).clip(lower=1)
    return steps


@dataclass
class Impact:
    found: bool
    method: str
    start: str | None = None
    peak: str | None = None
    end: str | None = None
    duration_s: float | None = None
    peak_error_ratio: float | None = None
    failed_requests: int = 0
    requests: int = 0
    failed_in_window: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)
    source: str = "metrics"
    step_s: float | None = None

    @property
    def affected_models(self) -> list[str]:
        return sorted(m for m, n in self.by_model.items() if n > 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "affected_models": self.affected_models}


def describe_method(step_s: float, min_ratio: float, min_errors: int, max_gap: int) -> str:
    return (f"counter increments per {step_s:g} s step; a step is bad when it has >= {min_errors} failed "
            f"call(s) and >= {min_ratio:.0%} of its calls failed; bad steps up to {max_gap} step(s) apart form "
            "one episode; the incident is the episode with the most failed calls: start = start of its first "
            "bad step, end = end of its last, peak = its highest error ratio")


def detect(steps: Any, errors: Any, *, step_s: float, min_ratio: float = MIN_RATIO, min_errors: int = MIN_ERRORS,
           max_gap: int = MAX_GAP_STEPS, source: str = "metrics") -> Impact:
    """Find the incident in `per_step` counts and count its failed calls from `errors` increments."""
    import pandas as pd

    method = describe_method(step_s, min_ratio, min_errors, max_gap)
    if steps.empty:
        return Impact(False, method + " (no data in the window)", source=source, step_s=step_s)
    bad = (steps["errors"] >= min_errors) & (steps["error_ratio"] >= min_ratio)
    times = list(steps.index[bad])
    if not times:
        return Impact(False, method, failed_in_window=int(steps["errors"].sum()), source=source, step_s=step_s)
    episodes: list[list[Any]] = [[times[0]]]
    for t in times[1:]:
        if (t - episodes[-1][-1]).total_seconds() <= (max_gap + 1) * step_s + 1e-6:
            episodes[-1].append(t)
        else:
            episodes.append([t])
    best = max(episodes, key=lambda ep: steps.loc[ep[0]:ep[-1], "errors"].sum())
    start, end = best[0] - pd.Timedelta(seconds=step_s), best[-1]
    inside = steps.loc[best[0]:best[-1]]
    peak = inside.sort_values(["error_ratio", "errors"], ascending=False).index[0]
    window_errors = errors[(errors["time"] >= best[0]) & (errors["time"] <= best[-1])] if not errors.empty else errors
    by_model = ({str(k): int(v) for k, v in window_errors.groupby("model")["increase"].sum().items()}
                if "model" in window_errors else {})
    by_code = ({str(k): int(v) for k, v in window_errors.groupby("code")["increase"].sum().items()}
               if "code" in window_errors else {})
    return Impact(True, method, start=iso_z(start), peak=iso_z(peak), end=iso_z(end),
                  duration_s=(end - start).total_seconds(), peak_error_ratio=round(float(inside.loc[peak,
                                                                                                   "error_ratio"]), 4),
                  failed_requests=int(round(inside["errors"].sum())), requests=int(round(inside["requests"].sum())),
                  failed_in_window=int(round(steps["errors"].sum())), by_model=by_model, by_code=by_code,
                  source=source, step_s=step_s)
