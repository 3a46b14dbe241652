"""Alert labels -> runbook parameters, and which service an alert belongs to (`runbook serve --label-map`).

The rules aggregate by the labels that identify a service (`runbook rules --service-labels`), so a
firing alert says *which* service fails: its namespace, its service/app name, its cluster. A small
file tells serve how to turn those labels into the parameters of that service's runbooks, and which
labels make up a service's identity (alerts of one service share an incident, two services never):

    service_labels: [cluster, namespace, service]
    parameters:                        # parameter: template; {label} is the alert's label value
      namespace: "{namespace}"
      label_selector: "app in ({service})"
      deployment: "{service}"
      kube_context: "{cluster}"
      service_health_url: "http://{service}.{namespace}.svc.cluster.local:8080/health"

A parameter whose template needs a label the alert does not carry is left out (the static `-p`
value, or the notebook's default, applies) and the record says so. Only parameters that say where
the service runs can be mapped (`MAPPABLE`): label values come from whoever posts the webhook.
"""

from __future__ import annotations

import ast
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from .rules import DEFAULT_SERVICE_LABELS, service_labels as _check_labels

OPTION = "--label-map"
FORMAT = ("a YAML (or JSON) file with `service_labels: [label, ...]` and `parameters: {parameter: template}`, "
          "templates using {label} placeholders (see the README, `runbook serve --label-map`)")
# Where the failing service runs and who hears about it. Nothing else comes from a label: whoever can
# post a webhook chooses label values, so no label may choose where a key or token is sent
# (mistral_url, prometheus_url), which env var or file holds one, or approve a change.
MAPPABLE = {"namespace", "label_selector", "selector", "deployment", "container", "kube_context",
            "service_health_url", "metrics_selector", "secret_name", "secret_key", "affected_features",
            "incident_commander"}


@dataclass(frozen=True)
class LabelMap:
    """Which labels identify a service, and parameter templates over alert labels."""

    service_labels: tuple[str, ...] = DEFAULT_SERVICE_LABELS
    parameters: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the file it came from, for the log

    def service(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The alert's service identity: the service labels it carries (absent ones are left out)."""
        return {k: labels[k] for k in self.service_labels if labels.get(k)}

    def service_key(self, labels: Mapping[str, str]) -> str:
        """A stable text key of `service(labels)`; "" for an alert that carries none of the labels."""
        return ",".join(f"{k}={v}" for k, v in self.service(labels).items())

    def parameters_for(self, labels: Mapping[str, str]) -> tuple[dict[str, str], dict[str, list[str]]]:
        """(parameters rendered from the labels, {parameter: missing labels} for the ones left out)."""
        rendered: dict[str, str] = {}
        skipped: dict[str, list[str]] = {}
        for name, template in self.parameters.items():
            missing = [f for f in _fields(template) if not labels.get(f)]
            if missing:
                skipped[name] = missing
            else:
                rendered[name] = template.format_map(dict(labels))
        return rendered, skipped


def load_label_map(path: str | Path, known_text_parameters: set[str] | None = None) -> LabelMap:
    """Read and check a label-map file; every problem is a ParameterError naming `--label-map` and the key."""
    p = Path(path)

    def bad(problem: str) -> ParameterError:
        return ParameterError(OPTION, str(path), f"{FORMAT}; {problem}")

    try:
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read it: {exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'}") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise bad(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise bad(f"the top level must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - {"service_labels", "parameters"})
    if unknown:
        raise bad(f"unknown key(s) {', '.join(map(str, unknown))} (accepted: service_labels, parameters)")
    try:
        labels = _check_labels("service_labels", data.get("service_labels", list(DEFAULT_SERVICE_LABELS)))
    except ParameterError as exc:
        raise bad(f"service_labels {exc.value!r}: expected {exc.accepted}") from None
    raw = data.get("parameters") or {}
    if not isinstance(raw, dict):
        raise bad(f"parameters must map parameter names to templates, got {type(raw).__name__}")
    known = known_text_parameters if known_text_parameters is not None else text_parameters()
    parameters: dict[str, str] = {}
    for name, template in raw.items():
        if name not in known:
            raise bad(f"parameters.{name}: cannot come from alert labels; mappable: {', '.join(sorted(known))}")
        if not isinstance(template, str) or not template:
            raise bad(f"parameters.{name}: the template must be non-empty text, got {template!r}")
        try:
            _fields(template)
        except ValueError as exc:
            raise bad(f"parameters.{name}: template {template!r} is not valid: {exc}") from None
        parameters[str(name)] = template
    return LabelMap(service_labels=labels, parameters=parameters, source=str(path))


def _fields(template: str) -> list[str]:
    """The label names a template uses; ValueError for anything but plain {label} placeholders."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} "
                             "is not a plain {label} placeholder (write {{ and }} for literal braces)")
        names.append(name)
    return names


def text_parameters() -> set[str]:
    """The MAPPABLE parameters some runbook declares with a text default: what a label can supply."""
    from ..run.catalog import available_notebooks, resolve_notebook

    found: set[str] = set()
    for name in available_notebooks():
        nb = json.loads(resolve_notebook(name).read_text("utf-8"))
        for cell in nb["cells"]:
            if "parameters" not in cell.get("metadata", {}).get("tags", []):
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for node in ast.parse(source).body:
                if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                        and isinstance(node.value.value, str)):
                    found.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return found & MAPPABLE


def describe(label_map: LabelMap) -> dict[str, Any]:
    """What serve logs at start: the identity labels and the mapped parameter names."""
    return {"service_labels": list(label_map.service_labels), "parameters": sorted(label_map.parameters),
            "file": label_map.source or None}
