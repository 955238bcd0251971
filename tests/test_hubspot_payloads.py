"""HubSpot's value formats and the mapping rules: every property value a string in the
format its property type takes, and mappings HubSpot could not take refused at load."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from typing import Any

import pytest

from connectors.hubspot.mapping_rules import TEXT_MAX, check_mapping
from connectors.hubspot.payloads import contact_input, encode
from crmsync.contract import Action, Change, ConsentIntent
from crmsync.errors import RecordError
from crmsync.fields import catalogue
from crmsync.registry import default_mapping
from mappings import MappingError, compile_mapping, load_mapping
from mappings.apply import CompiledMapping


def change(fields: dict[str, Any], memberships: tuple[str, ...] = ()) -> Change:
    return Change(
        person_key="e:ayse@example.com",
        action=Action.UPSERT,
        is_new=True,
        email="ayse@example.com",
        phone=None,
        fields=fields,
        memberships_add=memberships,
        memberships_remove=(),
        email_intent=ConsentIntent.LEAVE,
        sms_intent=ConsentIntent.LEAVE,
        payload_hash="h",
        memberships=memberships,
    )


@pytest.mark.parametrize(
    ("value", "kind", "sent"),
    [
        (None, "string", ""),  # a value that went away is cleared
        ("", "number", ""),
        (True, "bool", "true"),
        (False, "bool", "false"),
        (12, "number", "12"),
        (1234.51, "number", "1234.51"),
        (1e16, "number", "10000000000000000"),  # never 1e+16
        (0.00001, "number", "0.00001"),  # never 1e-05
        (float("nan"), "number", ""),
        (Decimal("99.90"), "number", "99.90"),
        ("2025-01-31", "date", "2025-01-31"),
        ("2025-01-01T22:30:00+00:00", "datetime", "1735770600000"),
        ("2025-01-02T01:30:00+03:00", "datetime", "1735770600000"),  # the same moment
        ("2025-01-01T22:30:00", "datetime", "1735770600000"),  # naive: UTC
        (("crm-new", "crm-vip"), "enumeration", "crm-new;crm-vip"),
        ("Champions", "enumeration", "Champions"),
    ],
)
def test_values_are_strings_in_hubspots_formats(value: Any, kind: str, sent: str) -> None:
    assert encode(value, kind) == sent


def test_a_datetime_hubspot_cannot_read_refuses_that_person_naming_the_field() -> None:
    with pytest.raises(RecordError) as caught:
        contact_input(change({"since": "yesterday"}), {"since": "datetime"}, "segs")
    assert caught.value.field == "since"


def test_an_input_is_by_email_with_every_field_and_the_sorted_segments() -> None:
    sent = contact_input(
        change({"firstname": "Ayşe", "orders": 3, "gone": None}, ("crm-vip", "crm-new")),
        {"firstname": "string", "orders": "number", "gone": "string"},
        "crmsync_segments",
    )
    assert sent == {
        "idProperty": "email",
        "id": "ayse@example.com",
        "properties": {
            "firstname": "Ayşe",
            "gone": "",
            "orders": "3",
            "crmsync_segments": "crm-new;crm-vip",
        },
    }
    assert all(isinstance(v, str) for v in sent["properties"].values())


def test_the_shipped_mapping_loads_and_gives_hubspot_strings() -> None:
    mapping = load_mapping(
        default_mapping("hubspot"), catalogue(), kind="hubspot", rules=check_mapping
    )
    specs = {spec.name: spec for spec in mapping.field_specs()}
    assert specs["crmsync_cart_abandoned"].type == "boolean"
    assert specs["crmsync_rfm_segment"].choices
    assert mapping.membership_for("birthday_this_month") == "crm-birthday-this-month"


def compile_hubspot(text: str) -> CompiledMapping:
    return compile_mapping(tomllib.loads(text), catalogue(), kind="hubspot", rules=check_mapping)


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ('[fields.email]\nfrom = "email"', "fields.email"),
        ('[fields.hs_lead_status]\nfrom = "first_name"', "fields.hs_lead_status"),
        ('[fields.FirstName]\nfrom = "first_name"', "fields.FirstName"),
        ('[fields.cats]\nfrom = "categories"\ntype = "list"', "fields.cats.type"),
        ('[fields.bday]\nfrom = "birthday"\ntype = "birthday"', "fields.bday.type"),
        (
            '[fields.day]\nfrom = "birthday"\ntype = "date"\nformat = "%d.%m.%Y"',
            "fields.day.format",
        ),
        (
            '[fields.since]\nfrom = "customer_since"\ntype = "datetime"\nformat = "%Y"',
            "fields.since.format",
        ),
        (
            '[fields.rfm]\nfrom = "rfm_label"\ntype = "dropdown"\nchoices = ["a;b"]\n'
            'unmapped = "a;b"',
            "fields.rfm.choices",
        ),
        ('[fields.note]\nfrom = "first_name"\nmax_length = 70000', "fields.note.max_length"),
    ],
)
def test_mappings_hubspot_cannot_take_are_refused_at_load(field: str, problem: str) -> None:
    text = f'kind = "hubspot"\n[identity]\nemail = "email"\n{field}\n'
    with pytest.raises(MappingError) as caught:
        compile_hubspot(text)
    assert problem in {issue.key for issue in caught.value.issues}, caught.value


def test_a_mapping_without_an_email_identity_is_refused() -> None:
    text = 'kind = "hubspot"\n[identity]\nphone = "phone"\n'
    with pytest.raises(MappingError) as caught:
        compile_hubspot(text)
    assert "identity.email" in {issue.key for issue in caught.value.issues}


def test_text_fields_get_hubspots_length_by_default() -> None:
    text = 'kind = "hubspot"\n[identity]\nemail = "email"\n[fields.note]\nfrom = "first_name"\n'
    assert compile_hubspot(text).spec.fields[0].max_length == TEXT_MAX
