"""Imports on the verdict path, without the start-up cost nobody here uses.

papermill and nbformat validate notebooks with `jsonschema`, whose format-checker module
registers the `iri` / `iri-reference` checkers by importing `rfc3987_syntax`, and that package
compiles its Lark grammars at import: about 1.7 s of the ~2.4 s `import papermill` costs on a
2-core machine. No notebook (nbformat) schema uses those formats. So jsonschema is imported once
with that module hidden (jsonschema then simply has no iri checker), and the module is unhidden
straight after: anything else in the process that imports `rfc3987_syntax` still gets it.
Upstream: python-jsonschema/jsonschema issue 1428; opendatahub-io/notebooks issue 3532.
No installed package is patched; tests/test_lean_imports.py proves the saving and that
validation still rejects a broken notebook.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_HIDDEN = "rfc3987_syntax"


def import_jsonschema_without_iri_checkers() -> None:
    """Import jsonschema with `rfc3987_syntax` hidden, unless jsonschema (or it) is already loaded."""
    if "jsonschema" in sys.modules or _HIDDEN in sys.modules:
        return
    sys.modules[_HIDDEN] = None  # type: ignore[assignment]  # `import` of a None entry raises ImportError
    try:
        importlib.import_module("jsonschema")
    finally:
        if sys.modules.get(_HIDDEN, 0) is None:
            del sys.modules[_HIDDEN]


def papermill() -> ModuleType:
    """`papermill`, imported the lean way (see the module's docstring)."""
    import_jsonschema_without_iri_checkers()
    import papermill as pm

    return pm


def nbformat() -> ModuleType:
    """`nbformat`, imported the lean way (see the module's docstring)."""
    import_jsonschema_without_iri_checkers()
    import nbformat as nbf

    return nbf
