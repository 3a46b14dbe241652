"""Helpers for `runbook serve --dispatch kubernetes` tests and the benchmark (issue 19).

The Kubernetes emulator has NO kubelet and no Job controller: a Job created there is only stored.
`StandInRunner` plays both, in test code: it finds serve's Jobs in the emulator, and either executes
the Job's container command locally (the real `runbook respond` argv taken from the Job spec, the
env its secretKeyRef names resolved from the test's values) and writes the Job's status from the
exit code, or (execute=False) writes a status it is told to. What the emulator stores is exactly
what serve sent, and the status serve reads back is exactly what this runner wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
JOBS = "batch/v1/jobs"


def serve_jobs(kube: Any, namespace: str) -> list[dict[str, Any]]:
    return [j for j in kube.list(JOBS, namespace)
            if (j["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "runbook-serve"]


def dispatch_args(kubeconfig: Path, namespace: str, *extra: str) -> list[str]:
    return ["--dispatch", "kubernetes", "--job-image", "registry.example.com/mistral-runbooks:0.1.0",
            "--job-namespace", namespace, "--kubeconfig", str(kubeconfig), *extra]


class StandInRunner:
    """Runs serve's Jobs found in the emulator (see the module docstring): a stand-in kubelet."""

    def __init__(self, kube: Any, namespace: str, *, execute: bool = True, secrets: dict[str, str] | None = None,
                 outcome: str = "succeeded") -> None:
        self.kube, self.namespace, self.execute, self.outcome = kube, namespace, execute, outcome
        self.secrets = secrets or {}
        self.started: dict[str, list[str]] = {}  # Job name -> argv executed
        self.exit_codes: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> StandInRunner:
        self._loop.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._loop.join(5)
        for t in self._threads:
            t.join(120)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for job in serve_jobs(self.kube, self.namespace):
                name = job["metadata"]["name"]
                if name in self.started or job.get("status"):
                    continue
                c = job["spec"]["template"]["spec"]["containers"][0]
                argv = [str(BIN / c["command"][0]), *c["args"]]
                self.started[name] = argv
                self.kube.set_job_status(name, self.namespace, "active")
                t = threading.Thread(target=self._run, args=(job, argv), daemon=True)
                t.start()
                self._threads.append(t)
            time.sleep(0.1)

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MISTRAL_API_KEY"}  # only what the Job says
        for e in container.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            env[e["name"]] = self.secrets[f"{ref['name']}/{ref['key']}"] if ref else e["value"]
        return env

    def _run(self, job: dict[str, Any], argv: list[str]) -> None:
        name = job["metadata"]["name"]
        if not self.execute:
            self.kube.set_job_status(name, self.namespace, self.outcome)
            return
        container = job["spec"]["template"]["spec"]["containers"][0]
        deadline = job["spec"]["activeDeadlineSeconds"]
        try:
            done = subprocess.run(argv, env=self._env(container), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=deadline)
        except subprocess.TimeoutExpired:
            self.kube.set_job_status(name, self.namespace, "failed", "DeadlineExceeded",
                                     "Job was active longer than specified deadline")
            return
        self.exit_codes[name] = done.returncode
        self.kube.set_job_status(name, self.namespace, "succeeded" if done.returncode == 0 else "failed")
