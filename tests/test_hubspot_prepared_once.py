"""HubSpot prepared once for every process of a run (``crmsync.contract.PreparedOnce``):
another instance takes over what ``prepare`` found with no call, ``expect`` adds the
run's segment options in one update before any push, and an upsert refused because
somebody's update dropped an option the run added puts the option back and goes again
(HubSpot's update replaces the whole option list, and has no conditional form)."""

from __future__ import annotations

import json

from crmsync.contract import PreparedOnce
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.test_hubspot_destination import PATCH, SEGMENTS, UPSERT, make, person, specs

__all__ = ["hubspot_fake"]
READ = ("GET", "get_property")
LIST = ("GET", "list_properties")


def _property_calls(fake: FakeHubSpot) -> dict[tuple[str, str], int]:
    return {key: n for key, n in fake.calls.items() if "propert" in key[1] and n}


def test_an_instance_that_adopts_what_prepare_found_pushes_with_no_schema_call(
    hubspot_fake: FakeHubSpot,
) -> None:
    first = make(hubspot_fake)
    first.prepare(specs())
    first.expect(["crm-vip", "crm-new"])
    found = first.prepared()
    first.close()
    assert isinstance(first, PreparedOnce)
    assert json.loads(json.dumps(found)) == found  # plain JSON: it crosses the state DB
    assert found["segment_options"] == ["crm-new", "crm-vip"]
    hubspot_fake.reset_counters()

    other = make(hubspot_fake)  # another worker's
    other.adopt(found)
    fields = {"crmsync_orders_count": 3, "crmsync_cart_abandoned": True}
    results = other.push([person("a@example.com", segments=["crm-vip"], fields=fields)])
    other.close()

    assert [r.outcome.value for r in results] == ["ok"]
    assert _property_calls(hubspot_fake) == {}  # no list, no read, no update
    stored = hubspot_fake.contact("a@example.com")
    assert stored is not None
    # the types it took over still shape the values (a bool as HubSpot's "true")
    assert stored.properties["crmsync_cart_abandoned"] == "true"
    assert hubspot_fake.values("a@example.com", SEGMENTS) == ["crm-vip"]


def test_expect_adds_the_missing_options_in_one_update_and_then_none(
    hubspot_fake: FakeHubSpot,
) -> None:
    dest = make(hubspot_fake)
    dest.prepare(specs())
    hubspot_fake.reset_counters()
    # names a push refuses (not crmsync's, holding ';') are no options of it either
    dest.expect(["crm-vip", "crm-new", "vip-by-hand", "crm-a;b"])
    assert _property_calls(hubspot_fake) == {READ: 1, PATCH: 1}
    assert hubspot_fake.properties[SEGMENTS].values() == ["crm-new", "crm-vip"]
    dest.expect(["crm-vip"])
    dest.push([person("a@example.com", segments=["crm-new", "crm-vip"])])
    assert _property_calls(hubspot_fake) == {READ: 1, PATCH: 1}
    dest.close()


def test_an_option_another_writer_dropped_is_put_back_and_the_batch_sent_again(
    hubspot_fake: FakeHubSpot,
) -> None:
    dest = make(hubspot_fake)
    dest.prepare(specs())
    dest.expect(["crm-vip"])
    # another writer read the options before that update and replaced them after it
    hubspot_fake.properties[SEGMENTS].options = [
        {"label": "crm-old", "value": "crm-old", "displayOrder": 0, "hidden": False}
    ]
    hubspot_fake.reset_counters()
    people = [person(f"p{i}@example.com", segments=["crm-vip"]) for i in range(3)]
    results = dest.push(people)
    dest.close()

    assert {r.outcome.value for r in results} == {"ok"}
    assert hubspot_fake.calls[UPSERT] == 2  # refused whole, then sent again: no halving
    assert _property_calls(hubspot_fake) == {READ: 1, PATCH: 1}
    assert hubspot_fake.properties[SEGMENTS].values() == ["crm-old", "crm-vip"]  # both kept
    assert hubspot_fake.values("p0@example.com", SEGMENTS) == ["crm-vip"]
