"""`runbook replay INCIDENT [--output-dir] [--compare]`: its options, and the run.

Only the standard library at import time: cli.py builds every subcommand's parser on each call,
so the simulators are imported when a replay actually runs, never by `runbook --help`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    """Register `replay` on the CLI's subparsers."""
    from ...paths import default_output_root

    rep = sub.add_parser("replay", help="rebuild an archived incident on the embedded stack and re-run respond "
                                        "into a new folder marked replay_of (--compare: diff the facts)")
    rep.add_argument("incident", metavar="INCIDENT",
                     help="the original: an incident folder, an evidence bundle folder or its .tar.gz")
    rep.add_argument("--output-dir", default=str(Path(default_output_root()) / "replays"),
                     help="where the replay's folder goes (default: %(default)s, beside the archive, not in it: "
                          "`runbook list`/`report` do not count replays as incidents)")
    rep.add_argument("--compare", action="store_true",
                     help="print severity, error class, routed notebook and verdict classes side by side, "
                          "original vs replay; exit 1 when they differ")
    rep.add_argument("--against", metavar="REPLAY",
                     help="with --compare: compare with this earlier replay's folder instead of replaying again")
    rep.add_argument("--incident-id", help="the replay's incident id (default: <original id>-replay)")
    rep.add_argument("--settle", type=float, default=15.0, metavar="S",
                     help="wait at most S seconds for our service to show the state triage recorded (default 15)")
    rep.add_argument("--max-wait", type=float, default=30.0, metavar="S",
                     help="cap the diagnosis' recovery watch (monitor_max_s) at S seconds: the replayed fault "
                          "never clears (default 30)")
    rep.add_argument("--strict", action="store_true",
                     help="refuse (exit 2) an incident lacking any source a full replay uses (evidence bundle, "
                          "its metrics exports and pod logs, triage's verdict and service health, the original's "
                          "parameters), naming each and what the replay could then not check")
    rep.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    rep.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    """Replay (or, with --against, reuse a replay), print where it went, and compare when asked."""
    from ...errors import ParameterError
    from ...record import read_records
    from ...records.incident import read_index
    from . import compare as cmp
    from .source import read

    for name, value, low, high in (("--settle", args.settle, 0, 600), ("--max-wait", args.max_wait, 1, 3600)):
        if not low <= value <= high:
            raise ParameterError(name, value, f"a number of seconds from {low} to {high}")
    if args.against and not args.compare:
        raise ParameterError("--against", args.against, "used with --compare only")
    original = read(args.incident)
    if args.strict and original.missing:
        raise ParameterError("INCIDENT", args.incident, "with --strict, an incident holding every source a full "
                             "replay uses; missing: " + "; ".join(original.missing))
    for gap in original.missing:
        print(f"replay: missing {gap}", file=sys.stderr)
    if args.against:
        folder = Path(args.against)
        index = read_index(folder)
        if index is None or not index.get("replay_of"):
            raise ParameterError("--against", args.against, "a replay's folder (its incident.json has replay_of)")
    else:
        from .engine import replay

        done = replay(original, output_root=args.output_dir, incident_id=args.incident_id, settle_s=args.settle,
                      max_wait_s=args.max_wait, progress=not args.quiet)
        folder, index = done.folder, done.index
        section = done.section
        print(f"replay of {original.id}: {folder}  ({index.get('status')}; fault {section['fault']['mode']}"
              f"{', approximate: ' + section['fault']['approximate'] if section['fault']['approximate'] else ''})")
        for name in section["parameters"]["real_endpoints_replaced"]:
            change = section["parameters"]["replaced"][name]
            print(f"  {name}: {change['was']} replaced by the stack's "
                  f"{change['now'] or 'nothing (empty: the bundle holds no metrics)'}")
        for nb in index.get("notebooks") or []:
            print(f"  {nb['name']}: {nb.get('verdict') or nb.get('status')}")
    if not args.compare:
        return 0 if index.get("status") != "failed" else 1
    ours = cmp.facts(original.folder or original.path, original.index, original.records)
    their_records = {p.stem: read_records(p) for p in folder.glob("*.ipynb")}
    theirs = cmp.facts(folder, index, their_records)
    shift = float(((index.get("replay") or {}).get("prometheus") or {}).get("shift_s") or 0.0)
    rows = cmp.compare(ours, theirs, cmp.postmortem_facts(original.folder or original.path, original.index,
                                                          original.records),
                       cmp.postmortem_facts(folder, index, their_records), shift_s=shift)
    print(cmp.render(rows, str(original.folder or original.path), str(folder)))
    return 0 if all(r.same for r in rows) else 1
