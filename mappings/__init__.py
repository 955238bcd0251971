"""Mapping files: which destination field gets which profile value, and segment tag names.

One TOML file per destination kind (the format is documented in ``mappings/README.md``)
is loaded and validated against the profile field catalogue, reporting every problem
with its TOML key path, then compiled into one function: ``CompiledMapping.apply(profile)``
is pure, with no I/O and no configuration look-ups per profile.
"""

from __future__ import annotations

from mappings.apply import CompiledMapping
from mappings.limits import MAILCHIMP_MERGE_TYPES
from mappings.load import builtin_kinds, builtin_mapping_path, compile_mapping, load_mapping
from mappings.model import MappingError

__all__ = [
    "MAILCHIMP_MERGE_TYPES",
    "CompiledMapping",
    "MappingError",
    "builtin_kinds",
    "builtin_mapping_path",
    "compile_mapping",
    "load_mapping",
]
