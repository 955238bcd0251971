"""Mapping files: which destination field gets which profile value, and segment group names.

One TOML file per destination (the format is documented in ``mappings/README.md``; each
destination kind ships its default file and may add checks of its own) is loaded and
validated against the profile field catalogue, reporting every problem with its TOML
key path, then compiled into one function: ``CompiledMapping.apply(profile)``
is pure, with no I/O and no configuration look-ups per profile.
"""

from __future__ import annotations

from mappings.apply import CompiledMapping
from mappings.load import compile_mapping, load_mapping
from mappings.model import MappingError

__all__ = [
    "CompiledMapping",
    "MappingError",
    "compile_mapping",
    "load_mapping",
]
