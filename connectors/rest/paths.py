"""Dotted paths into a JSON document, compiled once per configured field.

``billing.email`` walks objects; ``line_items.0.sku`` indexes a list; and
``meta_data[key=newsletter].value`` picks the first list element whose ``key`` is
``newsletter`` (how WordPress-style APIs hold custom fields). ``""`` is the document
itself. A missing step yields ``None``; the mapping decides whether that is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from crmsync.errors import ConfigError

Getter = Callable[[Any], Any]

_STEP = re.compile(r"^(?P<name>[^\[\]]*)(?:\[(?P<key>[^=\]]+)=(?P<value>[^\]]*)\])?$")


def _split(path: str) -> list[str]:
    """Splits on dots outside brackets, so ``meta[key=a.b].value`` keeps ``a.b`` whole."""
    steps: list[str] = []
    depth = 0
    current: list[str] = []
    for char in path:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "." and depth == 0:
            steps.append("".join(current))
            current = []
        else:
            current.append(char)
    steps.append("".join(current))
    return steps


def compile_path(path: str, *, key: str = "") -> Getter:
    """A function that reads ``path`` from a decoded JSON value."""
    if path == "":
        return lambda document: document
    steps: list[tuple[str, str | None, str | None]] = []
    for raw in _split(path):
        match = _STEP.match(raw)
        if match is None or (not match["name"] and match["key"] is None):
            raise ConfigError(
                f"invalid path {path!r} (step {raw!r})",
                key=key or "path",
                hint="use dotted names, list indexes, or name[field=value] to pick from a list",
            )
        steps.append((match["name"], match["key"], match["value"]))

    if len(steps) == 1 and steps[0][1] is None:  # the common case, kept fast
        only = steps[0][0]

        def single(document: Any) -> Any:
            return document.get(only) if isinstance(document, dict) else _index(document, only)

        return single

    def walk(document: Any) -> Any:
        current = document
        for name, pick_key, pick_value in steps:
            if name:
                current = current.get(name) if isinstance(current, dict) else _index(current, name)
            if pick_key is not None:
                current = _pick(current, pick_key, pick_value)
            if current is None:
                return None
        return current

    return walk


def _index(value: Any, name: str) -> Any:
    if isinstance(value, list) and name.lstrip("-").isdigit():
        position = int(name)
        return value[position] if -len(value) <= position < len(value) else None
    return None


def _pick(value: Any, key: str, wanted: str | None) -> Any:
    if not isinstance(value, list):
        return None
    for item in value:
        if isinstance(item, dict) and str(item.get(key)) == wanted:
            return item
    return None
