"""Incident messages that match the incident, and a log of every one drafted.

The seed's two templates (internal Slack, external status page) are rendered with Jinja2 for the
incident's error class (auth, rate_limit, provider_error, network, our_service), status
(INVESTIGATING, MITIGATING, RESOLVED) and its one severity: a P1 401 outage tells users the AI
features are unavailable, a P2 rate limit that some requests are delayed or rejected, network P2
slowness that responses are slower, RESOLVED that service is restored (with the impact window when
the postmortem measured one). A status page that says less, or something else, than what the
record shows is the first thing a reviewer finds wrong.

Templates
    Shipped defaults live in `runbook_lib/runbooks/templates/`: `slack.md.j2` (Slack mrkdwn:
    `*bold*`), `statuspage.md.j2` (plain text) and `phrases.j2` (what users experience per
    severity and class, imported by both). A team overrides any of them by pointing the
    environment variable `RUNBOOK_TEMPLATES` at a folder of same-named files; a file missing
    there falls back to the shipped one. Templates run in a sandboxed Jinja2 environment with
    StrictUndefined: a typo fails the run loudly, naming the template file and line. Variables:
    `status`, `level` (P1-P4; "" when a RESOLVED index has none), `error_class`, `emoji`,
    `impact`, `action`, `affected` (list), `workaround`, `ic`, `next_update` (HH:MM, None when
    RESOLVED), `update_every_min`, `updated` (YYYY-MM-DD HH:MM, UTC) and `window` (None, or
    `start`, `end`, `duration`, `between`); the filters `slack` (escape &, <, >) and `sentence`
    (first letter upper case).

Where messages go
    Every draft is written into the record's folder (`steps.record_folder`: the incident folder
    under `runbook run/respond/open`, beside the output notebook under `papermill
    --inject-output-path`; when the kernel cannot know that folder, no file is written and the
    record says so) under its own name, `message-<UTC stamp>-<runbook>-<status>-<channel>.md`,
    never overwritten; the latest draft per channel is also kept as `message-internal-slack.md` /
    `message-external-statuspage.md` (what to paste now). When the folder has an `incident.json`,
    each draft is appended to its `communications` list: at, by, channel, status, severity, text,
    file (relative to the folder), posted, error, plus ic and affected (so the RESOLVED message can
    name them).
    The Slack text is posted (as text and Block Kit, through `slack_sdk`) to the incoming webhook
    whose URL is in an environment variable (the URL is a credential: never a parameter, never
    shown); a failed post is logged as the entry's error and the run goes on.

Where updates are sent (`notify`, `runbook_lib/notify/`)
    Configured services get each update too: the Slack Web API thread (instead of the webhook),
    PagerDuty (Events API v2) and the status page (Statuspage). PagerDuty and the status page are
    dry runs unless the runbook was approved (`apply_changes=True`): the record ("notifications")
    shows the exact request with the credential redacted. Every request, dry run or sent, is a
    `communications` entry (channel `slack_api`, `pagerduty` or `statuspage`, action, request,
    sent/ok, HTTP status, the ids kept); the sent ones tell later runs what exists (the thread's ts,
    the open alert, the status-page incident id). With nothing configured nothing changes here.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._time import iso_z, parse, utc_stamp
from ..analysis.severity import UPDATE_EVERY_MIN
from ..errors import RunbookError

STATUSES = ("INVESTIGATING", "MITIGATING", "RESOLVED")
LEVELS = ("P1", "P2", "P3", "P4")
CLASSES = ("auth", "rate_limit", "provider_error", "network", "our_service")
EMOJI = {"P1": ":red_circle:", "P2": ":large_orange_circle:", "P3": ":large_yellow_circle:", "P4": ":white_circle:"}
DEFAULT_AFFECTED = "AI-powered features"
TEMPLATES_ENV = "RUNBOOK_TEMPLATES"
SHIPPED_TEMPLATES = Path(__file__).with_name("templates")
CHANNELS = {"slack": "slack.md.j2", "statuspage": "statuspage.md.j2"}
# the latest draft per channel, under the names the records always used
LATEST = {"slack": "message-internal-slack.md", "statuspage": "message-external-statuspage.md"}
# which diagnosis runbook handles which error class (decision.NOTEBOOK, inverted)
CLASS_OF_RUNBOOK = {"diagnose_auth": "auth", "diagnose_rate_limit": "rate_limit",
                    "diagnose_server_error": "provider_error", "diagnose_network": "network"}


@dataclass
class Messages:
    internal: str
    external: str
    next_update_utc: str | None
    ic: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def next_update(level: str, now: datetime | None = None) -> datetime:
    """Now plus the severity's update cadence (P1: every 15 minutes), rounded up to the minute."""
    now = now or datetime.now(UTC)
    due = now + timedelta(minutes=UPDATE_EVERY_MIN[level])
    return due.replace(second=0, microsecond=0) + (timedelta(minutes=1) if due.second or due.microsecond else timedelta())


def features(value: str | list[str] | None) -> list[str]:
    """`affected_features` text ("Chat, Search") as a list; empty means the generic default."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [s.strip() for s in items if s and s.strip()] or [DEFAULT_AFFECTED]


def ic_line(commander: str = "", operator: str = "") -> str:
    """Who leads: the named incident commander, else the operator said to be only that (not an IC)."""
    commander, operator = (commander or "").strip(), (operator or "").strip()
    if commander:
        return commander if commander.startswith("@") else f"@{commander}"
    if operator:
        return f"{operator} (runbook operator; no incident commander named)"
    return "(none named: set incident_commander)"


def impact_window(start: Any, end: Any) -> dict[str, Any] | None:
    """The measured impact as the messages state it, or None when either end is unknown."""
    s, e = parse(str(start)) if start else None, parse(str(end)) if end else None
    if s is None or e is None or e < s:
        return None
    seconds = (e - s).total_seconds()
    duration = _human(seconds)
    between = (f"{s:%H:%M} to {e:%H:%M} UTC on {s:%Y-%m-%d} ({duration})" if s.date() == e.date() else
               f"{s:%Y-%m-%d %H:%M} UTC to {e:%Y-%m-%d %H:%M} UTC ({duration})")
    return {"start": iso_z(s), "end": iso_z(e), "duration_s": seconds, "duration": duration, "between": between}


def _human(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{int(seconds)} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


# -- templates ---------------------------------------------------------------------------------------------
def template_folders() -> list[Path]:
    """Where templates are looked up: `$RUNBOOK_TEMPLATES` first (if set), then the shipped defaults."""
    override = os.environ.get(TEMPLATES_ENV, "").strip()
    if not override:
        return [SHIPPED_TEMPLATES]
    if not Path(override).is_dir():
        raise RunbookError(f"${TEMPLATES_ENV} = {override!r} is not a folder (it should hold same-named "
                           f"templates: {', '.join(sorted({*CHANNELS.values(), 'phrases.j2'}))})")
    return [Path(override), SHIPPED_TEMPLATES]


@lru_cache(maxsize=8)
def _environment(folders: tuple[str, ...], present: tuple[str, ...] = ()) -> Any:
    """One sandboxed environment per lookup path and set of override files (`present`), so compiled
    templates are reused, an edited file is reloaded and a file added to the override folder is seen."""
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(loader=FileSystemLoader(list(folders)), undefined=StrictUndefined,
                               autoescape=False, keep_trailing_newline=False)
    env.filters["slack"] = slack_escape
    env.filters["sentence"] = lambda s: str(s)[:1].upper() + str(s)[1:]
    return env


def slack_escape(text: Any) -> str:
    """Slack mrkdwn's three control characters, escaped as Slack asks (&amp; &lt; &gt;)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_template(name: str, context: dict[str, Any]) -> str:
    """One template rendered; any failure names the template file (and line) that caused it."""
    from jinja2 import TemplateError

    folders = template_folders()
    try:
        present = tuple(sorted(p.name for p in folders[0].glob("*.j2"))) if len(folders) > 1 else ()
        return _environment(tuple(str(f) for f in folders), present).get_template(name).render(**context).strip()
    except TemplateError as exc:
        where = _template_frame(exc) or getattr(exc, "filename", None) or _origin(name, folders)
        raise RunbookError(f"message template {where} failed: {type(exc).__name__}: {exc}") from exc


def _origin(name: str, folders: list[Path]) -> str:
    return next((str(f / name) for f in folders if (f / name).exists()), name)


def _template_frame(exc: BaseException) -> str | None:
    """The innermost template file and line in the traceback (Jinja2 maps frames to its templates)."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.endswith(".j2"):
            found = f"{code.co_filename}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return found


def render(*, level: str, status: str, impact: str, action: str, commander: str = "", operator: str = "",
           affected: list[str] | None = None, workaround: str = "", error_class: str = "unknown",
           window: dict[str, Any] | None = None, ic: str | None = None, now: datetime | None = None) -> Messages:
    """The Slack and status-page texts for this class, status and severity, every placeholder filled.

    `ic` (already formatted, e.g. from an earlier message) overrides `commander`/`operator`.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    if level not in LEVELS and not (status == "RESOLVED" and not level):
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    now = now or datetime.now(UTC)
    due = next_update(level, now) if status != "RESOLVED" else None
    ic = ic or ic_line(commander, operator)
    context = {"status": status, "level": level or "", "error_class": error_class if error_class in CLASSES else "unknown",
               "emoji": EMOJI.get(level, ""), "impact": impact, "action": action, "affected": features(affected),
               "workaround": workaround, "ic": ic, "next_update": f"{due:%H:%M}" if due else None,
               "update_every_min": UPDATE_EVERY_MIN.get(level), "updated": f"{now:%Y-%m-%d %H:%M}", "window": window}
    return Messages(render_template(CHANNELS["slack"], context), render_template(CHANNELS["statuspage"], context),
                    due.isoformat(timespec="minutes").replace("+00:00", "Z") if due else None, ic)


# -- drafting, posting and the log -------------------------------------------------------------------------
def draft(messages: Messages, *, folder: str | Path, by: str, status: str, level: str,
          affected: list[str] | None = None, post: dict[str, Any] | None = None,
          now: datetime | None = None) -> list[dict[str, Any]]:
    """Write both drafts into the incident folder and log them (with `post`, the Slack outcome); the entries.

    The log (incident.json's `communications`) is appended under the index lock, so concurrent
    runbooks in one incident both land; without an incident.json only the caller's record keeps them.
    """
    folder = Path(folder)
    now = now or datetime.now(UTC)
    post = post or {"posted": False, "error": None}
    entries = []
    for channel, text in (("slack", messages.internal), ("statuspage", messages.external)):
        path = _write_new(folder, f"message-{utc_stamp(now)}-{_safe(by)}-{status.lower()}-{channel}", text)
        (folder / LATEST[channel]).write_text(text + "\n", "utf-8")
        entries.append({"at": iso_z(now), "by": by, "channel": channel, "status": status, "severity": level or None,
                        "text": text, "file": path.relative_to(folder).as_posix(),
                        "posted": bool(post["posted"]) if channel == "slack" else False,
                        "error": post.get("error") if channel == "slack" else None,
                        **({"dry_run": True} if channel == "slack" and post.get("dry_run") else {}),
                        "ic": messages.ic, "affected": features(affected)})
    log(folder, entries)
    return entries


def log(folder: str | Path, entries: list[dict[str, Any]]) -> bool:
    """Append to incident.json's `communications` (locked read-modify-write); False when there is no index."""
    from ..records.incident import edit_index

    if not has_index(folder):  # a plain `runbook run`: never create an index here
        return False
    with edit_index(folder) as index:
        previous = index.get("communications")
        index["communications"] = (previous if isinstance(previous, list) else []) + entries
    return True


def has_index(folder: str | Path) -> bool:
    """Whether the folder is an incident folder (has incident.json), i.e. whether drafts are logged there."""
    from ..records.incident import index_path

    return index_path(folder).exists()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:64] or "runbook"


def _write_new(folder: Path, stem: str, text: str) -> Path:
    """A new file, never an existing one (two drafts in one second get -2, -3...)."""
    for n in range(1, 1000):
        path = folder / (f"{stem}.md" if n == 1 else f"{stem}-{n}.md")
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text + "\n")
            return path
        except FileExistsError:
            continue
    raise RunbookError(f"too many drafts named {stem}*.md in {folder}")


def post_to_slack(messages: Messages, webhook_env: str, timeout_s: float = 5.0, *,
                  approved: bool = False) -> dict[str, Any]:
    """POST the internal message (text and Block Kit) to the webhook in `$webhook_env` (`slack_sdk`'s
    WebhookClient) when `approved`; never raises, never shows the URL.

    Unapproved, a configured webhook gets nothing: the result is a dry run with the exact request as
    a curl command (the URL from its variable). Slack is a channel people read, like the pager and
    the status page: nothing is told without the runbook's approval. `error` is None when posted, a
    dry run or when no webhook is configured (a draft only), else the reason. When the Slack Web API
    is configured the message goes into the incident's thread instead (`notify`): a webhook cannot
    reply in a thread, and one message twice helps nobody.
    """
    from ..notify.base import secret
    from ..notify.slack import SlackWebApi, post_webhook, webhook_curl

    if SlackWebApi().configured().ok:
        return {"posted": False, "reason": "the Slack Web API is configured: the incident's thread is told instead "
                "(see notifications)", "error": None}
    if not approved and secret(webhook_env).present:
        return {"posted": False, "error": None, "dry_run": True, "command": webhook_curl(messages.internal, webhook_env),
                "reason": f"dry run: ${webhook_env} is set but nothing was posted without approval "
                          f"(apply_changes=True); to post this message yourself, run the command shown"}
    return post_webhook(messages.internal, webhook_env, timeout_s)


def notify(messages: Messages, *, folder: str | Path | None, incident_id: str, status: str, level: str,
           error_class: str, by: str, facts: dict[str, Any], approved: bool, timeout_s: float,
           severity_note: str = "", auto: bool = True) -> list[dict[str, Any]]:
    """Tell the configured services (`runbook_lib.notify`: Slack thread, PagerDuty, status page), log each request.

    PagerDuty and the status page are dry runs unless `approved` (the runbook's `apply_changes`):
    the record shows the exact request, credential redacted. The team's Slack thread is posted when
    configured, unless `auto` is False (the postmortem: everything waits for approval). Earlier sent
    requests in incident.json's `communications` say what exists (the alert, the thread, the
    status-page incident); every delivery is appended there. Returns the log entries.
    """
    from .. import record
    from ..notify import base, providers as known
    from ..records.incident import read_index

    index = (read_index(folder) if folder is not None else None) or {}
    update = base.Update(incident_id=incident_id, status=status, level=level, error_class=error_class,
                         internal=messages.internal, external=messages.external, by=by, facts=facts,
                         record=str(folder or ""), severity_note=severity_note)
    providers = known.configured()
    for p in providers:
        if not auto:
            p.needs_approval = True
    deliveries = base.dispatch(update, list(index.get("communications") or []), approved=approved,
                               timeout_s=timeout_s, providers=providers, budget_s=notify_budget(timeout_s))
    entries = base.log_entries(deliveries, update, {"ic": messages.ic, "affected": features(facts.get("affected"))})
    logged = bool(entries) and folder is not None and log(folder, entries)
    record.record("notifications", {"deliveries": [d.to_dict() for d in deliveries], "approved": approved,
                                    "logged": logged}, markdown=base.markdown(deliveries))
    return entries


def record_markdown(messages: Messages, slack: dict[str, Any], entries: list[dict[str, Any]], logged: bool,
                    unsaved_reason: str = "") -> str:
    """How a notebook shows what was drafted (the same for the diagnoses and the postmortem).

    With no `entries` (no files written), `unsaved_reason` says why and how to get files.
    """
    command = (f"The webhook request, to send it yourself:\n\n```bash\n{slack['command']}\n```\n\n"
               if slack.get("command") else "")
    shown = (f"Internal (Slack): {slack['reason']}\n\n```\n{messages.internal}\n```\n\n{command}"
             f"External (status page):\n\n```\n{messages.external}\n```\n\n")
    if not entries:
        return shown + f"**Not saved as files**: {unsaved_reason or 'no folder to save them in'}."
    return (shown + "Saved: " + ", ".join(f"`{e['file']}`" for e in entries)
            + ("; logged in `incident.json` (`communications`)." if logged else
               " (no `incident.json` here: this record is the only log)."))


def notify_budget(timeout_s: float) -> float:
    """All of one update's requests end inside the cell and run bounds `runbook run` gives the kernel."""
    from .. import bounds
    from ..notify.base import BUDGET_S

    cell, deadline = bounds.from_kernel()
    rooms = [bounds.wait_room(cell, timeout_s) if cell else None, bounds.run_room(deadline, timeout_s)]
    return max(0.0, min([BUDGET_S, *(r for r in rooms if r is not None)]))


# -- RESOLVED ------------------------------------------------------------------------------------------------
def resolved_messages(index: dict[str, Any], *, folder: str | Path, by: str = "postmortem",
                      commander: str = "", operator: str = "", affected: list[str] | str | None = None,
                      webhook_env: str = "", timeout_s: float = 5.0, now: datetime | None = None,
                      approved: bool = False) -> list[dict[str, Any]]:
    """Draft (and log) the RESOLVED pair from the incident index; returns the two log entries.

    Class and severity come from the index; the impact window from its `postmortem` section
    (impact_start/impact_end) when measured; the IC and affected features, unless given, from the
    last message in its `communications` log. Posted to Slack only when `webhook_env` is given.
    The configured services (`notify`) get the RESOLVED update only when `approved`: the PagerDuty
    alert resolved, the Slack thread told, the status-page incident resolved; else dry runs.
    """
    from .. import record

    folder = Path(folder)
    earlier = [e for e in index.get("communications") or [] if isinstance(e, dict)]
    last = earlier[-1] if earlier else {}
    pm = index.get("postmortem") if isinstance(index.get("postmortem"), dict) else {}
    window = impact_window(pm.get("impact_start"), pm.get("impact_end"))
    level = index.get("severity") if index.get("severity") in LEVELS else ""
    chosen = features(affected) if affected else features(last.get("affected"))
    measured = f"{pm['failed_requests']:,} failed calls" if isinstance(pm.get("failed_requests"), int) else ""
    # the IC given, else the one the incident's messages named
    ic = ic_line(commander, operator) if (commander or operator) else (str(last.get("ic") or "") or None)
    action = _resolution(index, folder)
    messages = render(level=level, status="RESOLVED", impact=measured, action=action,
                      affected=chosen, error_class=str(index.get("error_class") or "unknown"), window=window,
                      ic=ic, now=now)
    slack = post_to_slack(messages, webhook_env, timeout_s, approved=approved) if webhook_env else {
        "posted": False, "reason": "draft only: no webhook given", "error": None}
    entries = draft(messages, folder=folder, by=by, status="RESOLVED", level=level, affected=chosen, post=slack,
                    now=now)
    logged = has_index(folder)
    notify(messages, folder=folder, incident_id=str(index.get("id") or ""), status="RESOLVED", level=level,
           error_class=str(index.get("error_class") or "unknown"), by=by, approved=approved, timeout_s=timeout_s,
           facts={"impact": measured, "action": action, "affected": chosen, "ic": messages.ic,
                  "impact_window": window["between"] if window else None}, auto=False)
    record.record("communications", {**messages.to_dict(), "files": [e["file"] for e in entries], "slack": slack,
                                     "level": level or None, "status": "RESOLVED", "error_class": index.get("error_class"),
                                     "window": window, "logged": logged},
                  markdown=record_markdown(messages, slack, entries, logged))
    return entries


def _resolution(index: dict[str, Any], folder: Path) -> str:
    """What was done, from the index: the changes applied (with their undo kept in the index), the postmortem."""
    changes = [c for c in index.get("changes_applied") or [] if isinstance(c, dict)]
    done = "; ".join(f"{c.get('action') or c.get('record')}" + (f" ({c['target']})" if c.get("target") else "")
                     for c in changes) or "no change was applied by the runbooks"
    pm = index.get("postmortem") if isinstance(index.get("postmortem"), dict) else {}
    if pm.get("markdown"):
        path, base = Path(str(pm["markdown"])), folder.resolve()
        shown = path.relative_to(base).as_posix() if path.is_absolute() and path.is_relative_to(base) else path.name
        done += f"; postmortem: {shown}"
    return done
