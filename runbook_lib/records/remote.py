"""The archive on object storage (issue 19): `--output-dir s3://bucket/prefix` (or gs://) for run/respond and the archive commands.

Runs never write to object storage while they execute: they run into a local staging folder
(`staged`), and the finished record folder (notebooks, HTML, run.json, incident.json, bundles,
the same redacted files a local run keeps) is uploaded under the URL, its index last, so a
listing never sees an index whose files are not there yet. Reading stays bounded: `scan` is one
listing of the prefix (1,000 folders a page) plus one small object per incident (its
`incident.json`; a plain `runbook run` folder, without one, costs one more listing for its
`*.run.json`). `show` and `verify` download the one incident folder they name and run the local
code on it, so a record reads the same wherever it is stored.

Credentials come only from the environment / the standard AWS or Google chain (AWS_ENDPOINT_URL,
STORAGE_EMULATOR_HOST too), never from a parameter, and no message names more than the URL. fsspec
with s3fs (`[s3]`) or gcsfs (`[gcs]`) is imported only here and only for a URL. Every request is
bounded (connect and read timeouts, two attempts). With `retain_days` the objects are written under S3 Object Lock (COMPLIANCE mode: no
one, root included, can overwrite or delete them before the date); `verify` reports the retention.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import ParameterError, RunbookError
from ..paths import is_url
from . import archive
from .incident import INDEX
from .verify import verify as verify_local

_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")
# the package each scheme needs (cli.EXTRA_OF names the extra that brings it)
_MODULE_OF = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
# s3fs asks each object's size (a HEAD) before a GET unless told to read it in one piece: small files
_ONE_GET = {"max_concurrency": 1}
RETAIN_ENV = "RUNBOOK_RETAIN_DAYS"
RETAIN_MODE = "COMPLIANCE"
MAX_RETAIN_DAYS = 36500
# bounded requests: an unreachable endpoint fails in seconds, not after minutes of retries
_S3_OPTIONS = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 30,
                                 "retries": {"max_attempts": 2, "mode": "standard"}, "max_pool_connections": 32}}
_GCS_TIMEOUTS = {"connect": 5, "sock_read": 30}  # and two attempts: _gcs_class


@functools.cache
def _gcs_class() -> Any:
    """gcsfs's JSON API filesystem with every request tried twice, not six times over ~31 s of back-off.

    Not `gcsfs.GCSFileSystem`: since 2026 that is a subclass whose first call on each bucket asks the
    gRPC storage-control API for the bucket's layout, 60 s to give up where that API is not served
    (an emulator), again on every call. Plain and hierarchical-namespace buckets need none of it.
    """
    from gcsfs.core import GCSFileSystem
    from gcsfs.retry import retry_request

    logging.getLogger("gcsfs").addHandler(logging.NullHandler())  # its retry tracebacks stay off stderr
    bounded = {name: retry_request(retries=2)(method.__wrapped__) for name in
               ("_request", "_get_file_request", "_get_file_concurrent")
               if hasattr(method := getattr(GCSFileSystem, name, None), "__wrapped__")}
    return type("BoundedGCSFileSystem", (GCSFileSystem,), bounded)


def _split(url: str) -> tuple[str, str]:
    """(scheme, "bucket/prefix" without a trailing slash)."""
    m = _URL.match(url)
    if not m or not m.group(2).strip("/"):
        raise ParameterError("--output-dir", url, "a local folder or an object-storage URL with a bucket, "
                                                  "e.g. s3://bucket/prefix")
    return m.group(1), m.group(2).strip("/")


def _filesystem(url: str) -> Any:
    """The fsspec filesystem for the URL's scheme; ModuleNotFoundError (named) when its extra is missing."""
    scheme, _ = _split(url)
    module = _MODULE_OF.get(scheme)
    try:
        import fsspec
        if module:
            __import__(module)
        if module == "gcsfs":
            import aiohttp

            fs = _gcs_class()(requests_timeout=aiohttp.ClientTimeout(**_GCS_TIMEOUTS))
        else:
            fs = fsspec.filesystem(scheme, **(_S3_OPTIONS if module == "s3fs" else {}))
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"No module named {module or exc.name!r}", name=module or exc.name) from None
    except (ImportError, ValueError) as exc:  # fsspec: an unknown protocol
        raise ParameterError("--output-dir", url, f"a local folder or an s3:// (or gs://) URL ({exc})") from None
    if module == "s3fs":
        fs.retries = 2  # s3fs's own retry loop around botocore's (default 5)
    return fs


def _failure(exc: BaseException, url: str, what: str) -> RunbookError:
    """One line naming the parameter and the URL; never credentials (botocore's and gcsfs's messages hold none)."""
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else name
    gs = not _split(url)[0].startswith("s3")
    if "Credentials" in name or "credentials" in text.lower() or (gs and "Auth" in name):
        hint = ("no usable credentials: set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default "
                "login` or use the workload's service account" if gs else
                "no usable credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role")
    elif "connect" in text.lower() or "Endpoint" in name or "Timeout" in name:
        hint = f"the endpoint cannot be reached (check {'STORAGE_EMULATOR_HOST' if gs else 'AWS_ENDPOINT_URL'} / " \
               "the network)"
    else:
        hint = f"{name}: {text}"
    return RunbookError(f"--output-dir {url}: cannot {what}: {hint}")


def _errors() -> tuple[type[BaseException], ...]:
    """What a storage call raises: OS errors (s3fs and gcsfs translate most), botocore's, gcsfs's and aiohttp's."""
    out: tuple[type[BaseException], ...] = (OSError, ValueError)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
        out += (BotoCoreError, ClientError)
    except ImportError:
        pass
    try:
        import aiohttp
        from gcsfs.retry import HttpError
        from google.auth.exceptions import GoogleAuthError
        out += (HttpError, GoogleAuthError, aiohttp.ClientError)
    except ImportError:
        pass
    return out


def _bucket_exists(fs: Any, url: str) -> None:
    """RunbookError naming the bucket when it is missing (or unreadable), bounded like every call."""
    scheme, path = _split(url)
    bucket = path.split("/", 1)[0]
    try:
        if scheme.startswith("s3"):
            fs.call_s3("head_bucket", Bucket=bucket)
        elif not fs.exists(bucket):
            raise FileNotFoundError(bucket)
    except FileNotFoundError:
        raise RunbookError(f"--output-dir {url}: the bucket {bucket!r} does not exist (create it first)") from None
    except _errors() as exc:
        raise _failure(exc, url, f"reach the bucket {bucket!r}") from None


# ---------------------------------------------------------------------------------------------- writing


def check_retain_days(value: object, output_dir: str) -> int | None:
    """`--retain-days` (or $RUNBOOK_RETAIN_DAYS): 1..36500 days, only with an object-storage --output-dir."""
    if value in (None, ""):
        return None
    try:
        days = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else 0
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_RETAIN_DAYS:
        raise ParameterError("--retain-days", value, f"a whole number of days, 1..{MAX_RETAIN_DAYS}")
    if not is_url(output_dir):
        raise ParameterError("--retain-days", value, "used with an object-storage --output-dir (s3://bucket/prefix "
                                                     "on a bucket with Object Lock); a local folder has no retention")
    if not _split(output_dir)[0].startswith("s3"):
        raise ParameterError("--retain-days", value, f"used with an s3:// --output-dir only (S3 Object Lock); "
                                                     f"{output_dir} is not: give its bucket a retention policy "
                                                     "(Bucket Lock) instead, or drop --retain-days")
    return days


def object_lock_enabled(fs: Any, bucket: str) -> bool:
    """Whether the bucket was created with S3 Object Lock (retention needs it)."""
    try:
        conf = fs.call_s3("get_object_lock_configuration", Bucket=bucket)
    except (FileNotFoundError, PermissionError):
        return False
    except _errors() as exc:
        if "ObjectLockConfigurationNotFound" in str(exc):
            return False
        raise
    return conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def preflight(url: str, retain_days: int | None = None) -> Any:
    """Before any notebook runs: the extra installed, the endpoint reachable, the bucket there, Object Lock if asked."""
    fs = _filesystem(url)
    _bucket_exists(fs, url)
    if retain_days:
        scheme, path = _split(url)
        bucket = path.split("/", 1)[0]
        try:
            locked = scheme.startswith("s3") and object_lock_enabled(fs, bucket)
        except _errors() as exc:
            raise _failure(exc, url, "read the bucket's Object Lock configuration") from None
        if not locked:
            raise ParameterError("--retain-days", retain_days, f"a bucket with S3 Object Lock enabled; {bucket!r} "
                                                               "has none (create it with Object Lock, or drop "
                                                               "--retain-days)")
    return fs


def upload(folder: str | Path, url: str, *, retain_days: int | None = None, fs: Any = None) -> str:
    """Copy one finished record folder to `url/<folder name>/`, its index last; returns the folder's URL."""

    folder = Path(folder)
    fs = fs or _filesystem(url)
    _, path = _split(url)
    dest = f"{path}/{folder.name}"
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    last = [p for p in files if p.parent == folder and (p.name == INDEX or p.name.endswith(archive.RUN_SUFFIX))]
    extra: dict[str, Any] = {}
    if retain_days:
        extra = {"ObjectLockMode": RETAIN_MODE,
                 "ObjectLockRetainUntilDate": datetime.now(UTC) + timedelta(days=retain_days)}
    try:
        # each batch goes up concurrently: the files, then the run.json records, then incident.json alone
        for batch in ([p for p in files if p not in last], [p for p in last if p.name != INDEX],
                      [p for p in last if p.name == INDEX]):
            if batch:
                fs.put([str(p) for p in batch], [f"{dest}/{p.relative_to(folder).as_posix()}" for p in batch],
                       **extra)
    except _errors() as exc:
        raise _failure(exc, url, f"upload {folder.name}") from None
    return f"{_split(url)[0]}://{dest}"


def with_archive_options(command: Any, func: Callable[[Any], int]) -> None:
    """`run`/`respond` (cli.py): `--retain-days`, and `func` wrapped so an object-storage --output-dir runs
    into a local stage (`staged`) uploaded when it ends; a local --output-dir runs `func` exactly as written."""
    import os

    command.add_argument("--retain-days", help="with --output-dir s3://...: write the record under S3 Object Lock "
                         f"(COMPLIANCE) for N days; the bucket must have Object Lock (default: ${RETAIN_ENV} for an "
                         "s3:// --output-dir, else none)")

    @functools.wraps(func)
    def archived(args: Any) -> int:
        given = args.retain_days  # the env's default applies to object storage only: local runs ignore it
        retain = check_retain_days(os.environ.get(RETAIN_ENV) if given is None and is_url(args.output_dir)
                                   else given, args.output_dir)
        if not is_url(args.output_dir):
            return func(args)
        with staged(args.output_dir, retain, also=[getattr(args, "record_dir", None)]) as local_root, \
                contextlib.redirect_stdout(_Renaming(sys.stdout, local_root, args.output_dir.rstrip("/"))):
            return func(argparse.Namespace(**{**vars(args), "output_dir": local_root}))

    command.set_defaults(func=archived)


class _Renaming:
    """stdout with the staging folder's path written as the URL the record is uploaded to: the run's
    `record: ...` lines named a temporary folder that was deleted once the upload ended."""

    def __init__(self, stream: Any, stage: str, url: str) -> None:
        self.stream, self.stage, self.url = stream, stage, url

    def write(self, text: str) -> int:
        return self.stream.write(text.replace(self.stage, self.url))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def staged(output_dir: str, retain_days: int | None = None,
           also: list[str | Path] | None = None) -> Iterator[str]:
    """The local root a run writes into: `output_dir` itself when local (nothing else happens), else a
    staging folder whose record folders are uploaded under the URL when the run ends (then removed;
    kept, and named, when the upload fails, so no record is lost). `also`: folders outside it to upload.
    """
    if not is_url(output_dir):
        yield output_dir
        return
    import shutil
    import tempfile

    fs = preflight(output_dir, retain_days)
    stage = tempfile.mkdtemp(prefix="runbook-stage-")
    try:
        yield stage
    finally:
        folders = [p for p in sorted(Path(stage).iterdir()) if p.is_dir()] + [Path(p) for p in also or [] if p]
        try:
            for folder in folders:
                where = upload(folder, output_dir, retain_days=retain_days, fs=fs)
                kept = f" (retained {retain_days} day(s), {RETAIN_MODE})" if retain_days else ""
                print(f"archived: {where}/{kept}", file=sys.stderr)
        except RunbookError as exc:
            raise RunbookError(f"{exc}; the record is kept at {stage}") from None
        shutil.rmtree(stage, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- reading


def _parse(name: str, data: Any) -> Any:
    """JSON bytes, or the archive's one-line reason (archive.BadRecord)."""
    import json


    if isinstance(data, FileNotFoundError):
        return None
    if isinstance(data, BaseException):
        raise archive.BadRecord(f"{name} cannot be read ({type(data).__name__}: {data})")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise archive.BadRecord(f"{name} is not valid JSON ({exc})") from None
    except RecursionError:
        raise archive.BadRecord(f"{name} is nested too deeply to read") from None


def _folders(fs: Any, url: str) -> list[str]:
    """The record folders under the URL ("bucket/prefix/name"), from one (paged) listing."""
    _, path = _split(url)
    try:
        entries = fs.ls(path, detail=True, refresh=True)
    except FileNotFoundError:  # an empty prefix, or no bucket: say which
        _bucket_exists(fs, url)
        return []
    except _errors() as exc:
        raise _failure(exc, url, "list the archive") from None
    return sorted(e["name"].rstrip("/") for e in entries if e.get("type") == "directory"
                  and not e["name"].rstrip("/").rsplit("/", 1)[-1].startswith("."))


def scan_url(url: str, *, warn: bool = True) -> Any:
    """archive.scan for an object-storage URL: one listing, then each folder's incident.json (fetched at once)."""

    fs = _filesystem(url)
    scheme, _ = _split(url)
    out = archive.Scan()
    folders = _folders(fs, url)
    try:
        indexes = _get_small(fs, scheme, [f"{f}/{INDEX}" for f in folders]) if folders else {}
    except _errors() as exc:
        raise _failure(exc, url, "read the incident indexes") from None
    for folder in folders:
        name = folder.rsplit("/", 1)[-1]
        where = f"{scheme}://{folder}"
        try:
            loaded = _loaded(fs, folder, indexes.get(f"{folder}/{INDEX}", FileNotFoundError()))
            if loaded is None:
                if not archive.STAMP.match(name):
                    continue
                raise archive.BadRecord(f"no {INDEX} or *{archive.RUN_SUFFIX} (an upload cut short?)")
            summary = archive.summarize(Path(name), *loaded)
            summary["folder"] = where
            out.incidents.append(summary)
        except archive.BadRecord as exc:
            out.skipped.append((where, str(exc)))
            if warn:
                archive.warn_skipped(where, str(exc))
    out.incidents.sort(key=lambda s: (s["start"] or "", s["name"]), reverse=True)
    return out


def _get_small(fs: Any, scheme: str, paths: list[str]) -> dict[str, Any]:
    """Each small object's bytes (or its exception), one GET each, many at once.

    On S3 the GETs are presigned by s3fs's own client (its credentials, endpoint and region) and sent
    as plain aiohttp requests: ~0.4 ms of CPU each instead of ~1.9 ms through botocore's full
    pipeline, which decides the time for 1,000 incidents. Anything but a 200 or a 404 (a proxy, a
    custom CA, throttling) is fetched again through s3fs, so the shortcut can only be faster.
    """
    got: dict[str, Any] = {}
    if scheme.startswith("s3"):
        from fsspec.asyn import sync

        try:
            got = sync(fs.loop, _presigned_gets, fs, paths)
        except Exception:  # noqa: BLE001 - any failure of the shortcut: the ordinary path below decides
            got = {}
    rest = [p for p in paths if p not in got]
    if rest:
        got.update(fs.cat(rest, on_error="return", **_ONE_GET))
    return got


async def _presigned_gets(fs: Any, paths: list[str]) -> dict[str, Any]:
    """{path: bytes | FileNotFoundError} for the objects answered 200/404; the others left out."""
    import asyncio

    import aiohttp

    client = await fs.set_session()
    urls = []
    for path in paths:
        bucket, key = path.split("/", 1)
        urls.append(await client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                        ExpiresIn=300))
    limit = asyncio.Semaphore(32)
    out: dict[str, Any] = {}

    async def one(session: aiohttp.ClientSession, path: str, url: str) -> None:
        async with limit:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        out[path] = await resp.read()
                    elif resp.status == 404:
                        out[path] = FileNotFoundError(path)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass

    timeout = aiohttp.ClientTimeout(total=120, connect=5, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=32)) as session:
        await asyncio.gather(*(one(session, p, u) for p, u in zip(paths, urls, strict=True)))
    return out


def _loaded(fs: Any, folder: str, index_bytes: Any) -> tuple[str, dict[str, Any]] | None:
    """("incident", index) or ("run", merged run.json records), like archive._load."""

    index = _parse(INDEX, index_bytes)
    if index is not None:
        if not isinstance(index, dict):
            raise archive.BadRecord(f"{INDEX} is not a JSON object")
        return "incident", index
    try:  # a plain run's folder: one more listing for its *.run.json
        names = sorted(n for n in fs.ls(folder, detail=False) if n.endswith(archive.RUN_SUFFIX)
                       and not n.rsplit("/", 1)[-1].startswith("."))
        blobs = fs.cat(names, on_error="return", **_ONE_GET) if names else {}
    except _errors() as exc:
        raise archive.BadRecord(f"cannot be listed ({type(exc).__name__}: {exc})") from None
    runs = []
    for name in names:
        run = _parse(name.rsplit("/", 1)[-1], blobs.get(name, FileNotFoundError()))
        if run is not None and not isinstance(run, dict):
            raise archive.BadRecord(f"{name.rsplit('/', 1)[-1]} is not a JSON object")
        if run is not None:
            runs.append(run)
    return ("run", archive.merge_runs(runs)) if runs else None


def _pick(url: str, ref: str | Path, found: Any) -> str:
    """The folder URL `ref` names: its URL, a folder name, or an id (an incident before a plain run, newest)."""
    text = str(ref).rstrip("/")
    by_name = {s["name"]: s["folder"] for s in found.incidents}
    if is_url(text):
        text = text.rsplit("/", 1)[-1]
    if text in by_name:
        return by_name[text]
    same = sorted((s for s in found.incidents if s["id"] == text), key=lambda s: s.get("kind") != "incident")
    if same:
        return same[0]["folder"]
    known = list(dict.fromkeys(s["id"] for s in found.incidents))
    shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
    raise ParameterError("incident", str(ref), f"an incident id or folder name under {url}; known: "
                                               f"{shown or 'none (no records)'}")


@contextmanager
def _downloaded(fs: Any, folder_url: str) -> Iterator[Path]:
    """The one incident folder copied into a temporary local root (removed afterwards)."""
    import tempfile

    _, path = _split(folder_url)
    name = path.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(prefix="runbook-archive-") as tmp:
        try:
            fs.get(path + "/", str(Path(tmp) / name) + "/", recursive=True)
        except _errors() as exc:
            raise _failure(exc, folder_url, "download the incident") from None
        yield Path(tmp) / name


def _to_url(value: Any, local: Path, folder_url: str) -> Any:
    """Local temporary paths in a result rewritten to their object-storage URLs."""
    if isinstance(value, str):
        return value.replace(str(local), folder_url)
    if isinstance(value, dict):
        return {k: _to_url(v, local, folder_url) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_url(v, local, folder_url) for v in value]
    return value


def show_url(url: str, ref: str | Path) -> dict[str, Any]:
    """archive.show for a URL: the incident folder read from a temporary copy, its paths given as URLs."""

    fs = _filesystem(url)
    found = scan_url(url, warn=False)
    folder_url = _pick(url, ref, found)
    with _downloaded(fs, folder_url) as local:
        detail = _to_url(archive.show(local.parent, local.name), local, folder_url)
    detail["others"] = [{"folder": s["folder"], "name": s["name"], "start": s["start"], "status": s["status"]}
                        for s in found.incidents if s["id"] == detail["id"] and s["folder"] != folder_url]
    return detail


def retention(fs: Any, folder_url: str) -> tuple[list[str], list[str]]:
    """(problems, notes) about the S3 Object Lock retention of every object in the incident folder."""
    scheme, path = _split(folder_url)
    if not scheme.startswith("s3"):
        return [], [f"retention: not checked ({scheme}:// has no S3 Object Lock)"]
    bucket = path.split("/", 1)[0]
    if not object_lock_enabled(fs, bucket):
        return [], [f"retention: none (the bucket {bucket!r} has no S3 Object Lock; the objects can be rewritten)"]
    keys = [k for k in fs.find(path) if not k.endswith("/")]
    held, bare = [], []
    for key in keys:
        # HEAD carries the retention (x-amz-object-lock-*): one request per object, as GetObjectRetention
        head = fs.call_s3("head_object", Bucket=bucket, Key=key.split("/", 1)[1])
        until = head.get("ObjectLockRetainUntilDate")
        got = {"Mode": head.get("ObjectLockMode"), "Until": until.astimezone(UTC)} if until else {}
        (held if got else bare).append((key, got))
    now = datetime.now(UTC)
    notes, problems = [], []
    if held:
        modes = sorted({g["Mode"] or "?" for _, g in held})
        until = min(g["Until"] for _, g in held)
        state = "in force" if until > now else "EXPIRED"
        notes.append(f"retention: {'/'.join(modes)} until {until.isoformat(timespec='seconds')} ({state}) on "
                     f"{len(held)} of {len(keys)} object(s)")
    if bare:
        problems += [f"{k}: no Object Lock retention (it can be rewritten)" for k, _ in bare]
    return problems, notes


def verify_url(url: str, ref: str | Path, public_key: Any | None = None) -> list[Any]:
    """records.verify for a URL: the incident's bundles re-hashed from a temporary copy, plus its retention."""

    root = url
    if is_url(str(ref)):  # `runbook verify s3://bucket/prefix/<folder>`: that folder's own archive
        root = str(ref).rstrip("/").rsplit("/", 1)[0]
    fs = _filesystem(root)
    folder_url = _pick(root, ref, scan_url(root, warn=False))
    with _downloaded(fs, folder_url) as local:
        results = verify_local(local.parent, local.name, public_key)
        for result in results:
            result.target = _to_url(result.target, local, folder_url)
            result.problems = _to_url(result.problems, local, folder_url)
            result.notes = _to_url(result.notes, local, folder_url)
    try:
        problems, notes = retention(fs, folder_url)
    except _errors() as exc:
        raise _failure(exc, folder_url, "read the objects' retention") from None
    if results:
        results[0].problems += problems
        results[0].notes += notes
    return results


# ---------------------------------------------------------------------------------------------- the archive commands
# `runbook list/show/report/verify` read a local folder (archive.py, verify.py) or an object-storage URL
# (above) through these three; the local modules know nothing of object storage.


def scan(root: str | Path, *, warn: bool = True) -> Any:
    """archive.scan for a local folder or an object-storage URL."""
    return scan_url(str(root), warn=warn) if is_url(root) else archive.scan(root, warn=warn)


def show(root: str | Path, ref: str | Path) -> dict[str, Any]:
    """archive.show for a local folder or an object-storage URL."""
    return show_url(str(root), ref) if is_url(root) else archive.show(root, ref)


def verify(root: str | Path, ref: str | Path, public_key: Any | None = None) -> list[Any]:
    """records.verify for a local folder, or an incident under an object-storage URL (`ref` may be its URL)."""
    if is_url(root) or is_url(str(ref)):
        return verify_url(str(root), ref, public_key)
    return verify_local(root, ref, public_key)
