"""The whole flow into HubSpot through the CLI: files -> profiles -> the fake HubSpot.

A generated store lands with every contact's properties, segment options and list
memberships exactly as the ledger says; a second run writes nothing; one changed order
sends that one person and moves only their owned options and lists. The fake checks every
request against HubSpot's reference and, on teardown, that nobody was subscribed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.hubspot.payloads import encode
from state import schema
from state.store import Store
from tests.e2e import Site, edit_order, make_site
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake

__all__ = ["hubspot_fake"]
SEGMENTS = "crmsync_segments"
VIP = "crm-VIP"  # connectors/hubspot/mapping.toml names the vip segment so
RECENT = {"crm-new", "crm-repeat"}
UPSERT = ("POST", "upsert_contacts")
MOVE = ("PUT", "move_members")
FAST = 2_000  # requests per 10 s in the fake and the config: the limits have their own tests


def point_at(site: Site, fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_HUBSPOT_TOKEN", fake.token)
    fake.per_ten_seconds = FAST
    site.send_to(
        "hs",
        'kind = "hubspot"\naccess_token = "${CRMSYNC_TEST_HUBSPOT_TOKEN}"\n'
        f'base_url = "{fake.base_url}"\nlists = true\n'
        f"[destinations.hs.rate_limits]\nper_ten_seconds = {FAST}\n"
        "[destinations.hs.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )


def ledger(site: Site) -> dict[str, tuple[str, dict[str, Any], set[str]]]:
    """person key -> (record id, fields, memberships) of everyone synced."""
    store = Store(f"sqlite:///{site.root / 'state.db'}")
    t = schema.ledger
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.person_key, t.c.remote_id, t.c.payload, t.c.memberships).where(
                t.c.destination == "hs", t.c.status == "synced"
            )
        )
        out = {
            key: (remote, json.loads(payload), set(filter(None, groups.split("\n"))))
            for key, remote, payload, groups in rows
        }
    store.close()
    return out


def holds_the_ledger(
    site: Site, fake: FakeHubSpot, lists: bool = True
) -> dict[str, tuple[str, dict[str, Any], set[str]]]:
    """Every contact as the ledger says: its properties, its segment options and (with
    ``lists``) its lists."""
    acked = ledger(site)
    contacts = {c.id: c for c in fake.contacts_by_id.values() if not c.archived}
    assert sorted(remote for remote, _, _ in acked.values()) == sorted(contacts)  # nobody twice
    in_lists = fake.memberships()
    for key, (remote, fields, groups) in acked.items():
        contact = contacts[remote]
        assert key == f"e:{contact.email}"
        options = {v for v in fake.values(contact.email, SEGMENTS) if v.startswith("crm-")}
        assert options == groups, key
        assert in_lists.get(remote, set()) == (groups if lists else set()), key
        for name, value in fields.items():
            kind = fake.properties[name].type
            assert contact.properties.get(name, "") == encode(value, kind), (key, name)
    assert all(each.processing_type == "MANUAL" for each in fake.lists.values())
    return acked


def changed_order_moves_one_person(site: Site, fake: FakeHubSpot, acked: dict[str, Any]) -> None:
    orders = [
        json.loads(line)
        for line in (site.data / "orders.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    buyers = {order.get("email") for order in orders}
    # a recent buyer not yet a VIP: a large order makes them one
    person = next(
        key
        for key in sorted(acked)
        if RECENT & acked[key][2] and VIP not in acked[key][2] and key[2:] in buyers
    )
    order = max(
        (order for order in orders if order.get("email") == person[2:]),
        key=lambda order: str(order.get("created_at") or ""),
    )
    edit_order(site.data / "orders.jsonl", order["id"], total_price="250000.00")
    fake.reset_counters()
    lists_before = {x.id: set(x.members) for x in fake.lists.values()}
    third = site.run_json()["destinations"]["hs"]
    assert third.get("update") == 1 and third.get("create", 0) == 0, third
    assert fake.calls[UPSERT] == 1
    after = holds_the_ledger(site, fake)
    _, _, groups = after[person]
    moved = groups ^ acked[person][2]
    assert moved, (acked[person][2], groups)
    assert fake.calls[MOVE] == len(moved)  # one call per list joined or left
    for each in fake.lists.values():
        if each.name not in moved:
            assert each.members == lists_before.get(each.id, set()), each.name


def test_a_store_lands_as_the_ledger_says_then_a_second_run_writes_nothing(
    tmp_path: Path, hubspot_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=2_000)
    point_at(site, hubspot_fake, monkeypatch)
    counts = site.run_json()["destinations"]["hs"]
    assert counts.get("failed", 0) == 0 and counts["ok"] > 1_500, counts
    acked = holds_the_ledger(site, hubspot_fake)
    assert hubspot_fake.lists and hubspot_fake.memberships()

    hubspot_fake.reset_counters()
    site.run_json()
    assert hubspot_fake.writes() == 0

    changed_order_moves_one_person(site, hubspot_fake, acked)


@pytest.mark.slow
def test_twenty_thousand_customers_land_as_the_ledger_says(
    tmp_path: Path, hubspot_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=20_000)
    point_at(site, hubspot_fake, monkeypatch)
    counts = site.run_json()["destinations"]["hs"]
    assert counts.get("failed", 0) == 0 and counts["ok"] > 15_000, counts
    acked = holds_the_ledger(site, hubspot_fake)
    hubspot_fake.reset_counters()
    site.run_json()
    assert hubspot_fake.writes() == 0
    changed_order_moves_one_person(site, hubspot_fake, acked)
