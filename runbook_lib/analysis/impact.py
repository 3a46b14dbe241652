"""When the incident started, peaked and ended, and what it cost: the one impact model.

A call is *bad* for our users when it failed (non-2xx or no answer), timed out, or took longer than
the latency threshold; a step in which traffic was expected but no call completed at all is bad
too (calls are hanging). Triage, the diagnoses, the postmortem and the report all use this model.

Detection works on per-step counts, not on `rate()` curves: a `[1m]` rate stays up for a minute
after the errors stop and smears the start, while counter increments between two samples say
exactly how many calls failed (or were slow) in that interval. A step is bad when its bad calls
reach `min_errors` and `min_ratio` of its calls, or when it is stalled. Bad steps separated by at
most `max_gap` good ones form one episode. The incident is the episode that contains this
incident's own detection, or the nearest one that began before it (a little after, within the
sampling lag, also counts): never the worst episode of the window, which may be another incident.
Its start is the beginning of its first bad step, its end the end of its last, its peak the step
with the highest bad ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .._time import iso_z

MIN_RATIO = 0.05
MIN_ERRORS = 1
MAX_GAP_STEPS = 2
LATENCY_THRESHOLD_S = 2.0     # the triage's default latency threshold (2000 ms)
DETECTION_LAG_STEPS = 2       # an episode first seen this many steps after detection is still this one


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


def per_step(requests: Any, errors: Any, slow: Any = None) -> Any:
    """Requests, errors, slow and bad calls and the bad ratio per sample time (all models and codes).

    `slow` (optional) is an increment frame of calls over the latency threshold. A call that both
    failed and was slow (a timeout) is one bad call: per step, bad = max(errors, slow), a lower
    bound when failures and slowness mix in one step, exact when one of them is zero.
    """
    import pandas as pd

    def total(frame: Any) -> Any:
        return frame.groupby("time")["increase"].sum() if frame is not None and not frame.empty \
            else pd.Series(dtype=float)

    steps = pd.DataFrame({"requests": total(requests), "errors": total(errors), "slow": total(slow)})
    steps = steps.fillna(0.0).sort_index()
    steps.index.name = "time"
    steps["bad"] = steps[["errors", "slow"]].max(axis=1)
    # a call that got no answer may be counted as an error only: never a ratio above 1
    denominator = steps[["requests", "bad"]].max(axis=1).clip(lower=1)
    steps["error_ratio"] = steps["errors"] / denominator
    steps["bad_ratio"] = steps["bad"] / denominator
    return steps


def slow_increments(buckets: Any, threshold_s: float, origin: Any = None) -> tuple[Any, float | None]:
    """Calls slower than the threshold per interval, from a duration histogram's cumulative buckets.

    `buckets` is a long export of `sum by (le) (..._bucket)` counters. A histogram only knows its
    bucket bounds, so the bound used is the smallest `le` at or above the threshold: calls slower
    than that bound are counted (returned as the second value, None when no bucket fits).
    """
    import pandas as pd

    empty = pd.DataFrame(columns=["time", "increase"])
    if buckets is None or buckets.empty or "le" not in buckets:
        return empty, None
    les = sorted({float(x) for x in buckets["le"].astype(str) if x not in ("+Inf", "inf")})
    bound = next((b for b in les if b >= threshold_s - 1e-9), None)
    if bound is None:
        return empty, None
    le = buckets["le"].astype(str)
    total = buckets[le.isin(["+Inf", "inf"])]
    under = buckets[le.map(lambda x: x not in ("+Inf", "inf") and abs(float(x) - bound) < 1e-9)]
    inc_total = increments(total.drop(columns=["le"]), keys=(), origin=origin)
    inc_under = increments(under.drop(columns=["le"]), keys=(), origin=origin)
    merged = pd.merge(inc_total, inc_under, on="time", how="left", suffixes=("_all", "_fast")).fillna(0.0)
    merged["increase"] = (merged["increase_all"] - merged["increase_fast"]).clip(lower=0)
    return merged[["time", "increase"]], bound


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
    slow_requests: int = 0            # calls over the latency bound in the incident (failed ones included)
    bad_requests: int = 0             # failed, timed out or slow: what users felt, each call once
    stalled_steps: int = 0            # steps with traffic expected but no call completing
    unanswered_s: float = 0.0         # longest stretch of the episode in which no call was answered in time
    latency_bound_s: float | None = None
    selected_by: str = ""             # how this episode was chosen among those in the window
    episodes: int = 0                 # bad episodes seen in the whole window
    by_model: dict[str, int] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)
    source: str = "metrics"
    step_s: float | None = None

    @property
    def affected_models(self) -> list[str]:
        return sorted(m for m, n in self.by_model.items() if n > 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "affected_models": self.affected_models}


def describe_method(step_s: float, min_ratio: float, min_errors: int, max_gap: int,
                    latency_bound_s: float | None = None) -> str:
    slow = (f"or slower than {latency_bound_s:g} s (the duration histogram's bucket at or above the threshold)"
            if latency_bound_s else "(no latency histogram: slow calls not counted)")
    return (f"counter increments per {step_s:g} s step; a call is bad when it failed, timed out {slow}; "
            f"a step is bad when it has >= {min_errors} bad call(s) and >= {min_ratio:.0%} of its calls were bad, "
            f"or when traffic was expected but no call completed; bad steps up to {max_gap} step(s) apart form "
            "one episode; the incident is the episode containing its response's start (or the nearest one before it): "
            "start = start of its first bad step, end = end of its last, peak = its highest bad ratio")


def expected_calls(steps: Any) -> float:
    """Calls per step when healthy: the median over steps that completed calls and were not bad."""
    healthy = steps[(steps["requests"] > 0) & (steps["bad"] == 0)]["requests"]
    if healthy.empty:
        healthy = steps[steps["requests"] > 0]["requests"]
    return float(healthy.median()) if not healthy.empty else 0.0


def bad_steps(steps: Any, *, min_ratio: float, min_errors: int) -> tuple[Any, Any]:
    """(bad, stalled) boolean series: a stalled step completed no call while calls were expected."""
    expected = expected_calls(steps)
    stalled = (steps["requests"] == 0) & (steps["bad"] == 0) & (expected >= 1.0)
    # a stalled step between data points only: the first and last samples may be partial
    bad = ((steps["bad"] >= min_errors) & (steps["bad_ratio"] >= min_ratio)) | stalled
    return bad, stalled


def longest_unanswered(inside: Any) -> int:
    """The longest run of consecutive steps in which no call was answered in time (every call that
    completed was bad, or none completed): a hang's core, told from its edges, where calls that timed
    out share their step with calls answered once the fault had ended."""
    best = run = 0
    for good in (inside["requests"] - inside["bad"]).tolist():
        run = run + 1 if good < 0.5 else 0
        best = max(best, run)
    return best


def episodes_of(times: list[Any], step_s: float, max_gap: int) -> list[list[Any]]:
    """Bad step times grouped into episodes (gaps of at most `max_gap` good steps inside one)."""
    if not times:
        return []
    out: list[list[Any]] = [[times[0]]]
    for t in times[1:]:
        if (t - out[-1][-1]).total_seconds() <= (max_gap + 1) * step_s + 1e-6:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def choose_episode(episodes: list[list[Any]], steps: Any, step_s: float, detected_at: Any = None
                   ) -> tuple[list[Any] | None, str]:
    """The episode of *this* incident: containing its response's start (`detected_at`: when the
    incident was taken up), or the latest that began before it.

    An episode first seen up to DETECTION_LAG_STEPS after detection still counts (counters are
    sampled; a fast alert or triage can come before the first bad sample). Without a detection
    time the episode with the most bad calls is taken, and the method says so.
    """
    import pandas as pd

    if not episodes:
        return None, "no bad episode in the window"
    if detected_at is None:
        best = max(episodes, key=lambda ep: steps.loc[ep[0]:ep[-1], "bad"].sum())
        return best, "no detection time known: the episode with the most bad calls in the window"
    detected = pd.Timestamp(detected_at)
    detected = detected.tz_localize("UTC") if detected.tzinfo is None else detected.tz_convert("UTC")
    lag = pd.Timedelta(seconds=DETECTION_LAG_STEPS * step_s)
    candidates = [ep for ep in episodes if ep[0] - pd.Timedelta(seconds=step_s) <= detected + lag]
    if not candidates:
        return None, f"no bad episode began before this incident's response start ({iso_z(detected)})"
    chosen = max(candidates, key=lambda ep: ep[0])
    begun = chosen[0] - pd.Timedelta(seconds=step_s)
    how = ("the episode containing this incident's response start" if begun <= detected <= chosen[-1] else
           "the episode first seen just after this incident's response start (sampling lag)" if begun > detected else
           "the latest episode that began before this incident's response start")
    return chosen, f"{how} ({iso_z(detected)}), of {len(episodes)} in the window"


def detect(steps: Any, errors: Any, *, step_s: float, min_ratio: float = MIN_RATIO, min_errors: int = MIN_ERRORS,
           max_gap: int = MAX_GAP_STEPS, source: str = "metrics", detected_at: Any = None,
           latency_bound_s: float | None = None) -> Impact:
    """Find this incident's episode in `per_step` counts and count its calls from `errors` increments."""
    import pandas as pd

    method = describe_method(step_s, min_ratio, min_errors, max_gap, latency_bound_s)
    base = {"source": source, "step_s": step_s, "latency_bound_s": latency_bound_s}
    if steps.empty:
        return Impact(False, method + " (no data in the window)", **base)
    if "bad" not in steps:  # older callers: errors only
        steps = steps.assign(slow=0.0, bad=steps["errors"], bad_ratio=steps["error_ratio"])
    bad, stalled = bad_steps(steps, min_ratio=min_ratio, min_errors=min_errors)
    episodes = episodes_of(list(steps.index[bad]), step_s, max_gap)
    best, how = choose_episode(episodes, steps, step_s, detected_at)
    if best is None:
        return Impact(False, method, failed_in_window=int(steps["errors"].sum()), selected_by=how,
                      episodes=len(episodes), **base)
    start, end = best[0] - pd.Timedelta(seconds=step_s), best[-1]
    inside = steps.loc[best[0]:best[-1]]
    peak = inside.sort_values(["bad_ratio", "bad"], ascending=False).index[0]
    window_errors = errors[(errors["time"] >= best[0]) & (errors["time"] <= best[-1])] if not errors.empty else errors
    by_model = ({str(k): int(v) for k, v in window_errors.groupby("model")["increase"].sum().items() if v > 0}
                if "model" in window_errors else {})
    by_code = ({str(k): int(v) for k, v in window_errors.groupby("code")["increase"].sum().items() if v > 0}
               if "code" in window_errors else {})
    return Impact(True, method, start=iso_z(start), peak=iso_z(peak), end=iso_z(end),
                  duration_s=(end - start).total_seconds(),
                  peak_error_ratio=round(float(inside.loc[peak, "bad_ratio"]), 4),
                  failed_requests=int(round(inside["errors"].sum())), requests=int(round(inside["requests"].sum())),
                  failed_in_window=int(round(steps["errors"].sum())), by_model=by_model, by_code=by_code,
                  slow_requests=int(round(inside["slow"].sum())), bad_requests=int(round(inside["bad"].sum())),
                  stalled_steps=int(stalled.loc[best[0]:best[-1]].sum()), selected_by=how,
                  unanswered_s=longest_unanswered(inside) * step_s,
                  episodes=len(episodes), **base)
