"""Klaviyo's pure parts: payload builders, consent plans and read-back, config, mapping rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.klaviyo import KlaviyoConfig, KlaviyoDestination
from connectors.klaviyo.consent import KlaviyoConsent, opt_outs, plan_consent
from connectors.klaviyo.jobs import read_job
from connectors.klaviyo.lookup import any_filters
from connectors.klaviyo.mapping_rules import check_mapping
from connectors.klaviyo.payloads import (
    import_job_body,
    profile_entry,
    size_of,
    subscribe_body,
    subscribe_entry,
    suppress_body,
    unsubscribe_body,
    unsubscribe_entry,
)
from crmsync.contract import Action, Change, ConsentIntent, Outcome
from crmsync.errors import ConfigError
from crmsync.fields import catalogue
from crmsync.records import Channel
from mappings import MappingError, compile_mapping, load_mapping

SUB, UNSUB, NONE = ConsentIntent.SUBSCRIBE_IF_NEW, ConsentIntent.UNSUBSCRIBE, ConsentIntent.LEAVE
AT = datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=UTC)


def change(
    fields: dict[str, Any] | None = None,
    *,
    email: str | None = "ayse@example.com",
    phone: str | None = None,
    email_intent: ConsentIntent = SUB,
    sms_intent: ConsentIntent = NONE,
    is_new: bool = True,
    memberships: tuple[str, ...] = (),
    resent: bool = False,
) -> Change:
    return Change(
        person_key=f"e:{email}",
        action=Action.UPSERT,
        is_new=is_new,
        email=email,
        phone=phone,
        fields=fields or {},
        memberships_add=memberships,
        memberships_remove=(),
        email_intent=email_intent,
        sms_intent=sms_intent,
        payload_hash="h",
        memberships=memberships,
        resent=resent,
    )


def consent(email: str = "NEVER_SUBSCRIBED", sms: str = "NEVER_SUBSCRIBED", **kw: Any) -> Any:
    marketing = {"consent": email, "suppression": kw.get("suppression", [])}
    return {
        "subscriptions": {"email": {"marketing": marketing}, "sms": {"marketing": {"consent": sms}}}
    }


# -- profiles -------------------------------------------------------------------------


def test_fields_go_to_standard_attributes_location_and_custom_properties() -> None:
    fields = {
        "first_name": "Ayşe",
        "location.city": "İstanbul",
        "location.zip": "34000",
        "orders_count": 3,
        "categories": ("Kitap", "Oyun"),
    }
    entry = profile_entry(change(fields, phone="+905321234567"))
    assert entry == {
        "type": "profile",
        "attributes": {
            "email": "ayse@example.com",
            "phone_number": "+905321234567",
            "first_name": "Ayşe",
            "location": {"city": "İstanbul", "zip": "34000"},
            "properties": {"categories": ["Kitap", "Oyun"], "orders_count": 3},
        },
    }


def test_a_value_that_went_away_is_sent_as_null_and_nothing_mapped_is_omitted() -> None:
    fields = {"first_name": None, "location.city": "", "top_category": None, "tags": (), "n": 0}
    attributes = profile_entry(change(fields))["attributes"]
    assert attributes["first_name"] is None
    assert attributes["location"] == {"city": None}
    assert attributes["properties"] == {"top_category": None, "tags": None, "n": 0}


def test_the_email_is_never_cleared_and_a_mapped_phone_wins_over_the_identity() -> None:
    attributes = profile_entry(change({"phone_number": None}, phone="+905321234567"))["attributes"]
    assert attributes["phone_number"] is None  # the mapping's value went away: cleared
    assert "email" not in profile_entry(change(email=None, phone="+1555"))["attributes"]


def test_the_segments_property_holds_the_list_names() -> None:
    entry = profile_entry(change(memberships=("crm-vip", "crm-new")), "crm_segments")
    assert entry["attributes"]["properties"] == {"crm_segments": ["crm-new", "crm-vip"]}
    empty = profile_entry(change(), "crm_segments")
    assert empty["attributes"]["properties"] == {"crm_segments": []}


def test_sizes_count_the_encoded_profile_and_its_separator() -> None:
    entry = profile_entry(change({"note": "ş" * 100}))
    body = import_job_body([entry, entry])
    assert size_of(entry) == len(orjson.dumps(entry)) + 1
    assert len(orjson.dumps(body)) < 2 * size_of(entry) + 200


# -- consent ----------------------------------------------------------------------------


def test_subscribe_entries_carry_consent_times_only_for_historical_imports() -> None:
    entry = subscribe_entry("01ABC", "a@example.com", "+905321234567", email_at=AT, sms_at=AT)
    assert entry == {
        "type": "profile",
        "id": "01ABC",
        "attributes": {
            "email": "a@example.com",
            "phone_number": "+905321234567",
            "subscriptions": {
                "email": {
                    "marketing": {"consent": "SUBSCRIBED", "consented_at": "2024-05-01T10:30:15Z"}
                },
                "sms": {
                    "marketing": {"consent": "SUBSCRIBED", "consented_at": "2024-05-01T10:30:15Z"}
                },
            },
        },
    }
    body = subscribe_body([subscribe_entry("01ABC", "a@example.com", None)], historical=False)
    attributes = body["data"]["attributes"]
    assert "historical_import" not in attributes and attributes["custom_source"] == "crmsync"
    assert subscribe_body([], historical=True)["data"]["attributes"]["historical_import"] is True


def test_unsubscribes_name_no_list_so_they_are_global() -> None:
    body = unsubscribe_body([unsubscribe_entry("a@example.com", None)])
    assert "relationships" not in body["data"]
    assert body["data"]["attributes"]["profiles"]["data"][0]["attributes"] == {
        "email": "a@example.com",
        "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
    }


def test_a_suppression_names_addresses_only_so_nobody_is_unsuppressed_or_listed() -> None:
    body = suppress_body(["a@example.com", "b@example.com"])
    assert body == {
        "data": {
            "type": "profile-suppression-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {"type": "profile", "attributes": {"email": "a@example.com"}},
                        {"type": "profile", "attributes": {"email": "b@example.com"}},
                    ]
                }
            },
        }
    }


@pytest.mark.parametrize(
    ("intent", "is_new", "created", "state", "subscribe", "unsubscribe"),
    [
        (SUB, True, True, consent(), {Channel.EMAIL}, set()),
        (SUB, True, False, consent(), set(), set()),  # Klaviyo had the profile
        (SUB, False, True, consent(), set(), set()),  # acknowledged before: not new
        (SUB, True, True, consent("UNSUBSCRIBED"), set(), set()),
        (SUB, True, True, consent(suppression=[{"reason": "HARD_BOUNCE"}]), set(), set()),
        (SUB, True, True, {}, set(), set()),  # Klaviyo said nothing: no guess
        (UNSUB, False, False, consent("SUBSCRIBED"), set(), {Channel.EMAIL}),
        (UNSUB, True, True, consent(), set(), {Channel.EMAIL}),
        (UNSUB, False, False, consent("UNSUBSCRIBED"), set(), set()),  # already
        (NONE, True, True, consent(), set(), set()),
        (NONE, False, False, consent("SUBSCRIBED"), set(), set()),
    ],
)
def test_consent_plans_follow_the_intent_and_never_raise_an_existing_status(
    intent: ConsentIntent,
    is_new: bool,
    created: bool,
    state: dict[str, Any],
    subscribe: set[Channel],
    unsubscribe: set[Channel],
) -> None:
    plan = plan_consent(
        change(email_intent=intent, is_new=is_new),
        None,
        KlaviyoConsent.of(state),
        created=created,
        sms=True,
    )
    assert plan.subscribe == subscribe and plan.unsubscribe == unsubscribe


def test_sms_consent_needs_the_sms_setting_and_a_phone() -> None:
    person = change(email_intent=NONE, sms_intent=SUB, phone="+905321234567")
    state = KlaviyoConsent.of(consent())
    on = plan_consent(person, "+905321234567", state, created=True, sms=True)
    assert on.subscribe == {Channel.SMS}
    assert not plan_consent(person, "+905321234567", state, created=True, sms=False).subscribe
    assert not plan_consent(person, None, state, created=True, sms=True).subscribe


def test_opt_outs_read_the_latest_suppression_after_the_cursor() -> None:
    since = AT
    profile = {
        "attributes": {
            "email": "Ayse@Example.com",
            **consent(
                "UNSUBSCRIBED",
                "UNSUBSCRIBED",
                suppression=[
                    {"reason": "HARD_BOUNCE", "timestamp": "2024-04-01T00:00:00+00:00"},
                    {"reason": "UNSUBSCRIBE", "timestamp": "2024-06-01T00:00:00+00:00"},
                ],
            ),
        }
    }
    profile["attributes"]["subscriptions"]["sms"]["marketing"]["last_updated"] = (
        "2024-06-02T00:00:00Z"
    )
    [email] = opt_outs(profile, since, sms=False)
    assert (email.email, email.channel, email.reason) == (
        "ayse@example.com",
        Channel.EMAIL,
        "unsubscribed in Klaviyo",
    )
    assert email.at == datetime(2024, 6, 1, tzinfo=UTC)
    assert [u.channel for u in opt_outs(profile, since, sms=True)] == [Channel.EMAIL, Channel.SMS]
    assert list(opt_outs(profile, since + timedelta(days=60), sms=True)) == []


# -- reading a job back -------------------------------------------------------------------


def test_a_completed_job_is_matched_by_address_not_by_position() -> None:
    a, b, c = (change(email=f"{n}@example.com") for n in "abc")
    job_created = AT
    profiles = [
        {
            "id": "P-B",
            "attributes": {
                "email": "B@example.com",
                "created": "2020-01-01T00:00:00Z",
                **consent(),
            },
        },
        {
            "id": "P-A",
            "attributes": {
                "email": "a@example.com",
                "created": "2024-05-01T10:31:00Z",
                **consent(),
            },
        },
    ]
    errors = [
        {
            "attributes": {
                "code": "invalid",
                "detail": "bad phone",
                "original_payload": {"email": "c@example.com"},
            }
        }
    ]
    imported, refused = read_job([a, b, c], job_created, profiles, errors)
    assert {(p.change.email, p.profile_id, p.created) for p in imported} == {
        ("a@example.com", "P-A", True),
        ("b@example.com", "P-B", False),
    }
    assert refused[c.person_key].outcome is Outcome.REJECTED
    assert "bad phone" in refused[c.person_key].message
    lost, unknown = read_job([a], job_created, [], [])
    assert not lost and unknown[a.person_key].outcome is Outcome.FAILED


# -- configuration and mapping -------------------------------------------------------------


class Kept:
    """A budget that records the windows it is asked to keep."""

    def __init__(self) -> None:
        self.windows: list[tuple[str, int, float]] = []

    def keep_window(self, size: int, seconds: float) -> None:
        self.windows.append(("rolling", size, seconds))

    def keep_fixed_window(self, size: int, seconds: float, margin: float) -> None:
        assert margin == 0.25
        self.windows.append(("fixed", size, seconds))


def kept(limit: Any) -> list[tuple[str, int, float]]:
    budget = Kept()
    limit.keep(budget)
    return budget.windows


def test_config_defaults_and_per_endpoint_budgets() -> None:
    config = KlaviyoConfig.model_validate({"kind": "klaviyo", "api_key": "pk_x"})
    assert config.revision == "2026-07-15" and config.base_url == "https://a.klaviyo.com"
    assert config.owned_prefix() == "crm-" and not config.sms and not config.historical_import
    jobs = config.http_settings("import_jobs")
    # no token bucket of its own: the budget keeps 10 a second and 150 a minute as windows
    assert jobs.rate.requests_per_second is None
    assert kept(config.rate_limits.import_jobs) == [("rolling", 10, 1.1), ("fixed", 150, 60.0)]
    profiles = config.http_settings("profiles")
    assert (profiles.rate.requests_per_second, profiles.timeout) == (None, 60.0)
    assert kept(config.rate_limits.profiles) == [("rolling", 75, 1.1), ("fixed", 750, 60.0)]
    assert config.http_settings("list_create").retry.attempts == 1  # not idempotent
    slower = KlaviyoConfig.model_validate(
        {"kind": "klaviyo", "api_key": "pk_x", "http": {"rate": {"requests_per_second": 1}}}
    )
    # an operator's own ceiling adds a token bucket, its burst never above the group's
    assert slower.http_settings("profiles").rate.requests_per_second == 1
    assert slower.http_settings("profiles").rate.burst == 10


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"revision": "latest"}, "revision"),
        ({"api_key": "  "}, "api_key"),
        ({"segments_property": "$segments"}, "segments_property"),
        ({"jobs": {"profiles_per_job": 20_000}}, "profiles_per_job"),
        ({"jobs": {"unsubscribe_batch": 101}}, "unsubscribe_batch"),
        ({"jobs": {"suppress_batch": 101}}, "suppress_batch"),  # Klaviyo takes 100 a job
        ({"colour": "red"}, "colour"),
    ],
)
def test_config_refuses_what_klaviyo_would(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises((ConfigError, ValueError)) as caught:
        KlaviyoConfig.model_validate({"kind": "klaviyo", "api_key": "pk_x", **overrides})
    assert key in str(caught.value)


def test_the_shipped_mapping_loads_with_klaviyos_rules() -> None:
    default = KlaviyoDestination.default_mapping
    assert default is not None
    mapping = load_mapping(default, catalogue(), kind="klaviyo", rules=check_mapping)
    names = {rule.name for rule in mapping.rules}
    assert {"first_name", "phone_number", "location.city", "rfm_segment", "birthday"} <= names
    assert mapping.membership_for("vip") == "crm-VIP"
    top = next(rule for rule in mapping.rules if rule.name == "rfm_score")
    assert top.max_length == 10_000  # text without a limit gets Klaviyo's default cap


def test_mapping_rules_refuse_klaviyos_own_names_and_wrong_types() -> None:
    data = {
        "kind": "klaviyo",
        "identity": {"email": "email"},
        "fields": {
            "email": {"from": "email"},
            "$source": {"from": "city"},
            "location.street": {"from": "address1"},
            "phone_number": {"from": "phone"},
            "first_name": {"from": "orders_count", "type": "integer"},
            "home": {"type": "address", "from_fields": {"city": "city"}},
        },
    }
    with pytest.raises(MappingError) as caught:
        compile_mapping(data, catalogue(), kind="klaviyo", rules=check_mapping)
    keys = {issue.key for issue in caught.value.issues}
    assert keys == {
        "fields.email",
        'fields."$source"',
        'fields."location.street"',
        "fields.phone_number.type",
        "fields.first_name.type",
        "fields.home.type",
    }


def test_a_change_resent_after_a_crash_finishes_the_subscription_its_import_never_got() -> None:
    """The killed run's import created the profile and was never acknowledged; the re-sent
    change finds it existing but never subscribed, and subscribes it as a clean run would.
    An opt-out in Klaviyo meanwhile still wins."""
    resent = change(email_intent=SUB, is_new=True, resent=True)
    fresh = KlaviyoConsent.of(consent())
    assert plan_consent(resent, None, fresh, created=False, sms=False).subscribe == {Channel.EMAIL}
    unsubscribed = KlaviyoConsent.of(consent("UNSUBSCRIBED"))
    assert not plan_consent(resent, None, unsubscribed, created=False, sms=False).subscribe
    not_resent = change(email_intent=SUB, is_new=True)
    assert not plan_consent(not_resent, None, fresh, created=False, sms=False).subscribe


def test_lookups_ask_for_each_value_once_100_a_filter_quoted() -> None:
    values = [f"p{i}@example.com" for i in range(230)] + ["p0@example.com", 'o"neil@example.com']
    filters = any_filters("email", values)
    assert len(filters) == 3
    named = [re.findall(r'"((?:[^"\\]|\\.)*)"', f) for f in filters]
    assert [len(n) for n in named] == [100, 100, 31]
    assert all(f.startswith("any(email,[") and f.endswith("])") for f in filters)
    assert named[0][0] == "p0@example.com" and named[2][-1] == 'o\\"neil@example.com'
    assert any_filters("phone_number", []) == []
