"""Error-rate estimate from our service's log lines, for when Prometheus is down.

The seed's error table says "Metrics unavailable (Prometheus down) -> fall back to app logs". Our
service logs one JSON line per Mistral call (`model`, `code`, `latency_ms`); counting those over
the window gives an estimate of the same figures step 3 reads from Prometheus. It is labelled an
estimate: log lines can be sampled, dropped or cut by `--since`/`--tail`.

What a request and an error are comes from `loglines` (the same rule as the postmortem's `logagg`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .loglines import is_error, parse, request

__all__ = ["estimate_error_rate", "parse"]


def _entry(line: str | dict[str, Any]) -> dict[str, Any] | None:
    """A raw line, or an entry already read by `kube` (its raw text under "line")."""
    if isinstance(line, dict):
        return parse(str(line["line"])) if "line" in line else line
    return parse(line)


def estimate_error_rate(lines: list[str] | list[dict[str, Any]], window_s: float,
                        no_source: str | None = None) -> dict[str, Any]:
    """Requests, errors and per-second rates per model from request log lines over `window_s`.

    `no_source` is why there were no lines to read at all (e.g. `kube`'s "no pods matched ...");
    it becomes the estimate's `reason`, so an empty estimate is never read as "no requests".
    """
    per_model: dict[str, dict[str, float]] = defaultdict(lambda: {"requests": 0, "errors": 0})
    per_code: dict[str, int] = defaultdict(int)
    for line in lines:
        entry = _entry(line)
        seen = request(entry) if entry else None
        if seen is None:
            continue
        model, code = seen
        per_model[model]["requests"] += 1
        if is_error(code):
            per_model[model]["errors"] += 1
            per_code[str(code)] += 1
    requests = sum(v["requests"] for v in per_model.values())
    errors = sum(v["errors"] for v in per_model.values())
    return {
        "estimate": True,
        "source": "pod logs",
        "reason": no_source if no_source else None if requests else "no request lines in the pods' logs",
        "window_s": window_s,
        "requests": requests,
        "errors": errors,
        "error_ratio": round(errors / requests, 4) if requests else None,
        "per_model": {m: {"requests_per_s": round(v["requests"] / window_s, 4),
                          "errors_per_s": round(v["errors"] / window_s, 4)} for m, v in sorted(per_model.items())},
        "errors_per_code": {c: round(n / window_s, 4) for c, n in sorted(per_code.items())},
    }
