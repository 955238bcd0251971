"""Pure Mailchimp payload building: consent -> status, member entries, answers -> outcomes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum
from typing import Any

import httpx
import orjson
import pytest

from connectors.mailchimp.client import json_body
from connectors.mailchimp.consent import (
    StatusPlan,
    consent_update,
    mailchimp_time,
    status_plan,
)
from connectors.mailchimp.members import (
    classify_member_error,
    member_entry,
    read_answer,
    subscriber_hash,
    upsert_body,
)
from connectors.mailchimp.merge_fields import encode
from crmsync.contract import Action, Change, ConsentIntent, Outcome
from crmsync.records import Channel, ConsentState

# the core's consent intents, as a recorded opt-in, opt-out or nothing turns into them
SUB, UNSUB, NONE = ConsentIntent.SUBSCRIBE_IF_NEW, ConsentIntent.UNSUBSCRIBE, ConsentIntent.LEAVE


def change(
    email: str | None = "ayse@example.com", consent: ConsentIntent = SUB, **kw: Any
) -> Change:
    values: dict[str, Any] = {
        "person_key": f"e:{email}",
        "action": Action.UPSERT,
        "is_new": True,
        "email": email,
        "phone": None,
        "fields": {"FNAME": "Ayşe"},
        "memberships_add": (),
        "memberships_remove": (),
        "email_intent": consent,
        "sms_intent": NONE,
        "payload_hash": "h",
    }
    values.update(kw)
    return Change(**values)


def plain(tag: str, value: Any) -> Any:
    return value


def test_subscriber_hash_is_md5_of_the_lower_cased_address() -> None:
    # The example from Mailchimp's own guide to identifying subscribers.
    assert subscriber_hash("Urist.McVankab@freddiesjokes.com") == "62eeb292278cc15f5817cb78f7790b08"


@pytest.mark.parametrize(
    ("consent", "not_subscribed", "expected"),
    [
        (SUB, "transactional", StatusPlan("subscribed")),
        (SUB, "skip", StatusPlan("subscribed")),
        (UNSUB, "transactional", StatusPlan("unsubscribed", "unsubscribed")),
        (UNSUB, "skip", StatusPlan("unsubscribed", "unsubscribed")),
        (NONE, "transactional", StatusPlan("transactional")),
        (NONE, "skip", None),
    ],
)
def test_status_plan_table(
    consent: ConsentIntent, not_subscribed: Any, expected: StatusPlan | None
) -> None:
    assert status_plan(consent, not_subscribed) == expected


@pytest.mark.parametrize("consent", list(ConsentIntent))
def test_no_consent_ever_sends_status_subscribed_for_existing_members(
    consent: ConsentIntent,
) -> None:
    for not_subscribed in ("transactional", "skip"):
        plan = status_plan(consent, not_subscribed)
        fields = plan.fields() if plan else {}
        assert fields.get("status") in (None, "unsubscribed")
        if consent is not SUB:
            assert "subscribed" not in fields.values()


def test_member_entry_carries_address_merge_fields_and_status_if_new_only() -> None:
    entry = member_entry(change(fields={"FNAME": "Ayşe", "ORDERS": 3}), "transactional", plain)
    assert entry == {
        "email_address": "ayse@example.com",
        "status_if_new": "subscribed",
        "merge_fields": {"FNAME": "Ayşe", "ORDERS": 3},
    }


def test_member_entry_for_an_opt_out_lowers_existing_members_too() -> None:
    entry = member_entry(change(consent=UNSUB), "transactional", plain)
    assert entry is not None
    assert (entry["status_if_new"], entry["status"]) == ("unsubscribed", "unsubscribed")


def test_member_entry_is_none_without_email_or_when_skipping_the_unconsented() -> None:
    assert member_entry(change(email=None), "transactional", plain) is None
    assert member_entry(change(consent=NONE), "skip", plain) is None
    assert member_entry(change(consent=NONE), "transactional", plain) is not None


def test_member_entry_encodes_values_with_the_encoder() -> None:
    entry = member_entry(
        change(fields={"A": 1, "B": None}), "transactional", lambda t, v: f"{t}={v}"
    )
    assert entry is not None and entry["merge_fields"] == {"A": "A=1", "B": "B=None"}


def test_upsert_body_updates_existing_members() -> None:
    assert upsert_body([{"email_address": "a@b.co"}]) == {
        "members": [{"email_address": "a@b.co"}],
        "update_existing": True,
    }


class _Level(IntEnum):
    HIGH = 3


class _Name(str):
    pass


class _Moment(datetime):
    pass


@pytest.mark.parametrize(
    ("value", "mc_type", "expected"),
    [
        (None, "text", ""),
        (3, "number", 3),
        (Decimal("12.50"), "number", 12.5),
        (Decimal("12.00"), "number", 12),
        (Decimal("12.50"), "text", "12.50"),
        (True, "text", "true"),
        (False, None, "false"),
        (date(1990, 3, 7), "date", "1990-03-07"),
        (date(1990, 3, 7), "birthday", "03/07"),
        (datetime(2026, 1, 2, 23, 30, tzinfo=timezone(timedelta(hours=-3))), "date", "2026-01-03"),
        (datetime(2026, 1, 2, 9, 0, tzinfo=UTC), "text", "2026-01-02T09:00:00+00:00"),
        (("a", "b"), "text", "a, b"),
        (frozenset({"z", "a"}), "text", "a, z"),
        ({"addr1": "Cad. 1", "zip": None}, "address", {"addr1": "Cad. 1", "zip": ""}),
        ("+905321234567", "phone", "+905321234567"),
        (datetime(1990, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-3))), "birthday", "11/30"),
        (date(2000, 1, 5), "birthday", "01/05"),
        (date(2000, 1, 5), None, "2000-01-05"),
        (2.0, "number", 2),
        (2.5, None, 2.5),
        (2**60, "number", 2**60),
        (7, "text", "7"),
        # not finite: no JSON form and no value either, so cleared like None
        (float("nan"), "number", ""),
        (float("-inf"), None, ""),
        (Decimal("NaN"), "number", ""),
        (float("nan"), "text", "nan"),
        # subclasses take the general way, to the same place as their base
        (_Level.HIGH, "number", 3),
        (_Name("Ali"), "text", "Ali"),
        (_Moment(2026, 1, 2, 9, 0, tzinfo=UTC), "date", "2026-01-02"),
    ],
)
def test_encode_sends_what_mailchimp_takes_for_each_type(
    value: Any, mc_type: str | None, expected: Any
) -> None:
    assert encode(value, mc_type) == expected


# -- bodies as JSON ----------------------------------------------------------------------


def test_a_body_is_the_json_httpx_would_have_sent() -> None:
    body = {
        "members": [
            {
                "email_address": "ayşe@shop.example",
                "status_if_new": "subscribed",
                "merge_fields": {"FNAME": 'Ayşe \u2028 "Ö"', "SPENT": 12.5, "N": 3, "Z": ""},
            }
        ],
        "update_existing": True,
        "none": None,
        "tuple": ("a", 1),
    }
    expected = httpx.Request("POST", "https://x.example", json=body).content
    assert json_body(body) == expected
    assert orjson.loads(json_body(body)) == orjson.loads(expected)


def test_a_body_orjson_refuses_goes_the_standard_librarys_way() -> None:
    assert json_body({1: "a", "big": 2**70}) == b'{"1":"a","big":1180591620717411303424}'
    for refused in (datetime(2026, 1, 1, tzinfo=UTC), StatusPlan("subscribed")):
        with pytest.raises(TypeError):  # as httpx's json= refused it
            json_body({"value": refused})


def _error(
    text: str, code: str = "ERROR_GENERIC", field: str = "", message: str = ""
) -> dict[str, str]:
    return {
        "email_address": "x@y.co",
        "error": text,
        "error_code": code,
        "field": field,
        "field_message": message,
    }


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (_error("Member In Compliance State: x@y.co is in a compliance state"), Outcome.COMPLIANCE),
        (_error("x@y.co is in a compliance state due to unsubscribe"), Outcome.COMPLIANCE),
        (_error("Forgotten Email Not Subscribed"), Outcome.COMPLIANCE),
        (_error("x@y.co was permanently deleted and cannot be re-imported."), Outcome.COMPLIANCE),
        (
            _error("x@y.co looks fake or invalid, please enter a real email address."),
            Outcome.REJECTED,
        ),
        (
            _error("Your merge fields were invalid.", field="BDAY", message="Bad date"),
            Outcome.REJECTED,
        ),
        (_error("x@y.co is already a list member.", code="ERROR_CONTACT_EXISTS"), Outcome.FAILED),
        (_error("Something odd happened"), Outcome.FAILED),
        ({}, Outcome.FAILED),
    ],
)
def test_member_errors_are_classified(error: dict[str, str], outcome: Outcome) -> None:
    assert classify_member_error(error).outcome is outcome


def test_rejection_message_names_the_field_and_mailchimps_reason() -> None:
    result = classify_member_error(
        _error("Your merge fields were invalid.", field="BDAY", message="Bad")
    )
    assert result.message == "Your merge fields were invalid. (BDAY: Bad)"


def test_read_answer_maps_every_sent_address() -> None:
    answer = {
        "new_members": [{"email_address": "New@X.co", "id": "id-new"}],
        "updated_members": [{"email_address": "old@x.co", "id": "id-old"}],
        "errors": [_error("x@y.co is in a compliance state") | {"email_address": "bad@x.co"}],
    }
    got = read_answer(answer, ["new@x.co", "old@x.co", "bad@x.co", "lost@x.co"])
    assert got["new@x.co"].outcome is Outcome.OK and got["new@x.co"].remote_id == "id-new"
    assert got["old@x.co"].remote_id == "id-old"
    assert got["bad@x.co"].outcome is Outcome.COMPLIANCE
    assert got["lost@x.co"].outcome is Outcome.FAILED  # never assumed done


def test_mailchimp_time_is_utc_to_the_second_and_floors() -> None:
    moment = datetime(2026, 5, 1, 12, 0, 5, 900_000, tzinfo=timezone(timedelta(hours=3)))
    assert mailchimp_time(moment) == "2026-05-01T09:00:05+00:00"


def test_consent_update_from_a_member_uses_last_changed() -> None:
    fallback = datetime(2026, 1, 1, tzinfo=UTC)
    member = {
        "email_address": "A@X.co",
        "status": "cleaned",
        "last_changed": "2026-03-04T05:06:07+00:00",
    }
    update = consent_update(member, "cleaned in Mailchimp", fallback)
    assert update.email == "a@x.co" and update.channel is Channel.EMAIL
    assert update.state is ConsentState.UNSUBSCRIBED and update.at == datetime(
        2026, 3, 4, 5, 6, 7, tzinfo=UTC
    )
    assert consent_update({"email_address": "b@x.co"}, "r", fallback).at == fallback
