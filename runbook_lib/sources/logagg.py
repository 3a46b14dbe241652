"""Streaming per-minute/model/code counts from our service's JSON-lines logs, for the postmortem.

Why: a postmortem needs the request and error curve over the whole incident, and the logs that
hold it (our service's one-line-per-call log, or an evidence bundle's `logs/pods.jsonl`) can be
millions of lines, gzip'd, bigger than RAM. `aggregate` reads them in large byte blocks and keeps
only one counter per (bucket, model, code), so memory follows the number of groups, not lines.

Speed: a per-line `json.loads` reading takes ~4.5 s for 1M lines; this takes ~1.5 s (one core, 213 MB).
Each block goes through one compiled regex (`re.findall`, all in C) that *fully validates* a line
as a flat JSON object (string/number/literal values, any key order; our service's own key order is
tried first, it is quicker) while capturing `ts`, `model` and `code`. Any line it cannot vouch for
(nested values, escapes in the three fields, another timestamp form, `null` code, plain text,
truncation) takes the `json.loads` path, so the counts equal a plain `json.loads` reading.

What a line counts as (both paths) is `loglines`' schema and rule, shared with triage's
`logstats`: a JSON object whose `code` is not null is a request; `model` is `str(model or "?")`,
`code` is `str(code)`, an error is any code other than three ASCII digits starting with 2 ("2xx"
as text is an error). `ts` must be a string `_time.parse` accepts (ISO 8601; naive = UTC); it is
floored to whole seconds and then to `freq_s`. Everything else is skipped, by reason: `not_json`
(plain text, blank, malformed, not an object), `no_code` (other log records), `bad_ts`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._time import parse as parse_time
from . import loglines
from .loglines import is_error

if TYPE_CHECKING:
    import pandas as pd

CHUNK_BYTES = 4 << 20
COLUMNS = ("bucket", "model", "code", "requests", "errors")
SKIP_REASONS = ("not_json", "no_code", "bad_ts")

# -- the fast path: one regex that validates a flat JSON object and captures ts/model/code --------
_WS = rb"[ \t\r]*+"  # JSON whitespace inside a line (\n ends it); \f or \v make json.loads fail, so here too
_C = rb'[^"\\\x00-\x1f]'  # a string character needing no escape (raw control characters are invalid JSON)
_STR = rb'"' + _C + rb'*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})' + _C + rb'*+)*+"'
_NUM = rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][-+]?[0-9]++)?"
_VALUE = rb"(?:" + _STR + rb"|" + _NUM + rb"|true|false|null|NaN|-?Infinity)"  # json.loads takes NaN/Infinity
_COLON = _WS + rb":" + _WS
_K_TS, _K_MODEL, _K_CODE = (re.escape(k.encode()) for k in (loglines.TS, loglines.MODEL, loglines.CODE))
_TS = rb'"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.[0-9]++)?(Z|[+-][0-9]{2}:[0-9]{2})"'
# ts: seconds and offset captured (the fraction cannot move a whole-second floor); `model` and `code`
# captured with their quotes so an empty string differs from an absent key; `code` may be a plain int.
_MEMBER = (rb'"(?:' + _K_TS + rb'"' + _COLON + _TS
           + rb"|" + _K_MODEL + rb'"' + _COLON + rb'("' + _C + rb'*+")'
           + rb"|" + _K_CODE + rb'"' + _COLON + rb'("' + _C + rb'*+"|0|[1-9][0-9]{0,15})'
           + rb"|(?!(?:" + _K_TS + rb"|" + _K_MODEL + rb"|" + _K_CODE + rb')")' + _C + rb'*+"' + _COLON + _VALUE
           + rb")")
# Members separated by commas, no trailing comma; a repeated capture keeps its last value, as
# json.loads keeps the last of duplicate keys.
_OBJECT = _WS + rb"\{" + _WS + rb"(?:" + _MEMBER + _WS + rb'(?:,' + _WS + rb'(?=")|(?=\})))*+\}' + _WS
# Our service's own line (`loglines.FIELDS`, in the order `json.dumps` writes them), tried first:
# one fixed sequence validates ~1.5x faster than the any-order loop above. Same captures (ts, model,
# code: FIELDS has them in that order).
_SERVICE_VALUES = {loglines.TS: _TS, loglines.LEVEL: _STR, loglines.MSG: _STR, loglines.MODEL: rb'("' + _C + rb'*+")',
                   loglines.CODE: rb'("' + _C + rb'*+")', loglines.LATENCY_MS: _NUM,
                   loglines.CORRELATION_ID: rb"(?:" + _STR + rb"|null)"}
_SERVICE = (rb"\{" + rb", ".join(rb'"' + re.escape(k.encode()) + rb'": ' + _SERVICE_VALUES[k] for k in loglines.FIELDS)
            + rb"\}")
# Lines neither pattern vouches for are captured whole, for json.loads.
_LINE_RX = re.compile(rb"^(?:" + _SERVICE + rb"|" + _OBJECT + rb"|(.+))$", re.MULTILINE)


@dataclass
class LogAggregate:
    """Request/error counts per (bucket, model, code) and what was read to get them.

    `frame` columns: bucket (UTC Timestamp, floored to `freq_s`), model, code, requests, errors;
    sorted by bucket, model, code. `first_ts`/`last_ts` are the first/last request, to the second.
    `lines` = `parsed` (requests counted) + `skipped`; `skipped_by` splits `skipped` by reason.
    """

    frame: pd.DataFrame
    lines: int
    parsed: int
    skipped: int
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None
    source: str
    freq_s: int = 60
    skipped_by: dict[str, int] = field(default_factory=dict)


def ts_epoch(value: Any) -> int | None:
    """Whole seconds since the epoch of a log `ts` (ISO 8601 string, naive = UTC), or None.

    Read by `_time.parse`, the project's one ISO reader, so a time the records accept counts here
    too. It costs ~2 us a call more than a bare `datetime.fromisoformat`: nothing measurable on
    benchmarks/evidence.py (the regex path calls this once per distinct minute), ~25% more CPU
    on a file where every line takes the json.loads path.
    """
    dt = parse_time(value)
    if dt is None:
        return None
    try:
        return int(dt.replace(microsecond=0).timestamp())
    except (OverflowError, ValueError):
        return None


class _Counts:
    """The running totals: one counter per (bucket, model, code), plus line bookkeeping."""

    def __init__(self, freq_s: int) -> None:
        self.freq_s = freq_s
        self.groups: dict[tuple[int, str, str], int] = {}
        self.lines = 0
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.first: int | None = None
        self.last: int | None = None
        self._minutes: dict[tuple[bytes, bytes], int | None] = {}
        self._text: dict[bytes, str] = {}

    def _minute(self, sec: bytes, tz: bytes) -> int | None:
        key = (sec[:16], tz)
        try:
            return self._minutes[key]
        except KeyError:
            if len(self._minutes) > 100_000:  # bounded: months of distinct minutes, then start over
                self._minutes.clear()
            value = self._minutes[key] = ts_epoch((sec[:16] + b":00" + tz).decode("ascii"))
            return value

    def _str(self, raw: bytes) -> str:
        """A captured value as text (quotes stripped); cached, the set of models/codes is small."""
        try:
            return self._text[raw]
        except KeyError:
            if len(self._text) > 10_000:
                self._text.clear()
            text = self._text[raw] = (raw[1:-1] if raw[:1] == b'"' else raw).decode("utf-8", "replace")
            return text

    def add(self, epoch: int, model: str, code: str, n: int) -> None:
        key = (epoch - epoch % self.freq_s, model, code)
        self.groups[key] = self.groups.get(key, 0) + n
        if self.first is None or epoch < self.first:
            self.first = epoch
        if self.last is None or epoch > self.last:
            self.last = epoch

    def block(self, data: bytes) -> None:
        """Count one block of whole lines (it ends with a newline)."""
        rows = Counter(_LINE_RX.findall(data))
        lines = data.count(b"\n")
        self.lines += lines
        matched = 0
        for (sec, tz, model, code, sec2, tz2, model2, code2, raw), n in rows.items():
            matched += n
            if not sec:  # not our service's layout: the any-order groups
                sec, tz, model, code = sec2, tz2, model2, code2
            if raw:
                self._slow(raw, n)
            elif not code:
                self.skipped["no_code"] += n
            elif not sec:
                self.skipped["bad_ts"] += n
            else:
                minute = self._minute(sec, tz)
                second = int(sec[17:19])
                if minute is None or second > 59:
                    self.skipped["bad_ts"] += n
                else:
                    self.add(minute + second, self._str(model) or loglines.UNKNOWN_MODEL, self._str(code), n)
        self.skipped["not_json"] += lines - matched  # empty lines: no match at all, and json.loads fails

    def _slow(self, raw: bytes, n: int) -> None:
        """The reference reading of one line (seen `n` times in the block)."""
        try:
            obj = json.loads(raw.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            self.skipped["not_json"] += n
            return
        seen = loglines.request(obj)
        if seen is None:
            self.skipped["no_code"] += n
            return
        epoch = ts_epoch(obj.get(loglines.TS))
        if epoch is None:
            self.skipped["bad_ts"] += n
            return
        self.add(epoch, *seen, n)

    def result(self, source: str) -> LogAggregate:
        import pandas as pd

        keys = sorted(self.groups)
        requests = [self.groups[k] for k in keys]
        frame = pd.DataFrame({
            "bucket": pd.to_datetime(pd.Series([k[0] for k in keys], dtype="int64"), unit="s", utc=True),
            "model": pd.Series([k[1] for k in keys], dtype=str),
            "code": pd.Series([k[2] for k in keys], dtype=str),
            "requests": pd.Series(requests, dtype="int64"),
            "errors": pd.Series([n if is_error(k[2]) else 0 for k, n in zip(keys, requests)], dtype="int64"),
        }, columns=list(COLUMNS))
        parsed = sum(requests)
        stamp = (lambda s: None if s is None else pd.Timestamp(s, unit="s", tz="UTC"))
        return LogAggregate(frame=frame, lines=self.lines, parsed=parsed, skipped=self.lines - parsed,
                            first_ts=stamp(self.first), last_ts=stamp(self.last), source=source,
                            freq_s=self.freq_s, skipped_by=dict(self.skipped))


# -- reading: whole-line byte blocks from a path (plain or gzip), a file object or lines ------------
def _split(reads: Iterator[bytes]) -> Iterator[bytes]:
    """Re-cut raw reads at newlines: every block yielded ends with b"\\n" (a last unterminated line gets one)."""
    rest: list[bytes] = []  # the start of a line still waiting for its newline
    for data in reads:
        cut = data.rfind(b"\n")
        if cut < 0:
            rest.append(data)
            continue
        yield b"".join([*rest, data[:cut + 1]]) if rest else data[:cut + 1]
        rest = [data[cut + 1:]] if cut + 1 < len(data) else []
    if rest:
        yield b"".join([*rest, b"\n"])


def _reads(fh: IO[Any], chunk_bytes: int) -> Iterator[bytes]:
    while data := fh.read(chunk_bytes):
        yield data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data


def _from_lines(lines: Iterable[str | bytes], chunk_bytes: int) -> Iterator[bytes]:
    buf: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else bytes(line)
        if not data.endswith(b"\n"):
            data += b"\n"
        buf.append(data)
        size += len(data)
        if size >= chunk_bytes:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def _open_path(path: Path) -> IO[bytes]:
    """The file, gunzipped when it starts with the gzip magic (whatever its name)."""
    fh = open(path, "rb")
    if fh.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def _blocks(source: Any, chunk_bytes: int) -> tuple[Iterator[bytes], str, IO[Any] | None]:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        fh = _open_path(path)
        kind = " (gzip)" if isinstance(fh, gzip.GzipFile) else ""
        return _split(_reads(fh, chunk_bytes)), f"{path}{kind}", fh
    if isinstance(source, bytes | bytearray | memoryview):
        raise TypeError("source is a path, a file object or an iterable of lines, not bytes")
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return _split(_reads(source, chunk_bytes)), str(name) if name else type(source).__name__, None
    if isinstance(source, Iterable):
        return _split(_from_lines(source, chunk_bytes)), f"lines from {type(source).__name__}", None
    raise TypeError(f"cannot read logs from {type(source).__name__}")


PARALLEL_MIN_BYTES = 64 << 20  # below this, starting worker processes costs more than it saves
MAX_WORKERS = 4


def aggregate(source: str | os.PathLike[str] | IO[Any] | Iterable[str | bytes], *, freq_s: int = 60,
              chunk_bytes: int = CHUNK_BYTES, workers: int | None = None) -> LogAggregate:
    """Requests and errors per `freq_s` bucket, model and code from JSON-lines logs, streamed.

    `source`: a path (plain or gzip, detected by content), an open file (text or binary) or an
    iterable of lines. It is read `chunk_bytes` at a time, so memory holds a block or two plus one
    counter per group whatever the input size.

    `workers`: processes counting a plain (not gzip) file's byte ranges side by side (each range
    starts at a line start; the counts are summed, so they equal one process's). None: one per
    core (at most MAX_WORKERS) for a file of PARALLEL_MIN_BYTES or more, else one; 1: no child
    process. A gzip stream cannot be split, so it is always read by this process.
    """
    if isinstance(freq_s, bool) or not isinstance(freq_s, int) or freq_s < 1:
        raise ValueError(f"freq_s must be a positive whole number of seconds, got {freq_s!r}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive whole number or None, got {workers!r}")
    ranges = _ranges(source, workers)
    if ranges:
        return _aggregate_ranges(Path(source), ranges, freq_s, chunk_bytes)  # type: ignore[arg-type]
    counts = _Counts(freq_s)
    blocks, name, fh = _blocks(source, chunk_bytes)
    try:
        for data in blocks:
            _scan_block(counts, data)
    finally:
        close = getattr(blocks, "close", None)
        if close:
            close()
        if fh is not None:
            fh.close()
    return counts.result(name)


def _scan_block(counts: _Counts, data: bytes) -> None:
    """One block into the totals (a seam for tests that watch the streaming)."""
    counts.block(data)


# -- a big plain file: byte ranges counted by worker processes, totals summed ----------------------
def _ranges(source: Any, workers: int | None) -> list[tuple[int, int]]:
    """Line-aligned (start, end) byte ranges of a plain file to count in parallel; [] to read it here."""
    if workers == 1 or not isinstance(source, str | os.PathLike):
        return []
    path = Path(source)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                return []  # gzip: one stream
            n = workers or (min(os.cpu_count() or 1, MAX_WORKERS) if size >= PARALLEL_MIN_BYTES else 1)
            if n < 2 or size == 0:
                return []
            cuts = [0]
            for i in range(1, n):
                fh.seek(max(size * i // n - 1, cuts[-1]))
                fh.readline()  # to the start of the next line
                cuts.append(max(fh.tell(), cuts[-1]))
    except OSError:
        return []  # the serial path opens it again and reports the error
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _count_range(path: str, start: int, end: int, freq_s: int, chunk_bytes: int) -> dict[str, Any]:
    """Worker: the totals of one line-aligned byte range (plain data, to travel between processes)."""
    counts = _Counts(freq_s)

    def reads() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start
            while left > 0 and (data := fh.read(min(chunk_bytes, left))):
                left -= len(data)
                yield data

    for data in _split(reads()):
        _scan_block(counts, data)
    return {"groups": counts.groups, "lines": counts.lines, "skipped": counts.skipped,
            "first": counts.first, "last": counts.last}


def _aggregate_ranges(path: Path, ranges: list[tuple[int, int]], freq_s: int, chunk_bytes: int) -> LogAggregate:
    """The ranges counted side by side in fresh processes (spawn: safe from a kernel's threads)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    counts = _Counts(freq_s)
    with ProcessPoolExecutor(len(ranges), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_count_range, *zip(*[(str(path), a, b, freq_s, chunk_bytes) for a, b in ranges],
                                                  strict=True)))
    for part in parts:
        for key, n in part["groups"].items():
            counts.groups[key] = counts.groups.get(key, 0) + n
        counts.lines += part["lines"]
        for reason, n in part["skipped"].items():
            counts.skipped[reason] += n
        for edge, pick in (("first", min), ("last", max)):
            if part[edge] is not None:
                mine = getattr(counts, edge)
                setattr(counts, edge, part[edge] if mine is None else pick(mine, part[edge]))
    return counts.result(str(path))


# -- views for the postmortem -----------------------------------------------------------------------
def per_bucket(agg: LogAggregate, *, model: str | None = None, fill: bool = True) -> pd.DataFrame:
    """Requests, errors and error_ratio per bucket (all models, or one), indexed by bucket.

    With `fill`, buckets between the first and last with no request are present with 0 requests
    (and a NaN ratio): a silent minute in the middle of an incident is a finding, not a gap to hide.
    """
    import pandas as pd

    frame = agg.frame if model is None else agg.frame[agg.frame["model"] == model]
    out = frame.groupby("bucket", sort=True)[["requests", "errors"]].sum()
    if out.empty:
        out = pd.DataFrame({"requests": pd.Series(dtype="int64"), "errors": pd.Series(dtype="int64")},
                           index=pd.DatetimeIndex([], tz="UTC", name="bucket"))
    elif fill:
        full = pd.date_range(out.index[0], out.index[-1], freq=pd.Timedelta(seconds=agg.freq_s), name="bucket")
        out = out.reindex(full, fill_value=0)
    out["error_ratio"] = out["errors"] / out["requests"].where(out["requests"] > 0)
    return out


def totals(agg: LogAggregate) -> dict[str, Any]:
    """Overall, per-model and per-code counts as plain numbers (JSON-ready, for the record)."""
    f = agg.frame
    requests, errors = int(f["requests"].sum()), int(f["errors"].sum())
    per_model = {str(m): {"requests": int(g["requests"].sum()), "errors": int(g["errors"].sum()),
                          "error_ratio": _ratio(int(g["errors"].sum()), int(g["requests"].sum()))}
                 for m, g in f.groupby("model", sort=True)}
    per_code = {str(c): int(n) for c, n in f.groupby("code", sort=True)["requests"].sum().items()}
    return {"requests": requests, "errors": errors, "error_ratio": _ratio(errors, requests),
            "per_model": per_model, "per_code": per_code, "lines": agg.lines, "skipped": agg.skipped,
            "first_ts": None if agg.first_ts is None else agg.first_ts.isoformat().replace("+00:00", "Z"),
            "last_ts": None if agg.last_ts is None else agg.last_ts.isoformat().replace("+00:00", "Z")}


def _ratio(errors: int, requests: int) -> float | None:
    return round(errors / requests, 6) if requests else None
