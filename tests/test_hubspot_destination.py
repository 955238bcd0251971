"""The HubSpot destination against the strict fake: properties, batch upserts and their
multi-status answers, segment options, archives, faults and the rate window. The fake
fails the test on teardown for any request HubSpot's reference does not allow."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.http import BudgetRegistry
from connectors.hubspot import HubSpotConfig, HubSpotDestination
from connectors.hubspot.mapping_rules import check_mapping
from crmsync.contract import (
    Action,
    Change,
    ConnectorContext,
    ConsentIntent,
    Destination,
    FieldSpec,
    Outcome,
)
from crmsync.errors import ConfigError, TransientError
from crmsync.fields import catalogue
from crmsync.registry import default_mapping
from mappings import load_mapping
from tests.fakes.hubspot import PROPERTIES, FakeHubSpot, hubspot_fake

__all__ = ["hubspot_fake"]
CONTEXT = ConnectorContext("hubspot_test", Path("."))
UPSERT = ("POST", "upsert_contacts")
PATCH = ("PATCH", "update_property")
SEGMENTS = "crmsync_segments"


def specs() -> list[FieldSpec]:
    mapping = load_mapping(
        default_mapping("hubspot"), catalogue(), kind="hubspot", rules=check_mapping
    )
    return mapping.field_specs()


def person(
    email: str | None,
    *,
    segments: Sequence[str] = (),
    fields: dict[str, Any] | None = None,
    action: Action = Action.UPSERT,
    remote_id: str | None = None,
) -> Change:
    return Change(
        person_key=f"e:{email}" if email else "p:+905321234567",
        action=action,
        is_new=True,
        email=email,
        phone=None if email else "+905321234567",
        fields={"firstname": "Ayşe", "crmsync_orders_count": 3} if fields is None else fields,
        memberships_add=tuple(segments),
        memberships_remove=(),
        email_intent=ConsentIntent.LEAVE,
        sms_intent=ConsentIntent.LEAVE,
        payload_hash="h",
        remote_id=remote_id,
        memberships=tuple(sorted(segments)),
    )


def make(fake: FakeHubSpot, **table: Any) -> HubSpotDestination:
    config = HubSpotConfig.model_validate(
        {
            "access_token": fake.token,
            "base_url": fake.base_url,
            "http": {"retry": {"backoff_initial": 0.0, "backoff_max": 0.0}},
            **table,
        }
    )
    budgets = BudgetRegistry(sleep=lambda s: None)  # waits are the seam's, tested there
    return HubSpotDestination(config, CONTEXT, sleep=lambda s: None, budgets=budgets)


@pytest.fixture
def dest(hubspot_fake: FakeHubSpot) -> Iterator[HubSpotDestination]:
    destination = make(hubspot_fake)
    destination.prepare(specs())
    hubspot_fake.reset_counters()
    yield destination
    destination.close()


def test_it_is_a_destination(dest: HubSpotDestination) -> None:
    assert isinstance(dest, Destination)


# -- properties ------------------------------------------------------------------------


def test_prepare_creates_the_group_and_each_property_with_hubspots_type(
    hubspot_fake: FakeHubSpot,
) -> None:
    destination = make(hubspot_fake)
    destination.prepare(specs())
    made = hubspot_fake.properties
    assert "crmsync" in hubspot_fake.groups
    expected = {
        "crmsync_orders_count": ("number", "number"),
        "crmsync_total_spent": ("number", "number"),
        "crmsync_first_order_date": ("date", "date"),
        "crmsync_customer_since": ("datetime", "date"),
        "crmsync_cart_abandoned": ("bool", "booleancheckbox"),
        "crmsync_top_category": ("string", "text"),
        "crmsync_rfm_segment": ("enumeration", "select"),
        SEGMENTS: ("enumeration", "checkbox"),
    }
    for name, (kind, field_type) in expected.items():
        assert (made[name].type, made[name].field_type, made[name].group) == (
            kind,
            field_type,
            "crmsync",
        ), name
    assert made["crmsync_cart_abandoned"].values() == ["true", "false"]
    assert "At Risk" in made["crmsync_rfm_segment"].values()
    assert made["firstname"].group == "contactinformation"  # HubSpot's own: checked, kept
    hubspot_fake.reset_counters()
    make(hubspot_fake).prepare(specs())  # a second run finds everything in place
    assert hubspot_fake.writes() == 0
    destination.close()


def test_a_property_of_another_type_fails_prepare_naming_it_before_any_write(
    hubspot_fake: FakeHubSpot,
) -> None:
    hubspot_fake.add_property("crmsync_orders_count", "string", "text")
    hubspot_fake.add_property("crmsync_cart_value", "number", "number", read_only=True)
    destination = make(hubspot_fake)
    with pytest.raises(ConfigError) as caught:
        destination.prepare(specs())
    keys = {issue.key: issue.message for issue in caught.value.issues}
    assert "'string'" in keys["mapping.crmsync_orders_count"]
    assert "crmsync_cart_value" in keys["mapping.crmsync_cart_value"]
    assert hubspot_fake.writes() == 0  # no group, no property, no contact
    destination.close()


def test_a_segments_property_that_cannot_hold_several_values_is_a_conflict(
    hubspot_fake: FakeHubSpot,
) -> None:
    hubspot_fake.add_property(SEGMENTS, "enumeration", "select", options=["crm-vip"])
    destination = make(hubspot_fake)
    with pytest.raises(ConfigError, match="segments_property"):
        destination.prepare(specs())
    destination.close()


def test_dropdown_options_grow_in_crmsyncs_group_only(hubspot_fake: FakeHubSpot) -> None:
    hubspot_fake.groups["crmsync"] = {"name": "crmsync", "label": "crmsync", "displayOrder": -1}
    hubspot_fake.add_property(
        "crmsync_lifecycle_stage", "enumeration", "select", group="crmsync", options=["Mine"]
    )
    destination = make(hubspot_fake)
    destination.prepare(specs())
    values = hubspot_fake.properties["crmsync_lifecycle_stage"].values()
    assert values[0] == "Mine" and {"Prospect", "Lapsed"} <= set(values)  # the merchant's stays
    hubspot_fake.add_property(
        "crmsync_rfm_segment", "enumeration", "select", options=["Champions"]
    )  # somebody else's group
    with pytest.raises(ConfigError, match="crmsync_rfm_segment"):
        destination.prepare(specs())
    destination.close()


# -- contacts ---------------------------------------------------------------------------


def test_contacts_go_in_batches_of_100_with_their_ids_kept(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    people = [person(f"p{i}@example.com") for i in range(250)]
    results = dest.push(people)
    assert [r.person_key for r in results] == [c.person_key for c in people]
    assert {r.outcome for r in results} == {Outcome.OK}
    assert hubspot_fake.calls[UPSERT] == 3
    for result in results:
        found = hubspot_fake.contact(result.person_key[2:])
        assert found is not None and result.remote_id == found.id


def test_values_arrive_in_hubspots_formats(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    fields = {
        "firstname": "Ayşe",
        "crmsync_total_spent": 1e16,
        "crmsync_first_order_date": "2025-01-31",
        "crmsync_customer_since": "2025-01-02T01:30:00+03:00",
        "crmsync_cart_abandoned": True,
        "crmsync_rfm_segment": "At Risk",
        "crmsync_top_category": None,
    }
    [result] = dest.push([person("a@example.com", fields=fields)])
    assert result.outcome is Outcome.OK, result
    stored = hubspot_fake.contact("a@example.com")
    assert stored is not None
    assert stored.properties["crmsync_total_spent"] == "10000000000000000"
    assert stored.properties["crmsync_first_order_date"] == "2025-01-31"
    assert stored.properties["crmsync_customer_since"] == "1735770600000"
    assert stored.properties["crmsync_cart_abandoned"] == "true"
    assert stored.properties["crmsync_rfm_segment"] == "At Risk"
    assert "crmsync_top_category" not in stored.properties  # "" cleared it


def test_a_207_refuses_only_the_invalid_address_with_hubspots_reason(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    hubspot_fake.invalid_emails.add("bad@example.com")
    results = dest.push([person("good@example.com"), person("bad@example.com")])
    assert hubspot_fake.calls[UPSERT] == 1
    good, bad = results
    assert good.outcome is Outcome.OK and good.remote_id
    assert bad.outcome is Outcome.REJECTED
    assert "bad@example.com is invalid" in bad.message
    assert hubspot_fake.contact("bad@example.com") is None


def test_a_batch_refused_for_one_value_costs_only_that_person(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    people = [person(f"p{i}@example.com") for i in range(8)]
    people[5] = person("odd@example.com", fields={"crmsync_rfm_segment": "Bogus"})
    results = {r.person_key: r for r in dest.push(people)}
    assert results["e:odd@example.com"].outcome is Outcome.REJECTED
    assert "Bogus" in results["e:odd@example.com"].message
    assert sum(r.outcome is Outcome.OK for r in results.values()) == 7
    assert hubspot_fake.calls[UPSERT] <= 1 + 2 * 3  # halved down to the one, not one by one


def test_a_property_deleted_since_prepare_fails_the_batch_without_halving(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    del hubspot_fake.properties["crmsync_orders_count"]
    results = dest.push([person(f"p{i}@example.com") for i in range(6)])
    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert "crmsync_orders_count" in results[0].message
    assert hubspot_fake.calls[UPSERT] == 1


def test_people_hubspot_cannot_take_are_refused_before_any_call(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    results = dest.push(
        [
            person(None),
            person("a@example.com", segments=["vip-by-hand"]),
            person("b@example.com"),
            person("B@example.com"),
        ]
    )
    no_email, foreign, first, twice = results
    assert no_email.outcome is Outcome.REJECTED and "e-mail" in no_email.message
    assert foreign.outcome is Outcome.REJECTED and "vip-by-hand" in foreign.message
    assert first.outcome is Outcome.OK
    assert twice.outcome is Outcome.REJECTED and "same e-mail" in twice.message


# -- segments ---------------------------------------------------------------------------


def test_segment_options_grow_once_and_the_merchants_options_stay(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    prop = hubspot_fake.properties[SEGMENTS]
    prop.options.append({"label": "Hand picked", "value": "hand-picked", "displayOrder": 0})
    people = [person(f"p{i}@example.com", segments=["crm-new", "crm-vip"]) for i in range(150)]
    assert {r.outcome for r in dest.push(people)} == {Outcome.OK}
    assert hubspot_fake.calls[PATCH] == 1  # both options in one update, for both batches
    assert prop.values() == ["hand-picked", "crm-new", "crm-vip"]
    assert hubspot_fake.values("p0@example.com", SEGMENTS) == ["crm-new", "crm-vip"]
    dest.push([person("p0@example.com", segments=["crm-vip"])])  # leaves crm-new
    assert hubspot_fake.calls[PATCH] == 1
    assert hubspot_fake.values("p0@example.com", SEGMENTS) == ["crm-vip"]
    assert "crm-new" in prop.values()  # an option is never removed


# -- deletions ----------------------------------------------------------------------------


def test_people_deleted_at_the_source_are_archived_by_id_or_found_by_email(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    known = hubspot_fake.add_contact("known@example.com")
    hubspot_fake.add_contact("unacked@example.com")
    results = dest.push(
        [
            person("known@example.com", action=Action.ARCHIVE, remote_id=known.id),
            person("unacked@example.com", action=Action.ARCHIVE),
            person("never@example.com", action=Action.ARCHIVE),
        ]
    )
    assert {r.outcome for r in results} == {Outcome.OK}
    assert hubspot_fake.contacts() == {}
    assert hubspot_fake.calls[("POST", "archive_contacts")] == 1
    assert hubspot_fake.calls[("POST", "read_contacts")] == 1


# -- faults and limits --------------------------------------------------------------------


@pytest.mark.parametrize("fault", [429, 502, "drop"])
def test_a_passing_fault_is_retried(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination, fault: Any
) -> None:
    hubspot_fake.inject(fault, path="*/batch/upsert", retry_after="2")
    [result] = dest.push([person("a@example.com")])
    assert result.outcome is Outcome.OK
    assert hubspot_fake.calls[UPSERT] == 2


def test_a_lost_answer_is_sent_again_without_doubling_the_contact(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    hubspot_fake.inject(503, path="*/batch/upsert", after=True)
    [result] = dest.push([person("a@example.com")])
    assert result.outcome is Outcome.OK
    assert len(hubspot_fake.contacts()) == 1


def test_hubspot_down_stops_the_run(hubspot_fake: FakeHubSpot, dest: HubSpotDestination) -> None:
    hubspot_fake.inject(503, times=100, path="*/batch/upsert")
    with pytest.raises(TransientError, match="HubSpot is unreachable"):
        dest.push([person(f"p{i}@example.com") for i in range(150)])


def test_the_rolling_window_is_honoured_with_retry_after(hubspot_fake: FakeHubSpot) -> None:
    now = [0.0]
    sleeps: list[float] = []
    fake = FakeHubSpot(token=hubspot_fake.token, per_ten_seconds=3, clock=lambda: now[0]).start()

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    config = HubSpotConfig.model_validate(
        {
            "access_token": fake.token,
            "base_url": fake.base_url,
            "batch_size": 1,
            "http": {"rate": {"max_concurrency": 1}},
        }
    )
    budgets = BudgetRegistry(clock=lambda: now[0], sleep=sleep)
    destination = HubSpotDestination(config, CONTEXT, sleep=sleep, budgets=budgets)
    try:
        destination.prepare(specs())  # reads properties and groups, creates: many calls
        results = destination.push([person(f"p{i}@example.com") for i in range(4)])
    finally:
        destination.close()
        fake.stop()
    assert {r.outcome for r in results} == {Outcome.OK}
    assert fake.rate_limited > 0 and any(s >= 1 for s in sleeps)
    assert not fake.violations


# -- check ---------------------------------------------------------------------------------


def test_check_reports_the_token_scopes_group_segments_and_the_days_calls(
    hubspot_fake: FakeHubSpot,
) -> None:
    destination = make(hubspot_fake)
    checks = {c.what: c for c in destination.check()}
    assert all(c.ok for c in checks.values()), checks
    assert "created by the first run" in checks["property group crmsync"].detail
    assert "250,000" in checks["daily limit"].detail
    hubspot_fake.add_property(SEGMENTS, "string", "text")
    hubspot_fake.inject(403, path="*/batch/read")
    checks = {c.what: c for c in destination.check()}
    assert not checks["scope crm.objects.contacts.read"].ok
    assert not checks[f"property {SEGMENTS}"].ok
    assert hubspot_fake.writes() == 0  # a check writes nothing
    destination.close()


def test_check_names_each_property_the_mapping_cannot_use_and_creates_nothing(
    hubspot_fake: FakeHubSpot,
) -> None:
    destination = make(hubspot_fake)
    fine = {c.what: c for c in destination.check(specs())}
    assert all(c.ok for c in fine.values()), fine
    assert "crmsync_orders_count" in fine["mapped properties"].detail  # made by the first run
    hubspot_fake.add_property("crmsync_orders_count", "string", "text")
    hubspot_fake.add_property("crmsync_total_spent", "number", "number", read_only=True)
    hubspot_fake.add_property("crmsync_top_category", "string", "text")  # the same type: fine
    checks = {c.what: c for c in destination.check(specs())}
    failed = {what: c.detail for what, c in checks.items() if not c.ok}
    assert failed.keys() == {"property crmsync_orders_count", "property crmsync_total_spent"}
    assert "'string'" in failed["property crmsync_orders_count"]  # HubSpot's type ...
    assert "'number'" in failed["property crmsync_orders_count"]  # ... and the mapping's
    assert "nobody write" in failed["property crmsync_total_spent"]
    assert "mapped properties" not in checks
    assert hubspot_fake.writes() == 0  # a check creates nothing
    assert "crmsync" not in hubspot_fake.groups
    destination.close()


def test_check_names_a_refused_token(hubspot_fake: FakeHubSpot) -> None:
    destination = make(hubspot_fake, access_token="pat-eu1-another")
    [check] = destination.check()
    assert check.what == "access token" and not check.ok and "401" in check.detail
    destination.close()


def test_a_create_whose_answer_was_lost_is_not_a_conflict(hubspot_fake: FakeHubSpot) -> None:
    hubspot_fake.inject(503, path=f"{PROPERTIES}", method="POST", after=True)
    hubspot_fake.inject(503, path=f"{PROPERTIES}/groups", method="POST", after=True)
    destination = make(hubspot_fake)
    destination.prepare(specs())  # the retries hear 409: the property and the group exist
    assert SEGMENTS in hubspot_fake.properties and "crmsync" in hubspot_fake.groups
    destination.close()
