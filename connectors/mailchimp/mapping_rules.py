"""What Mailchimp allows in a mapping beyond the generic format, checked when it loads.

Merge tags of at most 10 characters in A-Z, 0-9 and
``_``; the merge field types Mailchimp has (text, number, address, phone, date, birthday,
dropdown, ...); text values of at most 255 characters; address fields that need addr1,
city, state and zip; tag names of at most 100 characters. A problem found here is as
fatal as any other, since Mailchimp would reject every record it touches.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from mappings.model import DEFAULT_FORMATS, FieldRule, Issues, MappingSpec, join_key

# mapping type -> Mailchimp merge field type (integers are Mailchimp numbers)
MAILCHIMP_MERGE_TYPES: Mapping[str, str] = {
    "text": "text",
    "number": "number",
    "integer": "number",
    "date": "date",
    "birthday": "birthday",
    "phone": "phone",
    "address": "address",
    "dropdown": "dropdown",
}
MAILCHIMP_MERGE_TAG = re.compile(r"[A-Z0-9_]{1,10}")
MAILCHIMP_RESERVED_TAGS = frozenset({"EMAIL"})  # the address itself: set from [identity]
MAILCHIMP_TEXT_MAX = 255
MAILCHIMP_TAG_MAX = 100
MAILCHIMP_BIRTHDAY_FORMATS = ("%m/%d", "%d/%m")
MAILCHIMP_ADDRESS_REQUIRED = ("addr1", "city", "state", "zip")


def check_mapping(
    spec: MappingSpec, raw_fields: Mapping[str, object], issues: Issues
) -> MappingSpec:
    """Checks ``spec`` against Mailchimp's limits; returns it with Mailchimp's defaults."""
    if spec.identity_email is None:
        issues.add("identity.email", "Mailchimp identifies contacts by e-mail: name the field")
    for name in raw_fields:
        at = join_key("fields", name)
        if name in MAILCHIMP_RESERVED_TAGS:
            issues.add(
                at, f"{name} is Mailchimp's own address field", "crmsync sets it from [identity]"
            )
        elif not MAILCHIMP_MERGE_TAG.fullmatch(name):
            issues.add(
                at,
                f"{name!r} is not a Mailchimp merge tag",
                "use 1-10 characters from A-Z, 0-9 and _, e.g. FNAME or LASTORDER",
            )
    if spec.memberships.max_length > MAILCHIMP_TAG_MAX:
        issues.add(
            "memberships.max_length",
            f"Mailchimp tag names have at most {MAILCHIMP_TAG_MAX} characters",
        )
    return dataclasses.replace(spec, fields=tuple(_mailchimp_field(f, issues) for f in spec.fields))


def _mailchimp_field(rule: FieldRule, issues: Issues) -> FieldRule:
    at = join_key("fields", rule.name)
    if rule.type not in MAILCHIMP_MERGE_TYPES:
        issues.add(
            f"{at}.type",
            f"Mailchimp has no {rule.type} merge fields",
            f"use one of {', '.join(MAILCHIMP_MERGE_TYPES)} (a text field can show any value)",
        )
        return rule
    if rule.type == "text":
        if rule.max_length is None:
            return dataclasses.replace(rule, max_length=MAILCHIMP_TEXT_MAX)
        if rule.max_length > MAILCHIMP_TEXT_MAX:
            issues.add(
                f"{at}.max_length", f"Mailchimp text fields hold at most {MAILCHIMP_TEXT_MAX}"
            )
    if (
        rule.type == "birthday"
        and (rule.format or DEFAULT_FORMATS["birthday"]) not in MAILCHIMP_BIRTHDAY_FORMATS
    ):
        issues.add(f"{at}.format", 'Mailchimp birthdays are "%m/%d" or "%d/%m"')
    if rule.type == "dropdown" and not rule.choices:
        issues.add(f"{at}.choices", "Mailchimp dropdown fields need their list of choices")
    if rule.type == "address":
        present = {part for part, _ in rule.parts}
        missing = [p for p in MAILCHIMP_ADDRESS_REQUIRED if p not in present]
        if missing:
            issues.add(
                f"{at}.from_fields",
                f"Mailchimp addresses need {', '.join(missing)} as well",
                "map addr1, city, state and zip (country is optional)",
            )
        lacking = [p for p in MAILCHIMP_ADDRESS_REQUIRED if p not in rule.require]
        if rule.require and lacking:
            issues.add(f"{at}.require", f"Mailchimp rejects addresses without {', '.join(lacking)}")
        if not rule.require:
            return dataclasses.replace(rule, require=MAILCHIMP_ADDRESS_REQUIRED)
    return rule
