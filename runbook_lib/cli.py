"""`runbook`: run notebooks headless, start the embedded stack, the demo and JupyterLab."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import RunbookError
from .paths import default_output_root, is_url
from .records.remote import with_archive_options

DEMO_MODES = ("ok", "auth_failure", "rate_limited", "capacity_exceeded", "server_error", "slow", "hang", "flaky")


def _parse_value(raw: str) -> Any:
    """papermill-like typing of `-p NAME VALUE`: bool, None, int, float, else string."""
    if raw in ("True", "true"):
        return True
    if raw in ("False", "false"):
        return False
    if raw in ("None", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _collect_params(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in args.param or []:
        out[name] = _parse_value(value)
    for name, value in args.raw_param or []:
        out[name] = value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from .errors import ParameterError
    from .run.execute import check_run_request, record_rejected_run, run_notebook

    parameters = _collect_params(args)
    if args.incident_id is not None:  # given, even empty: checked like `-p incident_id` (never replaced)
        parameters["incident_id"] = args.incident_id
    try:  # unknown notebook or parameter name, a secret's value, a bad bound: refused before any kernel
        run_timeout = check_run_request(args.notebook, parameters, strict_names=True,
                                        cell_timeout_s=args.cell_timeout, run_timeout_s=args.run_timeout,
                                        flag_names=("--cell-timeout", "--run-timeout"))
    except ParameterError as exc:
        rejected = record_rejected_run(args.notebook, parameters, exc, output_root=args.output_dir)
        print(f"FAILED: {exc}")
        print(f"record: {Path(rejected.record_dir) / (rejected.notebook + '.run.json')}")
        print(f"runbook: {exc}\nstatus: failed (refused before the run started; nothing was executed)",
              file=sys.stderr)
        return 2
    print(f"running {args.notebook} headless (each cell bounded by {args.cell_timeout} s, the whole run by "
          f"{run_timeout:g} s)...", file=sys.stderr)
    result = run_notebook(args.notebook, parameters, output_root=args.output_dir,
                          cell_timeout_s=args.cell_timeout, progress=not args.quiet, run_timeout_s=run_timeout)
    _print_result(result)
    return 0 if result.ok else 1


def cmd_respond(args: argparse.Namespace) -> int:
    """Triage, then the diagnosis it points to, in one incident folder."""
    from .errors import ParameterError
    from .run.respond import check_respond_request, record_rejected_respond, respond

    parameters = _collect_params(args)
    if args.incident_id is not None:  # given, even empty: checked like `-p incident_id` (never replaced)
        parameters["incident_id"] = args.incident_id
    if args.apply_changes:
        parameters["apply_changes"] = True
    try:  # an unknown parameter name, a bad incident id or bound: refused before any kernel, as `run` does
        check_respond_request(parameters, cell_timeout_s=args.cell_timeout, run_timeout_s=args.run_timeout)
    except ParameterError as exc:
        rejected = record_rejected_respond(parameters, exc, output_root=args.output_dir, folder=args.record_dir)
        print(f"FAILED: {exc}")
        print(f"record: {Path(rejected['folder']) / 'incident.json'}")
        print(f"runbook: {exc}\nstatus: failed (refused before the run started; nothing was executed)",
              file=sys.stderr)
        return 2
    index = respond(parameters, output_root=args.output_dir, progress=not args.quiet, folder=args.record_dir,
                    cell_timeout_s=args.cell_timeout, run_timeout_s=args.run_timeout)
    for nb in index["notebooks"]:
        print(f"{nb['name']}: {nb['verdict'] or nb['status'] + ' (' + str(nb['error']) + ')'}")
        print(f"  record: {Path(index['folder']) / nb['path'] if nb.get('path') else 'none'}")
    print(f"incident: {index['folder']}/incident.json ({index['status']}, "
          f"{len(index['changes_applied'])} change(s) applied)")
    return 1 if index["status"] == "failed" else 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Alertmanager webhook receiver (runbook_lib/serve/commands.py); `-p`/`-r` parsed like every command's."""
    from .serve.commands import run_serve

    return run_serve(args, _collect_params(args))


def _print_result(result: Any) -> None:
    print(result.verdict_line())
    print(f"record: {result.notebook_path}")
    if result.html_path:
        print(f"html:   {result.html_path}")
    if not result.ok:
        print(f"status: {result.status} ({result.error})", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded stack + injected fault + headless triage, always cleaned up."""
    from .demo import run_demo, run_incident_demo

    if args.full:
        index = run_incident_demo(args.mode, rate=args.rate, settle_s=args.settle, output_root=args.output_dir,
                                  incident_id=args.incident_id, progress=not args.quiet,
                                  use_prometheus=not args.no_prometheus, apply_changes=args.apply_changes)
        for nb in index.get("notebooks", []):
            print(f"{nb['name']}: {nb['verdict'] or nb['status']}")
        pm, ev = index.get("postmortem") or {}, index.get("evidence") or {}
        folder = Path(index.get("folder") or ".")  # the index's own paths are relative to this folder
        print(f"evidence:   {folder / ev['archive'] if ev.get('archive') else 'not collected'}")
        print(f"postmortem: {folder / pm['markdown'] if pm.get('markdown') else 'not written'}")
        print(f"incident:   {folder}  (runbook show {index.get('id')}; start at {folder / 'index.html'})")
        ok = index.get("status") != "failed" and bool(pm) and bool(ev)
        return 0 if ok else 1
    result = run_demo(args.mode, rate=args.rate, settle_s=args.settle, output_root=args.output_dir,
                      incident_id=args.incident_id, progress=not args.quiet,
                      use_prometheus=not args.no_prometheus)
    _print_result(result)
    return 0 if result.ok else 1


def cmd_incident_notebook(args: argparse.Namespace) -> int:
    """`runbook evidence|postmortem REF`: run that runbook into the incident's own folder."""
    from .records.archive import find
    from .run.execute import run_notebook

    folder = find(args.output_dir, args.incident)
    parameters = _collect_params(args)
    parameters["source" if args.command == "postmortem" else "incident_folder"] = str(folder)
    parameters.setdefault("incident_id", _incident_id_of(folder))
    print(f"running {args.command} for {folder} ...", file=sys.stderr)
    result = run_notebook(args.command, parameters, output_root=args.output_dir, cell_timeout_s=args.cell_timeout,
                          progress=not args.quiet, record_dir=folder)
    _print_result(result)
    return 0 if result.ok else 1


def _incident_id_of(folder: Path) -> str:
    from .errors import ParameterError
    from .params import incident_id
    from .records.incident import read_index

    try:
        return incident_id("incident_id", str((read_index(folder) or {}).get("id") or ""))
    except ParameterError:
        return ""


def cmd_list(args: argparse.Namespace) -> int:
    """The archive newest first, one line per incident; reads only the small index files, so it is fast."""
    import json

    from .records import archive, remote
    from .records.format import format_table

    filters = {
        "status": archive.check_choice(args.status, archive.STATUSES, "--status") if args.status else None,
        "severity": archive.check_severity(args.severity, "--severity") if args.severity else None,
        "error_class": archive.check_choice(args.error_class, archive.CLASSES, "--class") if args.error_class
        else None,
        "since": archive.parse_since(args.since, "--since") if args.since is not None else None,
        "limit": archive.check_limit(args.limit, "--limit") if args.limit is not None else None,
    }
    found = remote.scan(args.output_dir)
    rows = archive.select(found.incidents, **filters)
    if args.json:
        print(json.dumps({"incidents": rows, "skipped": [{"folder": f, "reason": r} for f, r in found.skipped]},
                         indent=2))
        return 0
    bad = f"; {len(found.skipped)} unreadable folder(s) skipped (warnings above)" if found.skipped else ""
    if not found.incidents:
        where = "" if is_url(out := args.output_dir) or Path(out).is_dir() else " (the folder does not exist)"
        print(f"no incidents recorded under {args.output_dir}{where}{bad}")
        return 0
    if rows:
        print(format_table(rows))
    shown = f"{len(rows)} of {len(found.incidents)}" if len(rows) != len(found.incidents) else str(len(rows))
    print(f"\n{shown} incident(s){' match the filters' if any(filters.values()) else ''}{bad}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One incident in full: notebooks, changes with their undo commands, evidence, postmortem."""
    import json

    from .records.format import format_detail
    from .records.remote import show

    detail = show(args.output_dir, args.ref)
    print(json.dumps(detail, indent=2, default=str) if args.json else format_detail(detail))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Incidents per class x severity and the median times to detect/mitigate/resolve per day, + a PNG."""
    import json

    from .analysis import plots
    from .records import report

    rep = report.report(args.output_dir)
    if not rep["incidents"]:
        print(f"no incidents recorded under {args.output_dir}: nothing to report")
        return 0
    why = plots.missing()
    plot = f"not drawn: {why}" if why else report.plot_report(rep, args.plot or report.default_plot(args.output_dir))
    if args.json:
        print(json.dumps(report.report_json(rep), indent=2))
        print(f"plot: {plot}", file=sys.stderr)
        return 0
    print(f"Incidents per class and severity ({rep['incidents']} in all):\n{rep['counts'].to_string()}\n")
    print("Median seconds per day (from postmortems):")
    print(rep["timing"].to_string(float_format=lambda v: f"{v:.0f}", na_rep="-"))
    print(f"\n{rep['without_postmortem']} incident(s) without a postmortem: counted, but not in the medians."
          + (f" {rep['undated']} without a start time: not in the per-day table." if rep["undated"] else ""))
    print(f"plot: {plot}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-hash an evidence bundle (folder or .tar.gz, or an incident's) against its manifest."""
    from .records import signing
    from .records.remote import verify

    key_path = args.public_key or os.environ.get(signing.PUBLIC_KEY_ENV, "")
    public_key = signing.load_public_key(key_path, "--public-key" if args.public_key else
                                         f"${signing.PUBLIC_KEY_ENV}") if key_path else None
    results = verify(args.output_dir, args.bundle, public_key)
    for result in results:
        if result.ok:
            print(f"OK: {result.files} files match manifest.json ({result.target})")
        else:
            print(f"FAILED: {result.target}: {len(result.problems)} problem(s)")
            for problem in result.problems:
                print(f"  {problem}")
        for note in result.notes:
            print(f"  note: {note}")
    return 0 if all(r.ok for r in results) else 1


def _embedded_kubeconfig(kube: Any) -> Path:
    """Where `stack` and `lab` write the emulator's kubeconfig (git-ignored, under outputs/)."""
    return kube.write_kubeconfig((Path.cwd() / "outputs" / ".embedded" / "kubeconfig.yaml").resolve())


def _stack_ports(args: argparse.Namespace) -> dict[str, int]:
    """`--ports` over the notebooks' default ports (FIXED_PORTS)."""
    from .demo import FIXED_PORTS
    from .run.lab import parse_ports

    return parse_ports(args.ports, FIXED_PORTS)


def cmd_stack(args: argparse.Namespace) -> int:
    """The whole embedded stack in the foreground, on the notebooks' default ports (or `--ports`)."""
    from ._signals import wait_for_stop_signal
    from .demo import ensure_key, full_stack

    if not os.environ.get(args.api_key_env):
        print(f"note: ${args.api_key_env} is not set, so the simulator uses a throwaway key and runs from other "
              f"shells will get 401 (the auth_failure case). Export {args.api_key_env} before `runbook stack` "
              "to share a key.", file=sys.stderr)
    key = ensure_key(args.api_key_env)
    with full_stack(key, mode=args.mode, rate=args.rate, fixed_ports=True, ports=_stack_ports(args)) as (stack, kube,
                                                                                                        prom):
        print(f"Mistral simulator: {stack.mistral_url}  (switch faults: POST {stack.mistral_url}/_sim/mode)")
        print(f"our service:       {stack.service_health_url}")
        print(f"Prometheus:        {prom.url if prom else 'not available'}")
        print(f"cluster:           export KUBECONFIG={_embedded_kubeconfig(kube)}", flush=True)
        wait_for_stop_signal()
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    """The embedded stack + a runbook's copy (triage) in a new incident folder, opened in JupyterLab."""
    from .demo import run_lab

    return run_lab(args.notebook, _collect_params(args), output_root=args.output_dir, mode=args.mode,
                   ports=_stack_ports(args), lab_port=args.port, incident_id=args.incident_id)


def cmd_open(args: argparse.Namespace) -> int:
    """A runbook's copy in an incident folder (new, or `--incident`'s) with its parameters, in JupyterLab."""
    from .records.archive import find
    from .run.interactive import carried_parameters, prepare
    from .run.lab import check_port_free, serve

    if not args.no_lab:
        check_port_free("JupyterLab", args.port)
    parameters = _collect_params(args)
    folder = find(args.output_dir, args.incident) if args.incident else None
    if folder is not None:  # the incident's own parameters carried over; -p wins
        parameters = {**carried_parameters(folder, args.notebook), **parameters}
    opened = prepare(args.notebook, parameters, output_root=args.output_dir, incident_id=args.incident_id,
                     folder=folder)
    print(f"prepared: {opened.path}" if opened.created else
          f"already prepared (opened as it is, parameters unchanged): {opened.path}", flush=True)
    if args.no_lab:
        print(f"open it in JupyterLab (`runbook open {args.notebook} --incident {opened.folder.name}`); saving it "
              "there seals the record")
        return 0
    return serve([opened], output_root=args.output_dir, port=args.port)


# ---------------------------------------------------------------------------------------------- parser
# Options several subcommands share are declared once, each in an `add_help=False` parent parser;
# a subcommand passes only what differs for it (help text, default).


def _option(*flags: str, **spec: Any) -> argparse.ArgumentParser:
    """A parent parser holding one shared option."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*flags, **spec)
    return parent


def _params_option(param_help: str, raw_help: str | None = None) -> argparse.ArgumentParser:
    """-p NAME VALUE (typed like papermill) and -r NAME VALUE (kept as text): notebook parameters."""
    parent = _option("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help=param_help)
    parent.add_argument("-r", "--raw-param", nargs=2, action="append", metavar=("NAME", "VALUE"), help=raw_help)
    return parent


def _output_dir_option(what: str | None = None) -> argparse.ArgumentParser:
    """--output-dir: `$RUNBOOK_OUTPUTS` when set (the notebooks honour it too), else ./outputs."""
    return _option("--output-dir", default=default_output_root(),
                   help=f"{what} (default: %(default)s)" if what else None)


def _incident_id_option(text: str | None = None) -> argparse.ArgumentParser:
    """--incident-id: passed on as given (an empty or bad one is refused, never replaced by a default)."""
    return _option("--incident-id", help=text)


def _cell_timeout_option() -> argparse.ArgumentParser:
    return _option("--cell-timeout", type=int, default=300, help="seconds per cell (default: 300)")


def _run_timeout_option(default: float | None, text: str) -> argparse.ArgumentParser:
    return _option("--run-timeout", type=float, default=default, help=text)


def _quiet_option(text: str | None = None) -> argparse.ArgumentParser:
    return _option("-q", "--quiet", action="store_true", help=text)


def _apply_changes_option(text: str) -> argparse.ArgumentParser:
    return _option("--apply-changes", action="store_true", help=text)


def _json_option(text: str | None = None) -> argparse.ArgumentParser:
    return _option("--json", action="store_true", help=text)


def _mode_option(default: str, text: str | None = None) -> argparse.ArgumentParser:
    return _option("--mode", choices=DEMO_MODES, default=default, help=text)


def _rate_option(default: float, text: str | None = None) -> argparse.ArgumentParser:
    return _option("--rate", type=float, default=default, help=text)


def _ports_option() -> argparse.ArgumentParser:
    return _option("--ports", metavar="NAME=PORT,...|free",
                   help="move the embedded stack: mistral, service, kube, prometheus (default: 18080, 18081, 18082, "
                        "19090, the notebooks' defaults); `free` lets the system choose every one")


def _lab_port_option() -> argparse.ArgumentParser:
    return _option("--port", type=int, default=8888, help="JupyterLab's port on 127.0.0.1 (default: 8888)")


def _add_run_commands(sub: Any) -> None:
    """`run` one notebook, `respond` (triage, then its diagnosis)."""
    run = sub.add_parser("run", help="execute a runbook notebook headless into outputs/", parents=[
        _params_option("parameter (typed like papermill: numbers, True/False, else text)",
                       "parameter kept as a string"),
        _incident_id_option("names the record folder (default: INC-<UTC timestamp>)"),
        _output_dir_option("where record folders go"), _cell_timeout_option(),
        _run_timeout_option(None, "seconds for the whole run; at the deadline the kernel is killed and the run is "
                                  "recorded as timed_out (default: 900, or the notebook's monitor_max_s + 300 when "
                                  "longer)"),
        _quiet_option("no progress bar")])
    run.add_argument("notebook", help="notebook name without .ipynb, e.g. triage")
    with_archive_options(run, cmd_run)  # --retain-days; an s3:// --output-dir (issue 19, records/remote.py)

    respond = sub.add_parser("respond", help="triage, then the diagnosis it points to, in one incident folder",
                             parents=[_params_option("parameter for the notebooks that declare it"),
                                      _incident_id_option(),
                                      _apply_changes_option("approve the diagnosis notebook's mitigation "
                                                            "(default: dry run)"),
                                      _output_dir_option(), _cell_timeout_option(),
                                      _run_timeout_option(None, "seconds for the whole respond (triage and "
                                                                "diagnosis); the diagnosis gets what triage left "
                                                                "and its recovery watch ends before it (default: "
                                                                "each notebook's own, as for run)"),
                                      _quiet_option()])
    respond.add_argument("--record-dir", help="an existing incident folder to run into (used by `runbook serve`)")
    with_archive_options(respond, cmd_respond)


def _add_serve_command(sub: Any) -> None:
    """`serve` (Alertmanager webhooks -> respond) and `rules` (the alerting rules): serve/commands.py."""
    from .serve.commands import add_rules_command, add_serve_arguments

    srv = sub.add_parser("serve", help="receive Alertmanager webhooks and run `respond` for each firing Mistral alert",
                         parents=[_params_option("parameter passed to every respond run (e.g. mistral_url, "
                                                 "prometheus_url)"),
                                  _output_dir_option("where incident folders go"),
                                  _run_timeout_option(1800.0, "seconds per respond run (default: 1800)")])
    add_serve_arguments(srv)
    srv.set_defaults(func=cmd_serve)
    add_rules_command(sub)


def _add_local_commands(sub: Any) -> None:
    """The embedded stack: `demo`, `stack` and `lab`."""
    demo = sub.add_parser("demo", help="embedded stack + injected fault + headless triage", parents=[
        _mode_option("rate_limited", "fault to inject"), _rate_option(10.0, "our service's background requests/s"),
        _apply_changes_option("with --full: apply mitigations (to the emulator)"), _incident_id_option(),
        _output_dir_option(), _quiet_option()])
    demo.add_argument("--settle", type=float, default=10.0, help="max seconds to wait for the fault to show")
    demo.add_argument("--no-prometheus", action="store_true", help="run without the local Prometheus")
    demo.add_argument("--full", action="store_true", help="the whole cycle: respond, recovery, evidence, postmortem")
    demo.set_defaults(func=cmd_demo)

    stack = sub.add_parser("stack", help="run the Mistral simulator and our service in the foreground",
                           parents=[_mode_option("ok"), _rate_option(5.0), _ports_option()])
    stack.add_argument("--api-key-env", default="MISTRAL_API_KEY")
    stack.set_defaults(func=cmd_stack)

    lab = sub.add_parser("lab", help="embedded stack + a runbook's copy in a new incident folder, in JupyterLab",
                         parents=[_mode_option("ok"), _ports_option(), _lab_port_option(),
                                  _params_option("parameter of the runbook (the stack's addresses are filled in)"),
                                  _incident_id_option("names the incident folder (default: INC-<UTC timestamp>)"),
                                  _output_dir_option("where incident folders go")])
    lab.add_argument("notebook", nargs="?", default="triage", help="runbook to open (default: triage)")
    lab.set_defaults(func=cmd_lab)

    opn = sub.add_parser("open", help="copy a runbook into an incident folder with its parameters and open it in "
                                      "JupyterLab; saving seals the record",
                         parents=[_params_option("parameter of the runbook"), _lab_port_option(),
                                  _incident_id_option("names a new incident folder (default: INC-<UTC timestamp>)"),
                                  _output_dir_option("where incident folders go")])
    opn.add_argument("notebook", help="runbook name, e.g. triage or diagnose_rate_limit")
    opn.add_argument("--incident", help="an existing incident (id, folder name or path): open the runbook in its "
                                        "folder with the parameters its earlier runs used")
    opn.add_argument("--no-lab", action="store_true", help="prepare the copy only (a JupyterLab already runs)")
    opn.set_defaults(func=cmd_open)


def _add_incident_notebook_commands(sub: Any) -> None:
    """`evidence` and `postmortem`: a runbook run into an existing incident's folder."""
    for name, text in (("evidence", "collect the incident's evidence bundle into its folder (notebooks/evidence)"),
                       ("postmortem", "analyse the incident and prefill postmortem.md (notebooks/postmortem)")):
        nb = sub.add_parser(name, help=text, parents=[
            _params_option(f"a parameter of notebooks/{name}.ipynb"), _output_dir_option("where incident folders are"),
            _cell_timeout_option(), _quiet_option()])
        nb.add_argument("incident", help="incident id, folder name or path (see `runbook list`)")
        nb.set_defaults(func=cmd_incident_notebook)


def _add_archive_commands(sub: Any) -> None:
    """Reading the archive: `list`, `show`, `report`, `verify`."""
    lst = sub.add_parser("list", help="the incident archive, newest first",
                         parents=[_json_option("machine-readable output"), _output_dir_option("the archive")])
    lst.add_argument("--status", help="running, triaged, diagnosed, failed (incidents); succeeded, timed_out (runs)")
    lst.add_argument("--severity", help="P1..P4")
    lst.add_argument("--class", dest="error_class", help="auth, rate_limit, provider_error, network, ...")
    lst.add_argument("--since", help="only incidents started at or after this ISO date (UTC), e.g. 2026-11-01")
    lst.add_argument("--limit", type=int, help="at most N incidents (the newest)")
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="one incident in full: notebooks, changes and undo commands, evidence",
                          parents=[_json_option(), _output_dir_option()])
    show.add_argument("ref", help="incident id (newest folder wins), folder name, or path")
    show.set_defaults(func=cmd_show)

    rep = sub.add_parser("report", help="incidents per class/severity and MTTD/MTTR per day, with a PNG",
                         parents=[_json_option(), _output_dir_option()])
    rep.add_argument("--plot", help="PNG to write (default: <output-dir>/report.png)")
    rep.set_defaults(func=cmd_report)

    ver = sub.add_parser("verify", help="check an evidence bundle against its manifest (exit 1 if altered)",
                         parents=[_output_dir_option()])
    ver.add_argument("bundle", help="bundle folder, its .tar.gz, or an incident (id/folder/path) with evidence")
    ver.add_argument("--public-key", default="", help="PEM Ed25519 public key checking the bundle's signature "
                                                      "(default: $RUNBOOK_VERIFY_PUBLIC_KEY_FILE)")
    ver.set_defaults(func=cmd_verify)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Which integrations are configured and reachable (credentials shown as fingerprints); exit 0 (2: a bad option)."""
    import json

    from . import params
    from .notify import doctor

    timeout_s = params.timeout("--timeout", args.timeout, maximum=60)
    webhook_env = params.env_var_name("--webhook-env", args.webhook_env)
    rows = doctor.diagnose(timeout_s, webhook_env)
    print(json.dumps([r.to_dict() for r in rows], indent=2) if args.json else doctor.table(rows))
    return 0


def _add_doctor_command(sub: Any) -> None:
    doc = sub.add_parser("doctor", help="which integrations (Slack, PagerDuty, status page) are configured and "
                                        "reachable; never prints a secret", parents=[_json_option()])
    doc.add_argument("--timeout", type=float, default=5.0, help="seconds per probe (all run at once; default 5)")
    doc.add_argument("--webhook-env", default="SLACK_WEBHOOK_URL",
                     help="NAME of the variable holding the Slack webhook URL (default SLACK_WEBHOOK_URL)")
    doc.set_defaults(func=cmd_doctor)


def _add_integration_commands(sub: Any) -> None:
    """Issue 18's optional integrations: grafana/commands.py (`dashboard`, `annotate`) and
    secretstores/commands.py (`rotate-key`); each imports its client library only when run."""
    from .grafana.commands import add_commands as add_grafana_commands
    from .sim.replay.commands import add_commands as add_replay_commands  # issue 20: `replay` (embedded-stack tooling)
    from .secretstores.commands import add_commands as add_secretstore_commands

    for add in (add_grafana_commands, add_secretstore_commands, add_replay_commands):
        add(sub)


def build_parser() -> argparse.ArgumentParser:
    """The `runbook` command line; `sim` and `service` are listed here but parsed by their own CLIs."""
    p = argparse.ArgumentParser(prog="runbook", description=__doc__)
    p.add_argument("--version", action="version", version=f"mistral-runbooks {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_run_commands(sub)
    _add_serve_command(sub)
    _add_local_commands(sub)
    _add_incident_notebook_commands(sub)
    _add_archive_commands(sub)
    _add_doctor_command(sub)
    _add_integration_commands(sub)
    sub.add_parser("sim", help="Mistral API simulator alone (see `runbook sim --help`)", add_help=False)
    sub.add_parser("service", help="'our service' simulator alone (see `runbook service --help`)",
                   add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("sim", "service"):
        if argv[0] == "sim":
            from .sim.mistral import cli_main
        else:
            from .sim.service import cli_main
        return cli_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RunbookError as exc:
        print(f"runbook: {exc}{_port_hint(exc)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional part this install left out (a production image)
        if exc.name not in EXTRA_OF:
            raise
        print(f"runbook {argv[0] if argv else ''}: needs {exc.name}, which this install leaves out: "
              f"pip install 'mistral-runbooks[{EXTRA_OF[exc.name]}]'", file=sys.stderr)
        return 2


# The optional packages and the extra that brings each (pyproject.toml): the embedded stack's
# Kubernetes emulator, JupyterLab, the figures.
EXTRA_OF = {"kmock": "sim", "jupyterlab": "lab", "matplotlib": "plots", "fsspec": "s3", "s3fs": "s3", "gcsfs": "gcs"}


def _port_hint(exc: RunbookError) -> str:
    """For a port already in use: the option that moves it."""
    from .errors import PortInUse

    if not isinstance(exc, PortInUse):
        return ""
    if exc.key:
        return f"; move it with --ports {exc.key}=PORT (or --ports free)"
    return "; choose another with --port PORT"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
