"""`runbook rotate-key`: rotate the Mistral API key in a secret manager (Vault KV v2, GCP or AWS).

The new key is tested against the Mistral API first; nothing is written without --apply-changes;
with --incident the change (dry run or applied) is recorded in that incident's incident.json
(`secret_store_changes`, and `changes_applied` when applied, so `runbook show` lists its undo).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..paths import default_output_root
from . import PROVIDERS


def add_commands(sub: Any) -> None:
    """Register `rotate-key` on the `runbook` subparsers."""
    p = sub.add_parser("rotate-key", help="rotate the Mistral API key in Vault, GCP or AWS Secrets Manager: tested "
                                          "first, dry run unless --apply-changes, recorded with its undo")
    p.add_argument("--store", required=True, choices=PROVIDERS, help="the secret manager")
    p.add_argument("--new-key-env", default="NEW_MISTRAL_API_KEY", metavar="NAME",
                   help="NAME of the variable holding the new key (never the key; default: %(default)s)")
    p.add_argument("--mistral-url", default="https://api.mistral.ai", help="where the new key is tested first")
    p.add_argument("--apply-changes", action="store_true", help="write it (default: dry run)")
    p.add_argument("--operator", default="", help="who approves (recorded)")
    p.add_argument("--incident", default="", help="incident id/folder/path to record the change in")
    p.add_argument("--output-dir", default=default_output_root(), help="(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: %(default)s)")
    p.add_argument("--ca-bundle", default="", help="PEM CA bundle for Vault's certificate and the key test")
    p.add_argument("--json", action="store_true", help="print the change record as JSON")
    v = p.add_argument_group("vault (KV v2)")
    v.add_argument("--vault-addr", default=os.environ.get("VAULT_ADDR", ""), help="(default: $VAULT_ADDR)")
    v.add_argument("--vault-path", default="", help="the secret's path under the mount, e.g. mistral/prod")
    v.add_argument("--vault-mount", default="secret", help="(default: %(default)s)")
    v.add_argument("--vault-key", default="api-key", help="the field holding the key (default: %(default)s)")
    v.add_argument("--vault-token-env", default="VAULT_TOKEN", metavar="NAME", help="(default: %(default)s)")
    v.add_argument("--vault-namespace", default="", help="Vault Enterprise namespace")
    g = p.add_argument_group("gcp (Application Default Credentials)")
    g.add_argument("--gcp-project", default="", help="project id")
    g.add_argument("--gcp-secret", default="", help="secret id, e.g. mistral-api-key")
    a = p.add_argument_group("aws (boto3's standard chain: AWS_PROFILE, AWS_ACCESS_KEY_ID..., role; "
                             "AWS_ENDPOINT_URL)")
    a.add_argument("--aws-region", default="", help="(default: $AWS_REGION, else $AWS_DEFAULT_REGION)")
    a.add_argument("--aws-secret-id", default="", help="secret name or ARN, e.g. prod/mistral-api-key")
    a.add_argument("--aws-key", default="", help="the JSON field holding the key, when the SecretString is JSON "
                                                "(default: the whole SecretString is the key)")
    p.set_defaults(func=run_rotate_key)


def _vault_from_args(args: argparse.Namespace) -> Any:
    from ..errors import ParameterError
    from .vault import VaultStore

    if not args.vault_path:
        raise ParameterError("--vault-path", "", "the secret's path under the mount, e.g. mistral/prod")
    return VaultStore(args.vault_addr, args.vault_path, mount=args.vault_mount, key=args.vault_key,
                      token_env=args.vault_token_env, namespace=args.vault_namespace, timeout_s=args.timeout,
                      ca_bundle=args.ca_bundle)


def _gcp_from_args(args: argparse.Namespace) -> Any:
    from ..errors import ParameterError
    from .gcp import GcpSecretStore

    if not args.gcp_project or not args.gcp_secret:
        raise ParameterError("--gcp-project/--gcp-secret", "", "both, e.g. --gcp-project shop-prod "
                                                               "--gcp-secret mistral-api-key")
    return GcpSecretStore(args.gcp_project, args.gcp_secret, timeout_s=args.timeout)


def _aws_from_args(args: argparse.Namespace) -> Any:
    from ..errors import ParameterError
    from .aws import AwsSecretStore

    if not args.aws_secret_id:
        raise ParameterError("--aws-secret-id", "", "the secret's name or ARN, e.g. prod/mistral-api-key")
    return AwsSecretStore(args.aws_region, args.aws_secret_id, key=args.aws_key, timeout_s=args.timeout)


FROM_ARGS = {"vault": _vault_from_args, "gcp": _gcp_from_args, "aws": _aws_from_args}


def store_from_args(args: argparse.Namespace) -> Any:
    """The chosen store, its options checked (a missing one is named)."""
    return FROM_ARGS[args.store](args)


def record_in_incident(folder: Path, change: dict[str, Any]) -> None:
    """Append to incident.json: every change under `secret_store_changes`, applied ones to `changes_applied`."""
    from ..records.incident import edit_index

    with edit_index(folder) as index:
        index["secret_store_changes"] = [c for c in index.get("secret_store_changes") or []] + [change]
        if change["applied"]:
            index["changes_applied"] = [c for c in index.get("changes_applied") or []] + [{
                "record": "rotate-key", "runbook": "rotate-key", "action": change["action"], "target": change["target"],
                "at": change["at"], "who": change["who"], "undo": change["undo"], "verified": change["verified"],
                "set": [{"field": d["field"], "before": d["before"], "after": d["after"]} for d in change["diff"]]}]


def run_rotate_key(args: argparse.Namespace) -> int:
    """Exit 0 when the dry run passed or the rotation was applied and verified; 1 otherwise."""
    from ..records.archive import find
    from .base import mistral_key_test, rotate_key

    folder = find(args.output_dir, args.incident) if args.incident else None
    store = store_from_args(args)
    test = mistral_key_test(args.mistral_url, args.timeout, args.ca_bundle)
    change = rotate_key(store, args.new_key_env, test=test, apply_changes=args.apply_changes, operator=args.operator,
                        incident=folder.name if folder else "").to_dict()
    if folder is not None:
        record_in_incident(folder, change)
    if args.json:
        print(json.dumps(change, indent=2))
    else:
        _print(change)
    if folder is not None:
        print(f"recorded in {folder / 'incident.json'} (secret_store_changes)", file=sys.stderr)
    return 0 if change["ok"] else 1


def _print(c: dict[str, Any]) -> None:
    state = ("APPLIED and verified" if c["applied"] and c["verified"] else "APPLIED but NOT verified" if c["applied"]
             else "DRY RUN: may write" if c["dry_run_ok"] else "NOT possible")
    t = c["new_key_test"]
    print(f"{c['action']} on {c['target']}: {state}")
    print(f"  new key {t['fingerprint']} ({t['length']} chars) tested first: {t['seen']}")
    for d in c["diff"]:
        print(f"  before: {d['before']}\n  after:  {d['after']}")
    if c["command"]:
        print(f"  command: {c['command']}")
    if c["undo"]:
        print(f"  undo: {c['undo']}")
    print(f"  by {c['who']} at {c['at']}" + (f" (the store knows the credentials as {c['identity']})"
                                             if c["identity"] else ""))
    if c["note"]:
        print(f"  {c['note']}")
    if c["finding"]:
        print(f"  {c['finding']['status'].upper()}: {c['finding']['message']}")
