"""`runbook replay` (issue 20): rebuild an archived incident on the embedded stack and re-run `respond`.

Embedded-stack tooling: it starts the simulators, so it lives in `sim/` (product code never imports
it; the CLI only inside the function that registers its subcommand). `source` reads the original incident, `fault`
turns its recorded probes into the simulator's mode, `engine` runs the replay, `compare` sets the
facts that matter side by side, `commands` is the CLI.
"""
