"""Reading a mapping file from disk (or data already parsed) into a ``CompiledMapping``."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from crmsync.errors import ConfigError
from crmsync.fields import ProfileField
from mappings.apply import CompiledMapping
from mappings.limits import apply_kind_limits
from mappings.model import Issues, MappingError
from mappings.parse import KIND, build_spec

_BUILTIN_DIR = Path(__file__).resolve().parent


def load_mapping(
    path: str | Path, fields: Mapping[str, ProfileField], *, kind: str | None = None
) -> CompiledMapping:
    """Read, validate and compile a mapping file; MappingError lists every problem.

    ``kind``, when given, is the destination's kind, which the file's ``kind`` must match.
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise MappingError("file not found", path=where, key="<file>") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read the file: {exc}", path=where, key="<file>") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"not valid TOML: {exc}", path=where, key="<file>") from exc
    return compile_mapping(data, fields, kind=kind, path=where)


def compile_mapping(
    data: Mapping[str, object],
    fields: Mapping[str, ProfileField],
    *,
    kind: str | None = None,
    path: str = "",
) -> CompiledMapping:
    """Validate and compile mapping data already parsed from TOML."""
    issues = Issues()
    spec = build_spec(data, fields, issues)
    if kind is not None and spec.kind and spec.kind != kind:
        issues.add("kind", f"this mapping is for {spec.kind!r}, but the destination is {kind!r}")
    raw_fields = data.get("fields")
    spec = apply_kind_limits(spec, raw_fields if isinstance(raw_fields, dict) else {}, issues)
    if issues.items:
        raise MappingError(issues.items, path=path)
    return CompiledMapping(spec, path=path)


def builtin_kinds() -> list[str]:
    return sorted(p.stem for p in _BUILTIN_DIR.glob("*.toml"))


def builtin_mapping_path(kind: str) -> Path:
    """The mapping shipped for ``kind`` (mappings/<kind>.toml); ConfigError if there is none."""
    path = _BUILTIN_DIR / f"{kind}.toml"
    if not KIND.fullmatch(kind) or not path.is_file():
        raise ConfigError(
            f"no built-in mapping for kind {kind!r}",
            key="mapping",
            hint=f"built-in mappings: {', '.join(builtin_kinds()) or 'none'}; "
            "or give the path of a mapping file",
        )
    return path
