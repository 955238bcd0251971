"""Paths into a raw row, compiled once per configured field.

``billing.email`` walks objects; ``line_items.0.sku`` indexes a list (``-1`` is the last
item); ``meta_data[key=newsletter].value`` picks the first list element whose ``key`` is
``newsletter`` (how WordPress-style APIs hold custom fields). A key that exists as
written wins over the same text read as a path, so a JSON key with a dot in it still
works; in flat rows (CSV columns) a path is always one literal key, brackets and all.
``""`` is the row itself. A missing step yields ``None``; the mapping decides whether
that is an error. Rows may be any mapping (dicts, SQLAlchemy row mappings).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from crmsync.errors import ConfigError

Getter = Callable[[Any], Any]

_STEP = re.compile(r"^(?P<name>[^\[\]]*)(?:\[(?P<key>[^=\]]+)=(?P<value>[^\]]*)\])?$")
_MISSING = object()


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


def _key(name: str) -> Getter:
    def get(document: Any) -> Any:
        try:
            return document.get(name)
        except AttributeError:  # a list (indexed by the name) or a scalar
            return _index(document, name)

    return get


def compile_path(path: str, *, key: str = "", flat: bool = False) -> Getter:
    """A function that reads ``path`` from a raw row; ``ConfigError`` for a bad path."""
    if path == "":
        return lambda document: document
    if flat:
        return _key(path)
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
        return _key(steps[0][0])

    def walk(document: Any) -> Any:
        try:
            found = document.get(path, _MISSING)
        except AttributeError:
            found = _MISSING
        if found is not _MISSING:
            return found
        current = document
        for name, pick_key, pick_value in steps:
            if name:
                try:
                    current = current.get(name)
                except AttributeError:
                    current = _index(current, name)
            if pick_key is not None:
                current = _pick(current, pick_key, pick_value)
            if current is None:
                return None
        return current

    return walk


def plain_key(path: str, *, flat: bool = False) -> str | None:
    """The key ``compile_path(path)`` reads with a bare ``row.get(key)``, or None when the
    path walks, indexes or picks (so generated code can inline the common case)."""
    if not path:
        return None
    if flat:
        return path
    match = _STEP.match(path)
    if match is None or match["key"] is not None or len(_split(path)) != 1 or not match["name"]:
        return None
    return str(match["name"])


def _index(value: Any, name: str) -> Any:
    if isinstance(value, list | tuple) and name.lstrip("-").isdigit():
        position = int(name)
        return value[position] if -len(value) <= position < len(value) else None
    return None


def _pick(value: Any, key: str, wanted: str | None) -> Any:
    if not isinstance(value, list | tuple):
        return None
    for item in value:
        if hasattr(item, "get") and str(item.get(key)) == wanted:
            return item
    return None
