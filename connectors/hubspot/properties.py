"""Contact properties: what the mapping needs, what HubSpot has, and what to create.

Pure functions. ``plan`` compares the properties a mapping writes (and the segments
property) with the account's, and returns the properties to create in crmsync's group
and the dropdowns of that group whose options must grow; or raises ``ConfigError``
naming every conflict at once (a property of the same name and another type, one whose
values HubSpot lets nobody write, a dropdown outside crmsync's group without a needed
option), so nothing is written until the operator has fixed them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.hubspot.mapping_rules import HUBSPOT_TYPES
from crmsync.contract import FieldSpec
from crmsync.errors import ConfigError, ConfigIssue

SEGMENTS_FIELD_TYPE = "checkbox"  # multiple checkboxes: a contact holds several segments
OPTION_KEYS = ("label", "value", "displayOrder", "hidden", "description")
BOOL_OPTIONS = (("Yes", "true"), ("No", "false"))


@dataclass(frozen=True, slots=True)
class Existing:
    """One contact property as HubSpot describes it."""

    name: str
    type: str
    field_type: str
    group: str
    options: tuple[dict[str, Any], ...] = ()
    read_only: bool = False  # HubSpot lets nobody write its values (modificationMetadata)

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> Existing:
        metadata = item.get("modificationMetadata") or {}
        return cls(
            name=str(item.get("name", "")),
            type=str(item.get("type", "")),
            field_type=str(item.get("fieldType", "")),
            group=str(item.get("groupName", "")),
            options=tuple(_option(o) for o in item.get("options") or () if isinstance(o, dict)),
            read_only=bool(metadata.get("readOnlyValue")),
        )

    def values(self) -> tuple[str, ...]:
        return tuple(str(option.get("value")) for option in self.options)


@dataclass(frozen=True, slots=True)
class PropertyPlan:
    create: tuple[dict[str, Any], ...] = ()  # bodies for POST /crm/v3/properties/contacts
    grow: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = ()  # name, every option
    types: Mapping[str, str] = field(default_factory=dict)  # property -> HubSpot type
    segment_options: tuple[str, ...] = ()  # the segments property's option values


def option(value: str, order: int, label: str | None = None) -> dict[str, Any]:
    return {"label": label or value, "value": value, "displayOrder": order, "hidden": False}


def create_body(name: str, label: str, kind: str, field_type: str, group: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "groupName": group,
    }
    if kind == "bool":
        body["options"] = [option(value, i, text) for i, (text, value) in enumerate(BOOL_OPTIONS)]
    elif kind == "enumeration":
        body["options"] = []
    return body


def plan(
    wanted: Sequence[FieldSpec],
    segments_property: str,
    existing: Iterable[Existing],
    group: str,
) -> PropertyPlan:
    """What to create or grow so the mapping fits; ConfigError listing every conflict."""
    have = {found.name: found for found in existing}
    issues: list[ConfigIssue] = []
    create: list[dict[str, Any]] = []
    grow: list[tuple[str, tuple[dict[str, Any], ...]]] = []
    types: dict[str, str] = {}
    for spec in wanted:
        key = f"mapping.{spec.name}"
        if spec.name == segments_property:
            issues.append(
                ConfigIssue(
                    key,
                    f"{spec.name!r} is the segments property as well as a field of the mapping",
                    "rename one of them (segments_property in the destination's config)",
                )
            )
            continue
        kind, field_type = HUBSPOT_TYPES[spec.type]
        found = have.get(spec.name)
        types[spec.name] = kind
        if found is None:
            body = create_body(spec.name, spec.label or spec.name, kind, field_type, group)
            if kind == "enumeration":
                body["options"] = [option(choice, i) for i, choice in enumerate(spec.choices)]
            create.append(body)
            continue
        problem = _conflict(found, kind, spec.type)
        if problem is not None:
            issues.append(ConfigIssue(key, problem, "rename the field in the mapping"))
            continue
        missing = [c for c in spec.choices if c not in found.values()]
        if kind == "enumeration" and missing:
            if found.group != group:
                issues.append(
                    ConfigIssue(
                        key,
                        f"HubSpot property {spec.name!r} has no option {missing[0]!r}, and "
                        f"crmsync only adds options to properties of its group {group!r}",
                        "add the options in HubSpot, or map the field to another property",
                    )
                )
                continue
            start = len(found.options)
            added = tuple(option(c, start + i) for i, c in enumerate(missing))
            grow.append((spec.name, found.options + added))
    segments = have.get(segments_property)
    options: tuple[str, ...] = ()
    if segments is None:
        create.append(
            create_body(segments_property, "crmsync segments", "enumeration", "checkbox", group)
        )
    elif segments.type != "enumeration" or segments.field_type != SEGMENTS_FIELD_TYPE:
        issues.append(
            ConfigIssue(
                "segments_property",
                f"HubSpot property {segments_property!r} is {segments.type}/"
                f"{segments.field_type}; the segments need enumeration/checkbox (multiple "
                "checkboxes)",
                "name another property in segments_property, or delete this one in HubSpot",
            )
        )
    else:
        options = segments.values()
    if issues:
        raise ConfigError(issues)
    return PropertyPlan(tuple(create), tuple(grow), types, options)


def _conflict(found: Existing, kind: str, mapping_type: str) -> str | None:
    if found.type != kind:
        return (
            f"HubSpot property {found.name!r} is of type {found.type!r}, but the mapping sends "
            f"{mapping_type} values (HubSpot type {kind!r})"
        )
    if found.read_only:
        return f"HubSpot lets nobody write the values of property {found.name!r}"
    return None


def _option(item: Mapping[str, Any]) -> dict[str, Any]:
    """An option as HubSpot takes it back in an update (only the keys it accepts)."""
    return {key: item[key] for key in OPTION_KEYS if key in item}
