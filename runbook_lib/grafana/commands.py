"""`runbook dashboard` (render deploy/grafana/mistral-dashboard.json) and `runbook annotate` (the incident's
detection, mitigation and resolution as Grafana annotations; dry run unless --apply-changes)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..paths import default_output_root


def add_commands(sub: Any) -> None:
    """Register `dashboard` and `annotate` on the `runbook` subparsers."""
    from . import DEFAULT_TOKEN_ENV, EVENTS
    from .dashboard import DASHBOARD_UID

    dash = sub.add_parser("dashboard", help="render the Grafana dashboard (deploy/grafana/mistral-dashboard.json) "
                                            "for your service labels (needs grafana-foundation-sdk)")
    dash.add_argument("--service-labels", default="cluster,namespace,service", metavar="L1,L2",
                      help="the labels that identify one service, as for `runbook rules` (default: %(default)s)")
    dash.add_argument("-o", "--output", help="file to write (default: standard output)")
    dash.set_defaults(func=run_dashboard)

    ann = sub.add_parser("annotate", help="annotate the Grafana dashboard at an incident's detection, mitigation "
                                          "and resolution (dry run unless --apply-changes)")
    ann.add_argument("incident", help="incident id, folder name or path (as for `runbook show`)")
    ann.add_argument("--grafana-url", required=True, metavar="URL", help="Grafana's base URL")
    ann.add_argument("--dashboard-uid", default=DASHBOARD_UID, help="(default: %(default)s)")
    ann.add_argument("--token-env", default=DEFAULT_TOKEN_ENV, metavar="NAME",
                     help="NAME of the environment variable holding a Grafana service-account token "
                          "(never the token itself; default: %(default)s)")
    ann.add_argument("--event", action="append", choices=EVENTS, help="only this event (repeatable; default: all "
                                                                       "the record has)")
    ann.add_argument("--apply-changes", action="store_true", help="post them (default: dry run, nothing sent)")
    ann.add_argument("--operator", default="", help="who approves the post (recorded)")
    ann.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default: %(default)s)")
    ann.add_argument("--ca-bundle", default="", help="PEM CA bundle for Grafana's certificate")
    ann.add_argument("--output-dir", default=default_output_root(), help="(default: %(default)s)")
    ann.add_argument("--json", action="store_true", help="print the entries as JSON")
    ann.set_defaults(func=run_annotate)


def run_dashboard(args: argparse.Namespace) -> int:
    from ..serve.rules import service_labels
    from .dashboard import render_dashboard

    text = render_dashboard(service_labels("--service-labels", args.service_labels))
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def run_annotate(args: argparse.Namespace) -> int:
    """Exit 0 when every chosen annotation was posted (or, in a dry run, could be), 1 otherwise."""
    from ..records.archive import find
    from .annotations import annotate_incident, grafana_target

    target = grafana_target(args.grafana_url, dashboard_uid=args.dashboard_uid, token_env=args.token_env,
                            timeout_s=args.timeout, ca_bundle=args.ca_bundle)
    folder = find(args.output_dir, args.incident)
    entries = annotate_incident(folder, target, events=tuple(args.event or ()), apply_changes=args.apply_changes,
                                operator=args.operator)
    if args.json:
        print(json.dumps(entries, indent=2))
    for e in entries if not args.json else []:
        state = ("POSTED" + (" and verified" if e["verified"] else " (NOT verified)") if e["applied"] else
                 "FAILED" if e["error"] else "skipped" if e["note"] else "DRY RUN")
        print(f"{e['event']}: {state}" + (f": {e['error']}" if e["error"] else "") + (f" ({e['note']})" if e["note"]
                                                                                     else ""))
        if e["command"] and not e["applied"] and not e["note"]:
            print(f"  to post: {e['command']}")
        if e["undo"]:
            print(f"  undo: {e['undo']}")
    print(f"recorded in {folder / 'incident.json'} (grafana_annotations)", file=sys.stderr)
    failed = [e for e in entries if e["error"] or (args.apply_changes and not e["applied"] and not e["note"])]
    return 1 if failed else 0
