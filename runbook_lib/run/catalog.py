"""The runbook catalogue: which notebooks exist and which parameters each one declares.

A notebook is `notebooks/<name>.ipynb` (see `paths.notebooks_dir`); what it accepts is the names
assigned in its `parameters` cell. Reading these needs no kernel and no papermill, so a request
can be checked (and refused) before anything starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ParameterError
from ..paths import notebooks_dir

_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=")


def available_notebooks() -> list[str]:
    """The runbook names (notebook file names without .ipynb), sorted: what `runbook run` accepts."""
    return sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))


def resolve_notebook(name: str) -> Path:
    """The notebook's path; a name outside the catalogue (or a path) is refused, listing the known names."""
    names = available_notebooks()
    if not isinstance(name, str) or name not in names:
        raise ParameterError("notebook", name, "one of " + (", ".join(names) or "(no notebooks found)"))
    return notebooks_dir() / f"{name}.ipynb"


def declared_parameters(name: str) -> set[str]:
    """Names assigned in the notebook's `parameters` cell (what it accepts)."""
    nb = json.loads(resolve_notebook(name).read_text("utf-8"))
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return {m.group(1) for line in source.splitlines() if (m := _ASSIGN.match(line))}
    return set()

