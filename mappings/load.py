"""Reading a mapping file (or data already parsed) into a ``CompiledMapping``."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path

from crmsync.contract import MappingRules
from crmsync.fields import ProfileField
from mappings.apply import CompiledMapping
from mappings.model import Issues, MappingError
from mappings.parse import build_spec


def load_mapping(
    path: str | Path | Traversable,
    fields: Mapping[str, ProfileField],
    *,
    kind: str | None = None,
    rules: MappingRules | None = None,
) -> CompiledMapping:
    """Read, validate and compile a mapping file; MappingError lists every problem.

    ``kind``, when given, is the destination's kind, which the file's ``kind`` must match;
    ``rules`` are that kind's own checks (``Destination.mapping_rules``).
    """
    source = Path(path) if isinstance(path, str) else path
    where = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise MappingError("file not found", path=where, key="<file>") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read the file: {exc}", path=where, key="<file>") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"not valid TOML: {exc}", path=where, key="<file>") from exc
    return compile_mapping(data, fields, kind=kind, rules=rules, path=where)


def compile_mapping(
    data: Mapping[str, object],
    fields: Mapping[str, ProfileField],
    *,
    kind: str | None = None,
    rules: MappingRules | None = None,
    path: str = "",
) -> CompiledMapping:
    """Validate and compile mapping data already parsed from TOML."""
    issues = Issues()
    spec = build_spec(data, fields, issues)
    if kind is not None and spec.kind and spec.kind != kind:
        issues.add("kind", f"this mapping is for {spec.kind!r}, but the destination is {kind!r}")
    if rules is not None:
        raw_fields = data.get("fields")
        spec = rules(spec, raw_fields if isinstance(raw_fields, dict) else {}, issues)
    if issues.items:
        raise MappingError(issues.items, path=path)
    return CompiledMapping(spec, path=path)
