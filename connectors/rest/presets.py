"""Ready descriptions of platform admin APIs, merged under the operator's own keys.

A preset is plain data in the shape of ``RestConfig``; ``apply_preset`` deep-merges the
operator's config over it, so an operator writes only ``base_url`` and the credentials
and may still override any single key. When the operator picks a different ``type`` for
a table that has one (auth, pagination), that table replaces the preset's instead of
being merged into it. A field the preset gives as a path and the operator as a table
(``currency = { default = "TRY" }``) keeps the preset's path; a ``const`` replaces the
field's whole spec. Presets are described in ``docs/rest-source.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.rest.woocommerce import WOOCOMMERCE

PRESETS: dict[str, Mapping[str, Any]] = {"woocommerce": WOOCOMMERCE}


def apply_preset(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    preset = PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return merge(preset, config)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged over ``base``; neither is modified."""
    if "type" in override and "type" in base and override["type"] != base["type"]:
        return dict(override)
    if "const" in override:  # a field's constant replaces the preset's path, default, map
        return dict(override)
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, str) and isinstance(value, Mapping):
            current = {"path": current}  # a field written as a path, refined by a table
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(current, value)
        else:
            merged[key] = value
    return merged
