"""What HubSpot allows in a mapping beyond the generic format, checked when it loads.

Field names are contact properties' internal names (a lower-case letter, then lower-case
letters, digits and ``_``): HubSpot's own (``firstname``, ``city``...) or custom ones that
crmsync creates in its property group. Each mapping type becomes one HubSpot property
type (``HUBSPOT_TYPES``), and each value is sent as a string in that type's format
(``payloads``), so only types with a HubSpot counterpart are allowed: dates as
``YYYY-MM-DD``, datetimes as ISO 8601 (sent as UTC milliseconds), dropdowns with their
choices (they become the property's options). Contacts are upserted by e-mail, so the
mapping must name it. A problem found here is fatal: HubSpot would refuse every batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from connectors.hubspot.config import INTERNAL_NAME
from mappings.model import DEFAULT_FORMATS, FieldRule, Issues, MappingSpec, join_key

# mapping type -> (HubSpot property type, the fieldType crmsync creates it with)
HUBSPOT_TYPES: Mapping[str, tuple[str, str]] = {
    "text": ("string", "text"),
    "phone": ("string", "text"),
    "number": ("number", "number"),
    "integer": ("number", "number"),
    "date": ("date", "date"),
    "datetime": ("datetime", "date"),
    "boolean": ("bool", "booleancheckbox"),
    "dropdown": ("enumeration", "select"),
}
RESERVED = frozenset({"email"})  # the contact's identity: set from [identity]
HUBSPOT_PREFIX = "hs_"  # HubSpot's own properties, most of them read-only
TEXT_MAX = 65_536  # characters HubSpot keeps in a string property
OPTION_MAX = 100  # characters of a segment option crmsync creates
SEPARATOR = ";"  # between the values of a multiple-checkbox property


def check_mapping(
    spec: MappingSpec, raw_fields: Mapping[str, object], issues: Issues
) -> MappingSpec:
    """Checks ``spec`` against HubSpot's rules; returns it with HubSpot's defaults."""
    if spec.identity_email is None:
        issues.add("identity.email", "HubSpot contacts are upserted by e-mail: name the field")
    for name in raw_fields:
        at = join_key("fields", name)
        if name in RESERVED:
            issues.add(at, "the contact's e-mail comes from [identity]", "map another property")
        elif name.startswith(HUBSPOT_PREFIX):
            issues.add(at, "'hs_' properties are HubSpot's own", "use a name without 'hs_'")
        elif not INTERNAL_NAME.fullmatch(name):
            issues.add(
                at,
                f"{name!r} is not a HubSpot internal property name",
                "use a lower-case letter, then lower-case letters, digits or '_'",
            )
    memberships = spec.memberships
    if memberships.max_length > OPTION_MAX:
        issues.add(
            "memberships.max_length", f"crmsync names segment options with at most {OPTION_MAX}"
        )
    for segment, name in memberships.names.items():
        if SEPARATOR in name:
            issues.add(join_key("memberships.names", segment), "';' separates HubSpot's values")
    if SEPARATOR in memberships.prefix:
        issues.add("memberships.prefix", "';' separates HubSpot's values")
    return dataclasses.replace(spec, fields=tuple(_hubspot_field(f, issues) for f in spec.fields))


def _hubspot_field(rule: FieldRule, issues: Issues) -> FieldRule:
    at = join_key("fields", rule.name)
    if rule.type not in HUBSPOT_TYPES:
        issues.add(
            f"{at}.type",
            f"HubSpot has no property type for {rule.type} values",
            f"use one of {', '.join(HUBSPOT_TYPES)} (a text field can show any value)",
        )
        return rule
    if rule.type == "date" and (rule.format or DEFAULT_FORMATS["date"]) != "%Y-%m-%d":
        issues.add(f"{at}.format", 'HubSpot takes dates as "%Y-%m-%d"')
    if rule.type == "datetime" and rule.format is not None:
        issues.add(f"{at}.format", "HubSpot takes datetimes as ISO 8601: leave format out")
    if rule.type == "dropdown":
        if not rule.choices:
            issues.add(f"{at}.choices", "the choices become the HubSpot property's options")
        elif any(SEPARATOR in choice for choice in rule.choices):
            issues.add(f"{at}.choices", "';' separates HubSpot's values: no choice may hold one")
    if rule.type == "text":
        if rule.max_length is None:
            return dataclasses.replace(rule, max_length=TEXT_MAX)
        if rule.max_length > TEXT_MAX:
            issues.add(f"{at}.max_length", f"HubSpot keeps at most {TEXT_MAX} characters")
    return rule
