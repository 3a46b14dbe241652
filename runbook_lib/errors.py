"""Every exception runbook_lib raises, in one module (as httpx keeps its own).

Notebooks and the CLI catch `RunbookError` to tell our own, explained failures from bugs.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base class: a failure we anticipated and can explain to the on-call engineer."""


class ParameterError(RunbookError, ValueError):
    """A notebook or CLI parameter is wrong. Names the parameter and what is accepted."""

    def __init__(self, name: str, value: object, accepted: str) -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"parameter {name!r} = {shown} is invalid: expected {accepted}")


class UnknownParameter(ParameterError):
    """A parameter name the notebook does not declare (papermill alone would only warn and go on).

    The value is never shown: an unknown name is often a misplaced secret (`-p api_key ...`).
    """

    def __init__(self, name: str, notebook: str, declared: list[str]) -> None:
        accepted = f"a parameter of notebook {notebook!r}: " + ", ".join(declared)
        RunbookError.__init__(self, f"parameter {name!r} is unknown to notebook {notebook!r}: expected {accepted}")
        self.name, self.value, self.accepted, self.notebook = name, "<not shown>", accepted, notebook


class SourceUnavailable(RunbookError):
    """A dependency (Prometheus, the cluster, a simulator) could not be reached in time."""


class NotebookFailed(RunbookError):
    """A headless run ended with an error; the partial record is kept and marked failed."""

    def __init__(self, message: str, record_dir: str | None = None) -> None:
        self.record_dir = record_dir
        super().__init__(message)


class PortInUse(RunbookError):
    """A port a local server must listen on is taken: names the port and what it was for."""

    def __init__(self, what: str, port: int, host: str = "127.0.0.1", key: str | None = None) -> None:
        self.what, self.port, self.host, self.key = what, port, host, key  # key: its name in `--ports`
        super().__init__(f"port {port} on {host} (for {what}) is already in use, by another `runbook lab`/`stack` "
                         "or another program")


class MissingDependency(RunbookError):
    """An optional integration's library is not installed (issue 18): names the package and the extra."""

    def __init__(self, package: str, extra: str) -> None:
        self.package, self.extra = package, extra
        super().__init__(f"{package} is not installed (an optional integration): .venv/bin/pip install -e "
                         f"'.[{extra}]'")
