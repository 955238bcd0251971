"""Pure planning: merge field types and conflicts, tag call grouping, pagination, config."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import Action, Change, FieldSpec
from connectors.mailchimp.config import MailchimpConfig
from connectors.mailchimp.merge_fields import ExistingField, existing_field, plan
from connectors.mailchimp.paging import OffsetPages, PaginationLoop
from connectors.mailchimp.tags import (
    TagMove,
    call_failures,
    floor_calls,
    plan_calls,
    tag_problem,
)
from crmsync.errors import ConfigError
from crmsync.records import ConsentState

KEY = "0123456789abcdef0123456789abcdef-us21"
DEFAULTS = [ExistingField(1, "FNAME", "text", "First Name"), ExistingField(2, "PHONE", "phone")]


@pytest.mark.parametrize(
    ("mapping_type", "mailchimp_type"),
    [
        ("text", "text"),
        ("number", "number"),
        ("integer", "number"),
        ("date", "date"),
        ("birthday", "birthday"),
        ("phone", "phone"),
        ("address", "address"),
        ("dropdown", "dropdown"),
    ],
)
def test_missing_merge_fields_are_created_with_the_right_type(
    mapping_type: str, mailchimp_type: str
) -> None:
    result = plan([FieldSpec("NEWFIELD", mapping_type, "New field")], DEFAULTS, limit=30)
    assert [(b["tag"], b["type"], b["name"]) for b in result.create] == [
        ("NEWFIELD", mailchimp_type, "New field")
    ]
    assert result.types["NEWFIELD"] == mailchimp_type


def test_dropdowns_are_created_with_their_choices_and_phones_as_international() -> None:
    result = plan(
        [FieldSpec("TIER", "dropdown", choices=("gold", "silver")), FieldSpec("MOBILE", "phone")],
        [],
        30,
    )
    bodies = {b["tag"]: b for b in result.create}
    assert bodies["TIER"]["options"] == {"choices": ["gold", "silver"]}
    assert bodies["MOBILE"]["options"] == {"phone_format": "international"}


def test_existing_fields_of_a_compatible_type_are_kept() -> None:
    result = plan([FieldSpec("FNAME", "text"), FieldSpec("PHONE", "phone")], DEFAULTS, limit=30)
    assert result.create == () and result.types == {"FNAME": "text", "PHONE": "phone"}


def test_a_type_conflict_names_the_tag_and_both_types() -> None:
    with pytest.raises(ConfigError) as raised:
        plan([FieldSpec("FNAME", "integer")], DEFAULTS, limit=30)
    text = str(raised.value)
    assert "FNAME" in text and "'text'" in text and "'integer'" in text and "'number'" in text


def test_every_conflict_is_reported_at_once() -> None:
    wanted = [
        FieldSpec("FNAME", "date"),
        FieldSpec("lower", "text"),
        FieldSpec("WAYTOOLONGTAG", "text"),
        FieldSpec("EMAIL", "text"),
        FieldSpec("ODD", "colour"),
    ]
    with pytest.raises(ConfigError) as raised:
        plan(wanted, DEFAULTS, limit=30)
    assert [issue.key for issue in raised.value.issues] == [
        "mapping.FNAME",
        "mapping.lower",
        "mapping.WAYTOOLONGTAG",
        "mapping.EMAIL",
        "mapping.ODD",
    ]


def test_the_audience_merge_field_limit_is_respected() -> None:
    existing = [ExistingField(i, f"F{i}", "text") for i in range(28)]
    plan([FieldSpec("A", "text"), FieldSpec("B", "text")], existing, limit=30)  # exactly full
    with pytest.raises(ConfigError, match="over the limit of 30"):
        plan(
            [FieldSpec("A", "text"), FieldSpec("B", "text"), FieldSpec("C", "text")],
            existing,
            limit=30,
        )


def test_missing_dropdown_choices_are_added_to_an_existing_dropdown() -> None:
    found = existing_field(
        {
            "merge_id": 7,
            "tag": "TIER",
            "name": "Tier",
            "type": "dropdown",
            "options": {"choices": ["gold"]},
        }
    )
    result = plan([FieldSpec("TIER", "dropdown", choices=("gold", "silver"))], [found], limit=30)
    assert [(f.merge_id, choices) for f, choices in result.grow_choices] == [
        (7, ("gold", "silver"))
    ]
    assert found.grown(("gold", "silver")) == {
        "name": "Tier",
        "options": {"choices": ["gold", "silver"]},
    }


def _change(add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> Change:
    return Change(
        "e:a@b.co",
        Action.UPSERT,
        False,
        "a@b.co",
        None,
        {},
        add,
        remove,
        ConsentState.SUBSCRIBED,
        ConsentState.NONE,
        "h",
    )


def test_tags_outside_the_owned_prefix_are_refused() -> None:
    assert tag_problem(_change(add=("crm-vip",), remove=("crm-lapsed",)), "crm-") is None
    assert "refusing" in (tag_problem(_change(remove=("VIP by hand",)), "crm-") or "")
    assert "refusing" in (tag_problem(_change(add=("other",)), "crm-") or "")
    assert "100" in (tag_problem(_change(add=("crm-" + "x" * 97,)), "crm-") or "")
    assert "both" in (tag_problem(_change(add=("crm-a",), remove=("crm-a",)), "crm-") or "")


def test_tag_calls_group_by_tag_and_pair_adds_with_removes() -> None:
    moves = [
        TagMove(f"p{i}@x.co", ("crm-a",) if i < 700 else (), ("crm-b",) if i >= 300 else ())
        for i in range(1000)
    ]
    calls = plan_calls(moves, batch_size=500)
    assert [(c.tag, len(c.add), len(c.remove)) for c in calls] == [
        ("crm-a", 500, 0),
        ("crm-a", 200, 0),
        ("crm-b", 0, 500),
        ("crm-b", 0, 200),
    ]
    both = plan_calls(
        [
            TagMove(f"p{i}@x.co", ("crm-a",) if i % 2 else (), () if i % 2 else ("crm-a",))
            for i in range(1000)
        ],
        batch_size=500,
    )
    assert [(len(c.add), len(c.remove)) for c in both] == [(500, 500)]


def test_tag_calls_reach_the_floor_for_random_membership_changes() -> None:
    rng = random.Random(3)
    tags = [f"crm-t{i}" for i in range(8)]
    moves = []
    for i in range(10_000):
        add = tuple(t for t in tags if rng.random() < 0.2)
        remove = tuple(t for t in tags if t not in add and rng.random() < 0.05)
        moves.append(TagMove(f"p{i}@x.co", add, remove))
    calls = plan_calls(moves, 500)
    adds = {t: sum(t in m.add for m in moves) for t in tags}
    removes = {t: sum(t in m.remove for m in moves) for t in tags}
    expected = sum(max(math.ceil(adds[t] / 500), math.ceil(removes[t] / 500)) for t in tags)
    assert len(calls) == floor_calls(adds, removes, 500) == expected
    applied = {(m, t) for c in calls for m in c.add for t in [c.tag]}
    assert applied == {(m.email, t) for m in moves for t in m.add}


def test_call_failures_are_keyed_by_lower_cased_address() -> None:
    answer = {"errors": [{"email_addresses": ["A@X.co", "b@x.co"], "error": "not in list"}]}
    assert call_failures(answer) == {"a@x.co": "not in list", "b@x.co": "not in list"}
    assert call_failures({}) == {}


def test_offset_pages_advance_until_total_and_refuse_a_loop() -> None:
    pages = OffsetPages()
    assert pages.next(0, 1000, 2500) == 1000
    assert pages.next(1000, 1000, 2500) == 2000
    assert pages.next(2000, 500, 2500) is None
    assert OffsetPages().next(0, 0, None) is None
    looping = OffsetPages()  # a server ignoring offset, without total_items
    assert looping.next(0, 10, None, b"first member") == 10
    assert looping.next(10, 10, None, b"another member") == 20  # a real next page
    with pytest.raises(PaginationLoop, match="repeats an earlier page"):
        looping.next(20, 10, None, b"first member")


def _config(**kw: Any) -> MailchimpConfig:
    return MailchimpConfig.model_validate(
        {"kind": "mailchimp", "api_key": KEY, "list_id": "l1", **kw}
    )


def test_base_url_comes_from_the_keys_data_centre_or_the_server_override() -> None:
    assert _config().resolved_base_url() == "https://us21.api.mailchimp.com/3.0"
    assert _config(server="us3").resolved_base_url() == "https://us3.api.mailchimp.com/3.0"
    assert (
        _config(base_url="http://127.0.0.1:9/3.0/").resolved_base_url() == "http://127.0.0.1:9/3.0"
    )


def test_a_key_without_data_centre_fails_without_echoing_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        _config(api_key="0123456789abcdefsecretpart")
    assert raised.value.issues[0].key == "api_key"
    assert "secretpart" not in str(raised.value)
    assert _config(api_key="0123456789abcdef", server="us5").data_centre() == "us5"


@pytest.mark.parametrize(
    "bad",
    [
        {"max_connections": 11},
        {"batch_size": 501},
        {"not_subscribed": "subscribed"},
        {"deletion": "forget"},
        {"unknown": 1},
        {"server": "US-6"},
    ],
)
def test_config_refuses_values_mailchimp_cannot_take(bad: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, ConfigError)):
        _config(**bad)


def test_http_settings_cap_concurrency_at_max_connections() -> None:
    config = _config(max_connections=4, http={"rate": {"max_concurrency": 10}})
    settings = config.http_settings()
    assert settings.rate.max_concurrency == 4 and settings.base_url.endswith("/3.0")
    assert KEY not in repr(config) and KEY not in str(config.model_dump())
