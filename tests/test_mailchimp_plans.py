"""Pure planning: merge field types and conflicts, tag call grouping, pagination, config.

Tag call grouping and pagination are the destination kit's and the HTTP seam's now; the
cases here drive them the way Mailchimp uses them (paired calls of 500, offset pages).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.http.pagination import NextPage, OffsetPaginator, Page, PaginationLoopError, at
from connectors.kit import (
    MembershipCall,
    Move,
    floor_calls,
    owned_problem,
    plan_membership_calls,
)
from connectors.mailchimp.config import MailchimpConfig
from connectors.mailchimp.merge_fields import ExistingField, existing_field, plan
from connectors.mailchimp.tags import MAX_TAG_NAME, call_failures
from crmsync.contract import Action, Change, ConsentIntent, FieldSpec
from crmsync.errors import ConfigError

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
        ConsentIntent.SUBSCRIBE_IF_NEW,
        ConsentIntent.LEAVE,
        "h",
    )


def tag_problem(change: Change, prefix: str) -> str | None:
    return owned_problem(change, prefix, MAX_TAG_NAME, noun="tag")


def plan_calls(moves: Sequence[Move], batch_size: int) -> list[MembershipCall]:
    """Mailchimp's static-segment call takes adds and removes of one tag together."""
    return plan_membership_calls(moves, batch_size, paired=True)


def test_tags_outside_the_owned_prefix_are_refused() -> None:
    assert tag_problem(_change(add=("crm-vip",), remove=("crm-lapsed",)), "crm-") is None
    assert "refusing" in (tag_problem(_change(remove=("VIP by hand",)), "crm-") or "")
    assert "refusing" in (tag_problem(_change(add=("other",)), "crm-") or "")
    assert "100" in (tag_problem(_change(add=("crm-" + "x" * 97,)), "crm-") or "")
    assert "both" in (tag_problem(_change(add=("crm-a",), remove=("crm-a",)), "crm-") or "")


def test_tag_calls_group_by_tag_and_pair_adds_with_removes() -> None:
    moves = [
        (f"p{i}@x.co", ("crm-a",) if i < 700 else (), ("crm-b",) if i >= 300 else ())
        for i in range(1000)
    ]
    calls = plan_calls(moves, batch_size=500)
    assert [(c.group, len(c.add), len(c.remove)) for c in calls] == [
        ("crm-a", 500, 0),
        ("crm-a", 200, 0),
        ("crm-b", 0, 500),
        ("crm-b", 0, 200),
    ]
    both = plan_calls(
        [
            (f"p{i}@x.co", ("crm-a",) if i % 2 else (), () if i % 2 else ("crm-a",))
            for i in range(1000)
        ],
        batch_size=500,
    )
    assert [(len(c.add), len(c.remove)) for c in both] == [(500, 500)]


def test_tag_calls_reach_the_floor_for_random_membership_changes() -> None:
    rng = random.Random(3)
    tags = [f"crm-t{i}" for i in range(8)]
    moves: list[Move] = []
    for i in range(10_000):
        add = tuple(t for t in tags if rng.random() < 0.2)
        remove = tuple(t for t in tags if t not in add and rng.random() < 0.05)
        moves.append((f"p{i}@x.co", add, remove))
    calls = plan_calls(moves, 500)
    adds = {t: sum(t in add for _, add, _ in moves) for t in tags}
    removes = {t: sum(t in remove for _, _, remove in moves) for t in tags}
    expected = sum(max(math.ceil(adds[t] / 500), math.ceil(removes[t] / 500)) for t in tags)
    assert len(calls) == floor_calls(adds, removes, 500, paired=True) == expected
    applied = {(m, t) for c in calls for m in c.add for t in [c.group]}
    assert applied == {(email, t) for email, add, _ in moves for t in add}


def test_call_failures_are_keyed_by_lower_cased_address() -> None:
    answer = {"errors": [{"email_addresses": ["A@X.co", "b@x.co"], "error": "not in list"}]}
    assert call_failures(answer) == {"a@x.co": "not in list", "b@x.co": "not in list"}
    assert call_failures({}) == {}


def members_page(first: int, count: int, total: int | None) -> Page:
    """A page of ``GET /lists/{id}/members`` as the SDK hands it back (a decoded body)."""
    body: dict[str, Any] = {"members": [{"id": f"m{i}"} for i in range(first, first + count)]}
    if total is not None:
        body["total_items"] = total
    return Page.of_document(body)


def mailchimp_pages() -> OffsetPaginator:
    return OffsetPaginator(records=at("members"), total=at("total_items"))


def test_offset_pages_advance_until_total_and_refuse_a_loop() -> None:
    pages = mailchimp_pages()
    assert pages.first() == {"offset": "0"}
    assert pages.next(members_page(0, 1000, 2500)) == NextPage({"offset": "1000"})
    assert pages.next(members_page(1000, 1000, 2500)) == NextPage({"offset": "2000"})
    assert pages.next(members_page(2000, 500, 2500)) is None
    assert mailchimp_pages().next(members_page(0, 0, None)) is None
    looping = mailchimp_pages()  # a server ignoring offset, without total_items
    assert looping.next(members_page(0, 10, None)) == NextPage({"offset": "10"})
    assert looping.next(members_page(10, 10, None)) == NextPage({"offset": "20"})  # a real page
    with pytest.raises(PaginationLoopError, match="repeats an earlier page"):
        looping.next(members_page(0, 10, None))


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
