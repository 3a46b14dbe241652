"""`runbook lab`/`stack`/`open` as real processes: ports, signals, the copy and its seal.

- A port already taken: exit 2 before anything starts, one line naming the port and the option
  that moves it, no traceback.
- `runbook lab --ports free`: the stack on free ports, triage's copy in a new incident folder with
  the stack's real addresses as parameters, JupyterLab up; a kernel started in it; then SIGTERM:
  the command exits 0, JupyterLab, the kernel and Prometheus are all gone, and the copy is sealed
  (`triage.run.json`, status interactive; the incident in `runbook list`).
- `runbook open` refuses what `runbook run` refuses (unknown parameter, a secret's value, a bad
  incident id) and leaves no folder; `--incident` reuses a folder with its parameters carried over.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from browser_support import RunbookCommand, isolated_jupyter_env

ROOT = Path(__file__).resolve().parent.parent


def _runbook(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runbook_lib", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env, check=False)


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


@pytest.mark.parametrize(("args", "option"), [
    (["stack", "--ports", "mistral={port}"], "--ports mistral=PORT"),
    (["stack", "--ports", "service=0,kube={port}"], "--ports kube=PORT"),
    (["lab", "--ports", "free", "--port", "{port}"], "--port PORT"),
])
def test_a_taken_port_is_named_with_the_option_that_moves_it(taken_port, tmp_path, args, option):
    args = [a.format(port=taken_port) for a in args]
    done = _runbook(*args, "--output-dir", str(tmp_path / "out")) if args[0] == "lab" else _runbook(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"port {taken_port} " in done.stderr and option in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert not (tmp_path / "out").exists(), "nothing is created before the ports are checked"


def test_bad_ports_value_names_the_option():
    done = _runbook("stack", "--ports", "mistral=99999")
    assert done.returncode == 2 and "'--ports'" in done.stderr and "mistral, service" in done.stderr, done.stderr


def test_open_refuses_like_run_and_leaves_nothing(tmp_path, api_key):
    out = tmp_path / "out"
    for args, named in ((["-p", "no_such_parameter", "x"], "no_such_parameter"),
                        (["-p", "operator", api_key], "operator"),
                        (["--incident-id", ""], "--incident-id"),
                        (["--incident-id", "../x"], "--incident-id")):
        done = _runbook("open", "triage", "--no-lab", "--output-dir", str(out), *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"'{named}'" in done.stderr, (args, done.stderr)
        assert api_key not in done.stdout + done.stderr
        assert not out.exists() or not any(out.iterdir()), f"{args}: a folder was left: {list(out.iterdir())}"


def test_open_in_an_incident_carries_its_parameters(tmp_path, api_key):
    out = tmp_path / "out"
    first = _runbook("open", "triage", "--no-lab", "--output-dir", str(out), "--incident-id", "CARRY-1",
                     "-p", "mistral_url", "http://127.0.0.1:28080", "-p", "operator", "alice", "-p", "samples", "3")
    assert first.returncode == 0, first.stderr
    folder = Path(first.stdout.split("prepared: ", 1)[1].split()[0]).parent
    env = {**os.environ, "RUNBOOK_OUTPUTS": str(out)}
    sealed = subprocess.run([sys.executable, "-c", "import sys; from runbook_lib.run.interactive import seal; "
                             "print(seal(sys.argv[1], sys.argv[2])['status'])", str(folder / "triage.ipynb"),
                             str(out)], capture_output=True, text=True, timeout=60, env=env, check=True)
    assert sealed.stdout.strip() == "interactive"
    again = _runbook("open", "diagnose_rate_limit", "--no-lab", "--output-dir", str(out), "--incident", folder.name)
    assert again.returncode == 0, again.stderr
    copy = json.loads((folder / "diagnose_rate_limit.ipynb").read_text("utf-8"))
    carried = copy["metadata"]["papermill"]["parameters"]
    # what both declare, and the incident's id; `samples` is triage's only
    assert carried == {"mistral_url": "http://127.0.0.1:28080", "operator": "alice", "incident_id": "CARRY-1"}
    listed = _runbook("list", "--json", "--output-dir", str(out))
    rows = json.loads(listed.stdout)["incidents"]
    assert [(r["id"], r["status"], r["notebooks"]) for r in rows] == [("CARRY-1", "interactive", ["triage"])]


def test_sigterm_stops_jupyterlab_its_kernel_prometheus_and_the_stack(tmp_path, api_key, require_binary):
    import httpx

    require_binary("prometheus")
    env = {**isolated_jupyter_env(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out"
    with RunbookCommand(["lab", "--ports", "free", "--port", "0", "--output-dir", str(out), "--incident-id",
                         "LAB-1"], env, cwd=ROOT) as lab:
        url = lab.wait_for(r"JupyterLab: (http://127\.0\.0\.1:\d+)/lab/tree/(\S+)\?token=(\w+)", 120)
        base, path, token = url.group(1), url.group(2), url.group(3)
        folder = out / Path(path).parent
        assert folder.parent == out and folder.name.endswith("-LAB-1") and path.endswith("/triage.ipynb")
        params = json.loads((folder / "triage.ipynb").read_text("utf-8"))["metadata"]["papermill"]["parameters"]
        assert params["mistral_url"].startswith("http://127.0.0.1:") and params["mistral_url"] != \
            "http://127.0.0.1:18080", f"--ports free: the copy should point at the stack's real ports: {params}"
        assert params["prometheus_url"].startswith("http://127.0.0.1:"), params
        assert httpx.get(f"{params['mistral_url']}/v1/models", headers={"Authorization": f"Bearer {api_key}"},
                         timeout=5).status_code == 200, "the stack answers at the copy's address"

        answer = httpx.post(f"{base}/api/sessions", params={"token": token}, timeout=60, json={
            "path": path, "type": "notebook", "name": "triage.ipynb", "kernel": {"name": "mistral-runbooks"}})
        assert answer.status_code == 201, answer.text
        kernel_id = answer.json()["kernel"]["id"]
        # until the kernel answers (stopping it mid-import would only print its KeyboardInterrupt)
        from jupyter_client import BlockingKernelClient

        connection = Path(env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json"
        client = BlockingKernelClient(connection_file=str(connection))
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
        finally:
            client.stop_channels()
        started = [p for p in lab.children() if any(kernel_id in part for part in p.cmdline())]
        assert started, f"no kernel process for {kernel_id} among {[p.cmdline()[:3] for p in lab.children()]}"
        children = lab.children()
        names = " ".join(" ".join(p.cmdline()[:4]) for p in children)
        assert "jupyter" in names and "prometheus" in names, names

        code = lab.terminate(timeout_s=90)
        assert code == 0, lab.output()
        import psutil

        _, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [], f"still running after SIGTERM: {[p.cmdline()[:4] for p in alive]}\n{lab.output()}"
        assert "Traceback" not in lab.output(), lab.output()

    run = json.loads((folder / "triage.run.json").read_text("utf-8"))
    assert run["status"] == "interactive" and run["incident_id"] == "LAB-1", run
    assert (folder / "triage.html").is_file()
    listed = json.loads(_runbook("list", "--json", "--output-dir", str(out)).stdout)["incidents"]
    assert [(r["id"], r["status"]) for r in listed] == [("LAB-1", "interactive")]
    for file in folder.rglob("*"):
        if file.is_file():
            assert api_key not in file.read_text("utf-8", "replace"), f"the key is in {file}"


def test_saving_through_jupyter_contents_manager_seals_without_secrets(tmp_path, api_key, monkeypatch):
    """JupyterLab's own save path (jupyter_server's FileContentsManager with our hooks, as `runbook lab` sets them)."""
    import nbformat
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from runbook_lib.run.interactive import prepare

    out = tmp_path / "out"
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(out))
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-" + "7" * 20)  # another secret env value, named like one
    opened = prepare("triage", {"operator": "alice"}, output_root=out, incident_id="SAVE-1")
    cm = FileContentsManager(root_dir=str(tmp_path), pre_save_hook="runbook_lib.run.interactive.pre_save_hook",
                             post_save_hook="runbook_lib.run.interactive.post_save_hook")
    rel = opened.path.relative_to(tmp_path).as_posix()
    model = cm.get(rel)
    nb = model["content"]
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"key {api_key} and {'xoxb-' + '7' * 20}\n")]
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    injected.source += f'\noperator = "{api_key}"\n'  # typed into the copy by hand
    cm.save({"type": "notebook", "format": "json", "content": nb}, rel)

    files = {p.name: p.read_text("utf-8") for p in opened.folder.iterdir() if p.is_file()}
    assert {"triage.ipynb", "triage.run.json", "triage.html", "incident.json", "index.html"} <= set(files), files
    for name, text in files.items():
        assert api_key not in text and "7" * 20 not in text, f"a secret in {name}"
    assert "[REDACTED sha256:" in files["triage.ipynb"], "the value is replaced by its fingerprint on disk"
    run = json.loads(files["triage.run.json"])
    assert run["status"] == "interactive" and run["parameters"]["operator"].startswith("[REDACTED sha256:"), run

    # a notebook that is not a prepared copy, inside the root or outside it: saved as is, nothing sealed
    for where in (out / "plain", tmp_path / "elsewhere"):
        where.mkdir()
        plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
        path = (where / "x.ipynb").relative_to(tmp_path).as_posix()
        cm.save({"type": "notebook", "format": "json", "content": plain}, path)
        written = sorted(p.name for p in where.iterdir() if not p.name.startswith("."))  # checkpoints aside
        assert written == ["x.ipynb"], f"{where}: sealed a notebook that is no copy: {written}"
