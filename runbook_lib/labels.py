"""Kubernetes label selectors, parsed once for everyone: parameter validation, the read side
(`kube`) and the API emulator (`sim.kube`).

Requirements are (key, op, values) with op one of `=`, `!=`, `in`, `notin`, `exists`, `!exists`.
"""

from __future__ import annotations

import re


def split_terms(selector: str) -> list[str]:
    """Split on the commas that are not inside a set's parentheses."""
    terms, depth, start = [], 0, 0
    for i, c in enumerate(selector):
        depth += c == "("
        depth -= c == ")"
        if c == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


_SET_TERM = re.compile(r"^\s*(\S+?)\s+(in|notin)\s+\((.*)\)\s*$")


def parse_label_selector(selector: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` -> [(key, op, values)]; ValueError when malformed."""
    terms = split_terms(selector)
    out: list[tuple[str, str, tuple[str, ...]]] = []
    for raw in terms:
        term = raw.strip()
        if not term:
            if len(terms) == 1:
                continue
            raise ValueError(f"unable to parse requirement: empty term in {selector!r}")
        if m := _SET_TERM.match(term):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            out.append((m.group(1), m.group(2), values))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            out.append((k.strip(), "!=", (v.strip(),)))
        elif "==" in term:
            k, v = term.split("==", 1)
            out.append((k.strip(), "=", (v.strip(),)))
        elif "=" in term:
            k, v = term.split("=", 1)
            out.append((k.strip(), "=", (v.strip(),)))
        elif term.startswith("!"):
            out.append((term[1:].strip(), "!exists", ()))
        elif re.fullmatch(r"[A-Za-z0-9_./-]+", term):
            out.append((term, "exists", ()))
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")
    return out


def labels_match(labels: dict[str, str] | None, requirements: list[tuple[str, str, tuple[str, ...]]]) -> bool:
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and present and value == values[0]:
            return False
        if op == "in" and (not present or value not in values):
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


def equality_labels(selector: str) -> dict[str, str]:
    """The labels a selector pins to one value (`app=x`, `app in (x)`): what new objects would carry."""
    return {k: v[0] for k, op, v in parse_label_selector(selector) if op in ("=", "in") and len(v) == 1}
