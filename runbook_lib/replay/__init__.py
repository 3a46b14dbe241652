"""`runbook replay` (issue 20): rebuild an archived incident on the embedded stack and re-run `respond`.

Demo/test tooling like `demo.py`: it starts the simulators (`sim/`), so product code never imports
it (tests/test_layout.py lists it beside `demo`). `source` reads the original incident, `fault`
turns its recorded probes into the simulator's mode, `engine` runs the replay, `compare` sets the
facts that matter side by side, `commands` is the CLI.
"""
