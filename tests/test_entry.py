"""How `runbook` ends (runbook_lib/entry.py): run/respond skip the interpreter's teardown, with the
same exit code, the whole output and every atexit callback run; other commands end normally."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

PROBE = r"""
import atexit, sys
from runbook_lib.entry import run
sys.argv = ["runbook", sys.argv[1]]
def main():
    atexit.register(lambda: print("a library's atexit callback ran", flush=True))
    sys.stdout.write("#" * 200000)  # buffered when piped: flushed before the process ends
    print()
    return int(sys.argv[0] == "runbook") * 3
run(main)
"""


def _probe(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, command], capture_output=True, text=True, timeout=60)


def test_the_fast_exit_keeps_the_code_the_output_and_the_atexit_callbacks():
    for command in ("run", "respond", "list"):  # list: the normal ending, the same outcome
        done = _probe(command)
        assert done.returncode == 3, (command, done.stderr)
        assert done.stdout.count("#") == 200000 and done.stdout.endswith("a library's atexit callback ran\n"), command


def test_cli_exit_codes_through_the_console_script_and_python_m(tmp_path):
    for cmd in ([str(BIN / "runbook")], [sys.executable, "-m", "runbook_lib"]):
        usage = subprocess.run([*cmd, "run", "--no-such-option"], capture_output=True, text=True, timeout=60)
        assert usage.returncode == 2 and "usage:" in usage.stderr  # argparse's SystemExit(2)
        refused = subprocess.run([*cmd, "run", "no-such-notebook", "--output-dir", str(tmp_path / "out")],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and refused.stdout.startswith("FAILED:"), refused.stdout + refused.stderr
