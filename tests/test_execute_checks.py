"""Unit tests for the checks `runbook_lib.run.execute` makes before any kernel starts (no kernel here)."""

from __future__ import annotations

import json

import pytest

from runbook_lib.errors import ParameterError, UnknownParameter
from runbook_lib.run.execute import (DEFAULT_RUN_TIMEOUT_S, MAX_RUN_TIMEOUT_S, check_no_secret_values,
                                     check_run_request, default_run_timeout, record_rejected_run)


def test_default_run_timeout_grows_with_the_notebooks_own_wait():
    assert default_run_timeout({}) == DEFAULT_RUN_TIMEOUT_S
    assert default_run_timeout({"monitor_max_s": 60}) == DEFAULT_RUN_TIMEOUT_S
    assert default_run_timeout({"monitor_max_s": 1800}) == 2100
    assert default_run_timeout({"monitor_max_s": 10**9}) == MAX_RUN_TIMEOUT_S
    assert default_run_timeout({"monitor_max_s": True}) == DEFAULT_RUN_TIMEOUT_S
    assert default_run_timeout({"monitor_max_s": float("nan")}) == DEFAULT_RUN_TIMEOUT_S


def test_unknown_parameter_is_named_and_its_value_not_shown():
    with pytest.raises(UnknownParameter) as err:
        check_run_request("triage", {"timeout": "s3cr3t-value-xyz"}, strict_names=True)
    text = str(err.value)
    assert "'timeout'" in text and "timeout_s" in text and "s3cr3t" not in text
    check_run_request("triage", {"timeout": 5})  # papermill's lenient default when not strict


@pytest.mark.parametrize("bounds, flag", [({"cell_timeout_s": 0}, "cell_timeout_s"),
                                          ({"run_timeout_s": -1}, "run_timeout_s"),
                                          ({"run_timeout_s": MAX_RUN_TIMEOUT_S + 1}, "run_timeout_s")])
def test_bad_bounds_are_refused(bounds, flag):
    with pytest.raises(ParameterError, match=f"'{flag}'"):
        check_run_request("triage", {}, **bounds)


def test_unknown_notebook_is_refused():
    with pytest.raises(ParameterError, match="'notebook'"):
        check_run_request("../../etc/passwd", {})


def test_a_secret_value_as_a_parameter_is_refused_without_showing_it(monkeypatch):
    key = "sk-planted-0123456789abcdef"
    monkeypatch.setenv("MISTRAL_API_KEY", key)
    with pytest.raises(ParameterError) as err:
        check_no_secret_values({"operator": f"alice {key}"})
    assert "'operator'" in str(err.value) and "MISTRAL_API_KEY" in str(err.value) and key not in str(err.value)
    check_no_secret_values({"operator": "alice", "api_key_env": "MISTRAL_API_KEY"})


def test_rejected_run_leaves_a_failed_record_that_nothing_in_the_request_can_steer(tmp_path, monkeypatch):
    key = "sk-planted-0123456789abcdef"
    monkeypatch.setenv("MISTRAL_API_KEY", key)
    params = {"incident_id": "../../escape", "operator": key, "nonsense": "x"}
    result = record_rejected_run("../evil", params, ParameterError("notebook", "../evil", "one of triage"),
                                 output_root=tmp_path)
    (folder,) = tmp_path.iterdir()
    assert folder.name.endswith("-invalid-incident-id") and result.record_dir == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "invalid-notebook.run.json"]
    run_json = folder / "invalid-notebook.run.json"
    run = json.loads(run_json.read_text())
    assert run["status"] == "failed" and run["error"].startswith("rejected before the run started")
    assert run["provenance"]["version"] and run["provenance"]["notebook_sha256"] is None
    assert key not in run_json.read_text() and key not in (folder / "index.html").read_text()


def test_the_catalogue_is_still_reachable_through_execute():
    """serve, the runbooks and older tests import the catalogue from execute: the re-export stays."""
    from runbook_lib.run import catalog, execute

    assert execute.available_notebooks is catalog.available_notebooks
    assert execute.declared_parameters is catalog.declared_parameters
    assert execute.resolve_notebook is catalog.resolve_notebook
    names = catalog.available_notebooks()
    assert names and "triage" in names
    assert "incident_id" in catalog.declared_parameters("triage")


def test_papermill_output_path_is_for_raw_papermill_only():
    """`runbook` runs the kernel in the record folder; a path given here could only steer drafts elsewhere."""
    with pytest.raises(ParameterError, match="'PAPERMILL_OUTPUT_PATH'.*inject-output-path"):
        check_run_request("diagnose_server_error", {"PAPERMILL_OUTPUT_PATH": "/elsewhere/out.ipynb"},
                          strict_names=True)  # declared by the notebook (papermill injects it), refused anyway
