"""The two ways the HubSpot destination writes events (``[events] objects``: commerce
objects, deals), as the tests see them at the fake: a destination of each, and the
names its objects, calls and properties have there, so one test proves what both do
alike (they share one mechanism: ``connectors.hubspot.object_events``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connectors.http import BudgetRegistry
from connectors.hubspot import HubSpotConfig, HubSpotDestination
from crmsync.contract import ConnectorContext
from crmsync.events import Event, EventLine, EventResult
from tests.builders import an_event
from tests.e2e import AS_OF, Site, edit_order
from tests.events_site import edit_cart, jsonl
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.hubspot_deals import pipelines

CONTEXT = ConnectorContext("hubspot_events", Path("."))
CHECKOUTS = {"checkout_pipeline": "carts", "checkout_stage": "abandoned"}  # deals' carts
READ = ("POST", "read_contacts")
LINES_MADE = ("POST", "create_line_items")
SOURCE = "shop_eu"
PLACED = datetime(2026, 3, 1, 23, 30, tzinfo=ZoneInfo("Europe/Istanbul"))  # 20:30 UTC
SHIRT = EventLine("p-1", "Linen shirt", 2, Decimal("30.00"), sku="p-1-M")
MUG = EventLine("p-2", "Mug", 1, Decimal("12.50"))

event = partial(an_event, source=SOURCE, at=PLACED, currency="EUR", lines=(SHIRT, MUG))


def make(fake: FakeHubSpot, **table: Any) -> HubSpotDestination:
    """A HubSpot destination on the fake, without waits; ``table``: config keys."""
    config = HubSpotConfig.model_validate(
        {
            "access_token": fake.token,
            "base_url": fake.base_url,
            "http": {"retry": {"backoff_initial": 0.0, "backoff_max": 0.0}},
            **table,
        }
    )
    budgets = BudgetRegistry(sleep=lambda s: None)
    return HubSpotDestination(config, CONTEXT, sleep=lambda s: None, budgets=budgets)


def make_deals(fake: FakeHubSpot, **events: Any) -> HubSpotDestination:
    """One writing events as deals; ``events``: the ``[events]`` table's other keys."""
    return make(fake, events={"objects": "deals", **events})


def push(dest: HubSpotDestination, *events: Event) -> dict[str, EventResult]:
    """One batch pushed: its results by key, exactly one per event."""
    results = dest.push_events(events)
    assert sorted(r.key for r in results) == sorted(e.key for e in events)
    return {r.key: r for r in results}


def with_cart_stages(fake: FakeHubSpot) -> FakeHubSpot:
    """The fake account with the deal pipeline ``CHECKOUTS`` names."""
    pipelines(fake)["carts"] = ["abandoned", "recovered"]
    return fake


@dataclass(frozen=True)
class Mode:
    """One way of writing the events, as the tests see it at the fake."""

    orders: str  # the object type orders are written as
    carts: str  # ... checkouts
    to_contact: int  # the order's association type to its contact
    order_id: str  # the property that holds the source's order id
    fulfilled: tuple[str, str]  # what a fulfilment writes on the order's object
    refunded: tuple[str, str]  # ... a refund of 5
    scope: str  # a write scope the 403 error names
    make: Callable[[FakeHubSpot], HubSpotDestination]

    def call(self, verb: str, kind: str | None = None) -> tuple[str, str]:
        """The fake's counter of one call on the orders' (or ``kind``'s) objects."""
        return ("POST", f"{verb}_{kind or self.orders}")

    def counted(self, name: str) -> bool:
        """An event's call (not the deal properties' set-up, made once per run)."""
        return name == READ[1] or name.endswith((f"_{self.orders}", f"_{self.carts}", "_items"))

    def calls(self, fake: FakeHubSpot) -> dict[tuple[str, str], int]:
        """The events' calls the fake counted, by name, those made."""
        return {name: n for name, n in fake.calls.items() if n and self.counted(name[1])}


COMMERCE = Mode(
    "orders",
    "carts",
    507,
    "hs_external_order_id",
    ("hs_fulfillment_status", "fulfilled"),
    ("hs_payment_status", "refunded"),
    "crm.objects.orders.write",
    make,
)
DEALS = Mode(
    "deals",
    "deals",
    3,
    "crmsync_order_id",
    ("crmsync_order_status", "fulfilled"),
    ("crmsync_refunded", "5"),
    "crm.objects.deals.write",
    partial(make_deals, **CHECKOUTS),
)
MODES = {"commerce": COMMERCE, "deals": DEALS}


@pytest.fixture(params=list(MODES.values()), ids=list(MODES))
def mode(request: pytest.FixtureRequest, hubspot_fake: FakeHubSpot) -> Mode:
    """Each way of writing events in turn (a test module imports this fixture)."""
    with_cart_stages(hubspot_fake)
    found: Mode = request.param
    return found


# -- end to end: a generated store's pipeline sending its events to the fake --------

ABANDON = timedelta(hours=4)  # profile.abandoned_cart_hours' default
LIVE = timedelta(hours=24)  # events_live_hours' default: older events go as historical
FAST = 2_000  # the fake's and the config's calls per ten seconds: no waits


def point_at(
    site: Site, fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch, events: str = ""
) -> None:
    """The site's pipeline sends to the fake HubSpot as ``hs``; ``events``: the lines of
    its ``[events]`` table (none: commerce objects)."""
    fake.per_ten_seconds = FAST
    monkeypatch.setenv("CRMSYNC_TEST_HUBSPOT_TOKEN", fake.token)
    table = f"[destinations.hs.events]\n{events}" if events else ""
    site.send_to(
        "hs",
        'kind = "hubspot"\naccess_token = "${CRMSYNC_TEST_HUBSPOT_TOKEN}"\n'
        f'base_url = "{fake.base_url}"\n{table}'
        f"[destinations.hs.rate_limits]\nper_ten_seconds = {FAST}\n"
        "[destinations.hs.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )


def abandoned_carts(site: Site) -> tuple[dict[str, dict[str, Any]], list[str], str]:
    """The store's carts by id, those abandoned recently enough to be sent (by id), and
    the first of them, made converted into an order in time (so never sent)."""
    as_of = datetime.fromisoformat(AS_OF)
    carts = {str(c["id"]): c for c in jsonl(site.data / "carts.jsonl")}

    def changed(cart: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(str(cart.get("updated_at") or cart["created_at"]))

    recent = sorted(
        cid
        for cid, c in carts.items()
        if not c.get("completed_at")
        and c.get("email")
        and as_of - LIVE <= changed(c) <= as_of - ABANDON
    )
    assert len(recent) >= 2, "the store needs recent abandoned carts for this test"
    edit_cart(site.data / "carts.jsonl", recent[0], completed_at="2026-10-31T10:00:00+03:00")
    return carts, recent, recent[0]


def refund_one(site: Site, orders: dict[str, dict[str, Any]], sent: set[str]) -> dict[str, Any]:
    """A fulfilled order of ``sent`` refunded 100.00 at the source, then two runs."""
    refundable = next(
        o
        for oid, o in orders.items()
        if oid in sent and o["status"] == "fulfilled" and o["total_refunded"] == "0.00"
    )
    edit_order(
        site.data / "orders.jsonl",
        refundable["id"],
        total_refunded="100.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    site.run_report()
    site.run_report()
    return refundable


def first_run(site: Site, fake: FakeHubSpot) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The site's run, every event sent; its orders by id, and the ids of those whose
    person HubSpot has a contact for (the orders HubSpot must hold, once each)."""
    code, report = site.run_report()
    assert code in (0, 5), report
    counts = report["events"]["hs"]
    assert counts.get("failed", 0) == 0 and counts["ok"] > 0, report
    orders = {str(o["id"]): o for o in jsonl(site.data / "orders.jsonl")}
    contacts = {c.email for c in fake.contacts().values()}
    sent = {oid for oid, o in orders.items() if str(o.get("email") or "").lower() in contacts}
    assert sent, "the store needs orders of people HubSpot has contacts for"
    return orders, sent


def writes_again(site: Site, fake: FakeHubSpot, names: Iterable[str]) -> int:
    """The writes (calls named ``names``) of one more run over the same data."""
    fake.reset_counters()
    code, again = site.run_report()
    assert code in (0, 5), again
    return writes(fake, names)


def writes(fake: FakeHubSpot, names: Iterable[str]) -> int:
    """The calls named ``names`` the fake counted."""
    wanted = set(names)
    return sum(n for (_, name), n in fake.calls.items() if name in wanted)
