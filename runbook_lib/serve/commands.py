"""`runbook serve` and `runbook rules`: their options, checked into a ServeConfig / RulesConfig.

Every refusal is a ParameterError naming the option, raised before anything listens or is written
(the CLI prints it and exits 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_serve_arguments(srv: argparse.ArgumentParser) -> None:
    """serve's own options (the CLI adds -p/-r, --output-dir and --run-timeout, shared with other commands)."""
    srv.add_argument("--listen", default="127.0.0.1:9095", metavar="HOST:PORT",
                     help="address to listen on (default: 127.0.0.1:9095); beyond loopback only with a token "
                          "or --insecure")
    srv.add_argument("--state-dir", help="spool and fingerprint map (default: <output-dir>/.serve)")
    srv.add_argument("--workers", type=int, default=2, help="respond runs at once (default: 2)")
    srv.add_argument("--warm", type=int, default=2, metavar="N",
                     help="responders kept pre-started (imports done, a fresh kernel each, one incident each): "
                          "the first N alerts of a burst skip the start-up; 0 starts every respond cold "
                          "(default: 2)")
    srv.add_argument("--queue-max", type=int, default=100, help="accepted jobs waiting at most (default: 100)")
    srv.add_argument("--max-bytes", type=int, default=1024 * 1024, help="largest webhook body (default: 1 MiB)")
    srv.add_argument("--max-connections", type=int, default=64,
                     help="open connections at once; more are answered 503 and closed (default: 64)")
    srv.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                     help="a new connection's request headers must arrive within S seconds (default: 10)")
    srv.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                     help="a request body must arrive within S seconds of its headers, else 408 (default: 30)")
    srv.add_argument("--token-env", default="RUNBOOK_SERVE_TOKEN",
                     help="env var holding the shared secret; when set, webhooks need "
                          "`Authorization: Bearer <it>` (or basic auth with it as password)")
    srv.add_argument("--one-incident-per-alert", action="store_true",
                     help="open an incident per alert fingerprint; by default an alert that starts firing while "
                          "an incident of the same service is firing joins it (one fault fires several rules)")
    srv.add_argument("--label-map", metavar="FILE",
                     help="YAML file: which alert labels identify a service (its alerts share an incident) and "
                          "how labels become runbook parameters (e.g. namespace, label_selector); see "
                          "deploy/alertmanager/runbook-serve-labels.yml")
    srv.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain); needs --tls-key")
    srv.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (PEM)")
    srv.add_argument("--insecure", action="store_true",
                     help="allow listening on a non-loopback address with no token set (refused otherwise)")
    job = srv.add_argument_group("where responds run (issue 19)")
    job.add_argument("--dispatch", default="local", metavar="local|kubernetes",
                     help="local: a respond subprocess per incident (default); kubernetes: a Job per incident")
    job.add_argument("--job-image", default="", help="--dispatch kubernetes: the runbook image the Jobs run (required)")
    job.add_argument("--job-namespace", default="mistral-runbooks", help="namespace of the Jobs (default: mistral-runbooks)")
    job.add_argument("--job-service-account", default="mistral-runbooks",
                     help="the Jobs' read-only ServiceAccount (default: mistral-runbooks, deploy/kubernetes/rbac.yaml)")
    job.add_argument("--job-output-dir", default="", metavar="URL",
                     help="where the Jobs write records, e.g. s3://bucket/prefix (default: --output-dir)")
    job.add_argument("--job-secret", default="mistral-api-key",
                     help="Secret with key MISTRAL_API_KEY, the Jobs' env (default: mistral-api-key)")
    job.add_argument("--job-ttl", type=int, default=86400, metavar="S", help="ttlSecondsAfterFinished (default: 86400)")
    job.add_argument("--max-jobs", type=int, default=100, help="Jobs followed at once (default: 100)")
    job.add_argument("--job-start-grace", type=float, default=300.0, metavar="S",
                     help="a Job not ended --run-timeout + S seconds after its creation is recorded failed "
                          "(scheduling, image pull; default: 300)")
    job.add_argument("--kubeconfig", default="", help="serve's kubeconfig for the Jobs (default: as kubectl; in a pod, "
                                                      "its ServiceAccount)")
    job.add_argument("--kube-context", default="", help="the kubeconfig context (default: current)")


def run_serve(args: argparse.Namespace, parameters: dict[str, Any]) -> int:
    """Check serve's options into a ServeConfig and serve until SIGINT/SIGTERM."""
    from .. import params
    from ..errors import ParameterError
    from .labelmap import LabelMap, load_label_map
    from .server import ServeConfig, serve

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError("--listen", args.listen, "HOST:PORT, e.g. 127.0.0.1:9095")
    for name, value, low, high in (("--workers", args.workers, 1, 64), ("--warm", args.warm, 0, 64),
                                   ("--queue-max", args.queue_max, 1, 100000),
                                   ("--max-bytes", args.max_bytes, 1024, 64 * 1024 * 1024),
                                   ("--run-timeout", args.run_timeout, 10, 86400),
                                   ("--max-connections", args.max_connections, 2, 10000),
                                   ("--header-timeout", args.header_timeout, 1, 600),
                                   ("--body-timeout", args.body_timeout, 1, 3600)):
        if not low <= value <= high:
            raise ParameterError(name, value, f"a number from {low} to {high}")
    params.env_var_name("--token-env", args.token_env)
    if "apply_changes" in parameters:
        raise ParameterError("apply_changes", parameters["apply_changes"],
                             "nothing: alert-started runs are dry runs; apply changes from a person's run")
    label_map = load_label_map(args.label_map) if args.label_map else LabelMap()
    job = job_settings(args)
    config = ServeConfig(host=host.strip("[]"), port=int(port), output_dir=Path(args.output_dir),
                         state_dir=Path(args.state_dir) if args.state_dir else None, workers=args.workers, warm=args.warm,
                         queue_max=args.queue_max, max_body_bytes=args.max_bytes, run_timeout_s=args.run_timeout,
                         max_connections=args.max_connections, header_timeout_s=args.header_timeout,
                         body_timeout_s=args.body_timeout,
                         token_env=args.token_env, parameters=parameters,
                         correlate=not args.one_incident_per_alert, label_map=label_map,
                         tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                         tls_key=Path(args.tls_key) if args.tls_key else None, insecure=args.insecure,
                         dispatch=args.dispatch, job=job)
    return serve(config)


def job_settings(args: argparse.Namespace) -> Any:
    """The --dispatch/--job-* options checked into JobSettings (ParameterError naming the option)."""
    import re

    from ..errors import ParameterError
    from .config import JobSettings
    from .dispatch import DISPATCHERS

    if args.dispatch not in DISPATCHERS:
        raise ParameterError("--dispatch", args.dispatch, " or ".join(DISPATCHERS))
    name = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for option, value in (("--job-namespace", args.job_namespace), ("--job-service-account", args.job_service_account),
                          ("--job-secret", args.job_secret)):
        if not name.match(value or "") or len(value) > 63:
            raise ParameterError(option, value, "a Kubernetes name: lower-case letters, digits and '-'")
    if args.dispatch == "kubernetes" and not (args.job_image or "").strip():
        raise ParameterError("--job-image", args.job_image, "the runbook image the Jobs run, e.g. "
                                                            "registry.example.com/mistral-runbooks:0.1.0")
    if any(c.isspace() for c in args.job_image):
        raise ParameterError("--job-image", args.job_image, "an image reference without spaces")
    for option, value, low, high in (("--job-ttl", args.job_ttl, 0, 30 * 86400), ("--max-jobs", args.max_jobs, 1, 10000),
                                     ("--job-start-grace", args.job_start_grace, 0, 3600)):
        if not low <= value <= high:
            raise ParameterError(option, value, f"a number from {low} to {high}")
    return JobSettings(image=args.job_image.strip(), namespace=args.job_namespace,
                       service_account=args.job_service_account, output_dir=args.job_output_dir,
                       api_key_secret=args.job_secret, kubeconfig=args.kubeconfig, context=args.kube_context,
                       ttl_s=args.job_ttl, max_jobs=args.max_jobs, start_grace_s=args.job_start_grace)


def add_rules_command(sub: Any) -> None:
    """`runbook rules`: render deploy/prometheus/mistral-rules.yml for a team's labels and base URL."""
    from .rules import DEFAULT_AUTH_MIN_REQUESTS, DEFAULT_DASHBOARD_URL, DEFAULT_RUNBOOK_BASE_URL, DEFAULT_SERVICE_LABELS

    rules = sub.add_parser("rules", help="render the Prometheus alerting rules (deploy/prometheus/mistral-rules.yml) "
                                         "for your service labels and runbook base URL")
    rules.add_argument("--service-labels", default=",".join(DEFAULT_SERVICE_LABELS), metavar="L1,L2",
                       help="labels that identify one service; alerts aggregate by them "
                            f"(default: {','.join(DEFAULT_SERVICE_LABELS)})")
    rules.add_argument("--runbook-base-url", default=DEFAULT_RUNBOOK_BASE_URL, metavar="URL",
                       help="where the repository is browsed; runbook_url = URL/notebooks/<runbook>.ipynb")
    rules.add_argument("--auth-min-requests", type=int, default=DEFAULT_AUTH_MIN_REQUESTS, metavar="N",
                       help=f"MistralAuthFailures needs at least N calls in 5m (default: {DEFAULT_AUTH_MIN_REQUESTS})")
    rules.add_argument("--dashboard-url", default=DEFAULT_DASHBOARD_URL, metavar="URL",  # issue 18, Grafana
                       help="the Grafana dashboard (deploy/grafana/mistral-dashboard.json) each alert links as its "
                            "`dashboard` annotation, filtered on the service; '' for none "
                            f"(default: {DEFAULT_DASHBOARD_URL})")
    rules.add_argument("-o", "--output", help="file to write (default: standard output)")
    rules.set_defaults(func=run_rules)


def run_rules(args: argparse.Namespace) -> int:
    """Render the rules; write them to --output or standard output."""
    from .rules import render_rules, rules_config

    text = render_rules(rules_config(labels=args.service_labels, base_url=args.runbook_base_url,
                                     auth_min_requests=args.auth_min_requests, dashboard_url=args.dashboard_url))
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
