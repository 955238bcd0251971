"""What Klaviyo allows in a mapping beyond the generic format, checked when it loads.

A field's name says where its value goes (``payloads.profile_entry``): Klaviyo's standard
attributes by name (``first_name``, ``phone_number``...), ``location.<part>`` into the
profile's location, and any other name into the custom ``properties``. So the standard
attributes must have the types Klaviyo stores, ``location.`` names must be parts Klaviyo
has, and custom property names must not be Klaviyo's own (``$``-names, identifiers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from connectors.klaviyo.payloads import LOCATION, LOCATION_PARTS, STANDARD_ATTRIBUTES
from mappings.model import FieldRule, Issues, MappingSpec, join_key

# standard attribute -> the mapping types that write what Klaviyo stores there
STANDARD_TYPES: Mapping[str, frozenset[str]] = {
    **{name: frozenset({"text"}) for name in STANDARD_ATTRIBUTES - {"phone_number"}},
    "phone_number": frozenset({"phone"}),
    **{f"{LOCATION}{part}": frozenset({"text"}) for part in LOCATION_PARTS},
    f"{LOCATION}latitude": frozenset({"number", "text"}),
    f"{LOCATION}longitude": frozenset({"number", "text"}),
}
# names that are identifiers or containers, never fields of a mapping
RESERVED = frozenset(
    {"email", "external_id", "_kx", "id", "location", "properties", "subscriptions"}
)
TEXT_MAX = 10_000  # characters: crmsync's cap, so no one value nears the 100 KB profile limit
LIST_NAME_MAX = 100  # characters of a list name crmsync creates


def check_mapping(
    spec: MappingSpec, raw_fields: Mapping[str, object], issues: Issues
) -> MappingSpec:
    """Checks ``spec`` against Klaviyo's rules; returns it with Klaviyo's defaults."""
    for name in raw_fields:
        at = join_key("fields", name)
        if name in RESERVED:
            issues.add(
                at,
                f"{name!r} is not a field Klaviyo lets crmsync write",
                "the e-mail and phone come from [identity]; custom fields need another name",
            )
        elif name.startswith("$"):
            issues.add(at, "names starting with '$' are Klaviyo's own properties")
        elif name.startswith(LOCATION) and name not in STANDARD_TYPES:
            parts = ", ".join(sorted(LOCATION_PARTS))
            issues.add(at, f"Klaviyo's location has no {name[len(LOCATION) :]!r}", f"use {parts}")
    if spec.memberships.max_length > LIST_NAME_MAX:
        issues.add(
            "memberships.max_length", f"crmsync names Klaviyo lists with at most {LIST_NAME_MAX}"
        )
    rules = tuple(_klaviyo_field(rule, issues) for rule in spec.fields)
    return dataclasses.replace(spec, fields=rules)


def _klaviyo_field(rule: FieldRule, issues: Issues) -> FieldRule:
    at = join_key("fields", rule.name)
    allowed = STANDARD_TYPES.get(rule.name)
    if allowed is not None and rule.type not in allowed:
        issues.add(
            f"{at}.type",
            f"Klaviyo's {rule.name} takes {' or '.join(sorted(allowed))} values",
            f'write type = "{sorted(allowed)[0]}"',
        )
        return rule
    if rule.type == "address":
        issues.add(
            f"{at}.type",
            "Klaviyo keeps addresses in the profile's location",
            'map each part to its own field, e.g. [fields."location.city"] from = "city"',
        )
        return rule
    if rule.type == "text":
        if rule.max_length is None:
            return dataclasses.replace(rule, max_length=TEXT_MAX)
        if rule.max_length > TEXT_MAX:
            issues.add(f"{at}.max_length", f"at most {TEXT_MAX} characters per text value")
    return rule
