"""What both ways of writing HubSpot events (commerce objects, deals) do alike, against
the fake, without facts from the core: a resend creates nothing, a create whose answer
was lost is not made twice, a status of an order never sent fails for a later run, a
person without a contact or an e-mail is refused saying so, a backfill's past checkout
is not sent, a full batch takes one call per object kind, line items beyond a hundred
take more calls, refusals and server errors, a rate-limited call, a missing scope."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.hubspot import HubSpotDestination
from crmsync.contract import Outcome
from crmsync.errors import AuthError
from crmsync.events import EventKind
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.hubspot_commerce import live, objects
from tests.hubspot_modes import LINES_MADE, MUG, READ, SHIRT, Mode, event, mode, push

__all__ = ["hubspot_fake", "mode"]


@pytest.fixture
def dest(hubspot_fake: FakeHubSpot, mode: Mode) -> Iterator[HubSpotDestination]:
    hubspot_fake.add_contact("ayse@example.com")
    destination = mode.make(hubspot_fake)
    yield destination
    destination.close()


def test_a_resent_order_finds_the_one_made_and_creates_nothing(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    first = push(dest, event(EventKind.PLACED_ORDER))
    hubspot_fake.reset_counters()
    again = push(dest, event(EventKind.PLACED_ORDER), event(EventKind.PLACED_ORDER))
    key = "placed_order:shop_eu:1001"
    assert again[key].outcome is Outcome.OK and again[key].remote_id == first[key].remote_id
    assert len(live(hubspot_fake, mode.orders)) == 1
    assert len(live(hubspot_fake, "line_items")) == 2
    assert mode.calls(hubspot_fake) == {READ: 1, mode.call("search"): 1}


def test_an_order_whose_answer_was_lost_is_not_made_twice(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    path = f"/crm/v3/objects/{mode.orders}/batch/create"
    hubspot_fake.inject(500, method="POST", path=path, after=True, times=9)
    lost = push(dest, event(EventKind.PLACED_ORDER))
    assert lost["placed_order:shop_eu:1001"].outcome is Outcome.FAILED
    hubspot_fake.faults.pending.clear()
    again = push(dest, event(EventKind.PLACED_ORDER))
    assert again["placed_order:shop_eu:1001"].outcome is Outcome.OK
    assert len(live(hubspot_fake, mode.orders)) == 1
    assert hubspot_fake.calls[mode.call("create")] == 1  # the 500 was not resent


def test_a_status_for_an_order_never_sent_fails_for_a_later_run(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    results = push(dest, event(EventKind.REFUNDED_ORDER, "404", value="5", lines=()))
    found = results["refunded_order:shop_eu:404"]
    assert found.outcome is Outcome.FAILED and "order 404" in found.message
    assert not objects(hubspot_fake, mode.orders)


def test_no_contact_yet_or_no_email_is_rejected_with_the_reason(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    results = push(
        dest,
        event(EventKind.PLACED_ORDER, "1", email="nobody@example.com"),
        event(EventKind.STARTED_CHECKOUT, "c-1", email=None),
        event(EventKind.ORDERED_PRODUCT, "1", lines=(SHIRT,)),
        event(EventKind.PLACED_ORDER, "2"),
    )
    assert results["placed_order:shop_eu:1"].outcome is Outcome.REJECTED
    assert "no contact with this e-mail" in results["placed_order:shop_eu:1"].message
    assert results["started_checkout:shop_eu:c-1"].outcome is Outcome.REJECTED
    assert "e-mail" in results["started_checkout:shop_eu:c-1"].message
    assert results["ordered_product:shop_eu:1"].outcome is Outcome.REJECTED
    assert results["placed_order:shop_eu:2"].outcome is Outcome.OK
    made = live(hubspot_fake, mode.orders)
    assert [o.properties[mode.order_id] for o in made] == ["2"]
    assert len(live(hubspot_fake, "line_items")) == 2


def test_a_past_checkout_of_a_backfill_is_not_sent(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    results = push(dest, event(EventKind.STARTED_CHECKOUT, "c-1", historical=True))
    assert results["started_checkout:shop_eu:c-1"].outcome is Outcome.OK
    assert not objects(hubspot_fake, mode.carts) and not objects(hubspot_fake, "line_items")


def test_a_full_batch_takes_one_call_per_hundred_objects(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    for i in range(100):
        hubspot_fake.add_contact(f"p{i}@example.com")
    hubspot_fake.reset_counters()
    batch = [
        event(EventKind.PLACED_ORDER, str(i), email=f"p{i}@example.com", lines=(SHIRT,))
        for i in range(100)
    ]
    results = push(dest, *batch)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert len(live(hubspot_fake, mode.orders)) == 100
    # no facts handed over: contacts read, orders searched, line items and orders created
    assert mode.calls(hubspot_fake) == {
        READ: 1,
        mode.call("search"): 1,
        LINES_MADE: 1,
        mode.call("create"): 1,
    }
    assert not hubspot_fake.violations


def test_lines_beyond_a_hundred_go_in_more_calls(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    batch = [event(EventKind.PLACED_ORDER, str(i), lines=(SHIRT, MUG, SHIRT)) for i in range(40)]
    results = push(dest, *batch)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert hubspot_fake.calls[LINES_MADE] == 2  # 120 line items
    assert len(live(hubspot_fake, "line_items")) == 120
    for order in live(hubspot_fake, mode.orders):
        assert len([a for a in order.associations if a[0] == "line_items"]) == 3


def test_a_rate_limited_call_is_retried_after_its_wait(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    hubspot_fake.inject(429, method="POST", path=f"/crm/v3/objects/{mode.orders}/batch/create")
    results = push(dest, event(EventKind.PLACED_ORDER))
    assert results["placed_order:shop_eu:1001"].outcome is Outcome.OK
    assert hubspot_fake.calls[mode.call("create")] == 2
    assert len(live(hubspot_fake, mode.orders)) == 1


def test_a_missing_scope_is_an_error_naming_the_scopes(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    hubspot_fake.inject(403, method="POST", path=f"/crm/v3/objects/{mode.orders}/search")
    with pytest.raises(AuthError, match=mode.scope.replace(".", r"\.")):
        dest.push_events([event(EventKind.PLACED_ORDER)])


def test_a_refused_create_rejects_its_events_and_a_server_error_fails_them(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    hubspot_fake.inject(400, method="POST", path=f"/crm/v3/objects/{mode.orders}/batch/create")
    refused = push(dest, event(EventKind.PLACED_ORDER, "1"))
    assert refused["placed_order:shop_eu:1"].outcome is Outcome.REJECTED
    assert "refused by HubSpot" in refused["placed_order:shop_eu:1"].message
    hubspot_fake.inject(503, method="POST", path="/crm/v3/objects/line_items/batch/create")
    failed = push(dest, event(EventKind.PLACED_ORDER, "2"))
    assert failed["placed_order:shop_eu:2"].outcome is Outcome.FAILED
    assert hubspot_fake.calls[LINES_MADE] == 2  # the 503 was not resent
    assert not live(hubspot_fake, mode.orders)


def test_an_order_and_its_fulfilment_in_one_batch_need_no_second_search(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode
) -> None:
    results = push(
        dest,
        event(EventKind.PLACED_ORDER),
        event(EventKind.FULFILLED_ORDER, value=None, lines=()),
    )
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    name, value = mode.fulfilled
    assert live(hubspot_fake, mode.orders)[0].properties[name] == value
    assert hubspot_fake.calls[mode.call("search")] == 1
