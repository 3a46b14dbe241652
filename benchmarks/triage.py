"""Triage speed, measured side by side in one run (figures and ratios; no pass/fail).

1. median wall time of a headless triage vs a bare papermill run of an empty notebook
   (same kernel; in-process and as CLI runs): steps 1-2 live (target ratio <= 1.3), and all four
   steps live with a real Prometheus and the cluster emulator (target ratio <= 1.5);
2. wall time of a triage with every endpoint hanging (API, service, Prometheus, cluster) vs its
   configured timeout (in-process target: timeout + 3 s; `runbook run` end to end: timeout + 1.5 s);
   `runbook run triage` end to end vs the bare `papermill` CLI on an empty notebook (target <= 0.6);
3. `import runbook_lib` time in a fresh interpreter (target <= 150 ms).

Run: `.venv/bin/python benchmarks/triage.py [--runs N]` (uses the embedded simulators).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill as pm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib import KERNEL_NAME  # noqa: E402
from runbook_lib.demo import full_stack  # noqa: E402


def _empty_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": KERNEL_NAME, "language": "python"}
    nbformat.write(nb, path)
    return path


def _papermill(src: Path, out: Path, parameters: dict) -> float:
    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(out), parameters=parameters, progress_bar=False, log_output=False)
    return time.perf_counter() - t0


def _ours(parameters: dict, root: Path) -> float:
    """Wall time of an in-process triage as `runbook run` executes it (run_notebook: the early kernel,
    the one-write-per-code-cell engine, the record finalised; HTML left out, as bare papermill has none)."""
    from runbook_lib.run.execute import run_notebook

    t0 = time.perf_counter()
    result = run_notebook("triage", parameters, output_root=root, progress=False, html=False)
    wall = time.perf_counter() - t0
    assert result.status == "succeeded", result.error
    return wall


def _cli(args: list[str]) -> float:
    """Wall time of a command-line run, as an operator or automation would start it."""
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=ROOT, timeout=300)
    return time.perf_counter() - t0


def _silent_listener() -> tuple[socket.socket, int]:
    """Accepts connections into its backlog and never answers: a black-holed endpoint."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, s.getsockname()[1]


def _import_time_ms(runs: int) -> float:
    code = "import time; t=time.perf_counter(); import runbook_lib; print((time.perf_counter()-t)*1000)"
    samples = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True, cwd=ROOT).stdout) for _ in range(runs)]
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hang-timeout", type=float, default=3.0)
    args = ap.parse_args()
    os.environ.setdefault("MISTRAL_API_KEY", "bench-" + secrets.token_urlsafe(16))
    triage_nb = ROOT / "notebooks" / "triage.ipynb"

    with tempfile.TemporaryDirectory() as tmp, \
            full_stack(os.environ["MISTRAL_API_KEY"], rate=5.0) as (stack, kube, prom):
        tmpd = Path(tmp)
        kubeconfig = str(kube.write_kubeconfig(tmpd / "kubeconfig"))
        empty = _empty_notebook(tmpd / "empty.ipynb")
        params = {"mistral_url": stack.mistral_url, "service_health_url": stack.service_health_url,
                  "prometheus_url": "", "timeout_s": 5.0, "incident_id": "bench"}
        _papermill(empty, tmpd / "warm.ipynb", {})  # warm caches once, measured runs interleaved
        full_params = {**params, "prometheus_url": prom.url if prom else "", "kubeconfig": kubeconfig,
                       "metrics_window": "30s"}
        bare, tri, full = [], [], []
        for i in range(args.runs):
            bare.append(_papermill(empty, tmpd / f"e{i}.ipynb", {}))
            tri.append(_ours(params, tmpd / "in-process"))
            full.append(_ours(full_params, tmpd / "in-process"))
            print(f"  run {i + 1}/{args.runs}: bare {bare[-1]:.2f} s, triage {tri[-1]:.2f} s, "
                  f"all four steps {full[-1]:.2f} s", file=sys.stderr)

        bin_dir = Path(sys.executable).parent
        pflags = [x for k, v in params.items() for x in ("-p", k, str(v))]
        fflags = [x for k, v in full_params.items() for x in ("-p", k, str(v))]
        cli_bare, cli_tri, cli_full, cli_run = [], [], [], []
        for i in range(args.runs):
            cli_bare.append(_cli([str(bin_dir / "papermill"), str(empty), str(tmpd / f"ce{i}.ipynb"),
                                  "--no-progress-bar"]))
            cli_tri.append(_cli([str(bin_dir / "papermill"), str(triage_nb), str(tmpd / f"ct{i}.ipynb"),
                                 "--no-progress-bar", *pflags]))
            cli_full.append(_cli([str(bin_dir / "papermill"), str(triage_nb), str(tmpd / f"cf{i}.ipynb"),
                                  "--no-progress-bar", *fflags]))
            cli_run.append(_cli([str(bin_dir / "runbook"), "run", "triage", "-q", "--output-dir",
                                 str(tmpd / "records"), *pflags]))

        stack.set_mode("hang")
        kube.set_mode("hang")
        svc_sock, svc_port = _silent_listener()
        prom_sock, prom_port = _silent_listener()
        hang_params = {**full_params, "timeout_s": args.hang_timeout,
                       "service_health_url": f"http://127.0.0.1:{svc_port}/health",
                       "prometheus_url": f"http://127.0.0.1:{prom_port}"}
        hang_wall = _papermill(triage_nb, tmpd / "hang.ipynb", hang_params)
        hflags = [x for k, v in hang_params.items() for x in ("-p", k, str(v))]
        cli_hang = [_cli([str(bin_dir / "runbook"), "run", "triage", "-q", "--output-dir", str(tmpd / "hang-records"),
                          *hflags]) for _ in range(args.runs)]
        svc_sock.close()
        prom_sock.close()
        stack.set_mode("ok")
        kube.set_mode("ok")

    import_ms = _import_time_ms(args.runs)
    b, t, f = statistics.median(bare), statistics.median(tri), statistics.median(full)
    print("\n== triage benchmark ==")
    print(f"bare papermill (empty notebook), median of {args.runs}: {b:.2f} s")
    print(f"headless triage as runbook runs it (run_notebook, no HTML; steps 1-2 live, 3-4 skipped), median: {t:.2f} s")
    print(f"ratio triage / bare (in-process, papermill start-up excluded): {t / b:.2f}   (target <= 1.3)")
    print(f"headless triage, all four steps live (Prometheus {'on' if prom else 'NOT INSTALLED'}, cluster), "
          f"median: {f:.2f} s -> ratio {f / b:.2f}   (target <= 1.5)")
    cb, ct, cr = statistics.median(cli_bare), statistics.median(cli_tri), statistics.median(cli_run)
    print(f"CLI: `papermill empty.ipynb` {cb:.2f} s, `papermill triage.ipynb` {ct:.2f} s -> ratio {ct / cb:.2f}"
          "   (target <= 1.3)")
    cf = statistics.median(cli_full)
    print(f"CLI: `papermill triage.ipynb`, all four steps live {cf:.2f} s -> ratio {cf / cb:.2f}   (target <= 1.5)")
    print(f"CLI: `runbook run triage` (steps 1-2 live; record, HTML, run.json, index written) {cr:.2f} s -> "
          f"ratio {cr / cb:.2f} of the bare papermill CLI   (target <= 0.6)")
    ch = statistics.median(cli_hang)
    print(f"CLI: `runbook run triage`, every endpoint black-holed, timeout_s={args.hang_timeout:g}: {ch:.2f} s "
          f"= timeout + {ch - args.hang_timeout:.2f} s   (target <= timeout + 1.5 s)")
    print(f"all endpoints hanging (API, service, Prometheus, cluster), timeout_s={args.hang_timeout:g}: {hang_wall:.2f} s "
          f"= timeout + {hang_wall - args.hang_timeout:.2f} s   (target <= timeout + 3 s)")
    print(f"import runbook_lib (fresh interpreter, median): {import_ms:.0f} ms   (target <= 150 ms)")


if __name__ == "__main__":
    main()
