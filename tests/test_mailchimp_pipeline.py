"""The whole flow into Mailchimp: files -> profiles -> the fake Mailchimp, through the CLI.

The fake validates every request against Mailchimp's OpenAPI spec and, on teardown, fails
the test if anyone ended subscribed without consent or after opting out.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync import normalize
from engine.resolve import load_config
from state import schema
from state.store import Store
from tests.e2e import Site, consented, edit_order, make_site
from tests.fakes.mailchimp import DEFAULT_FIELDS, FakeMailchimp, mailchimp_fake


@pytest.fixture
def site(
    tmp_path: Path, state_url: str, fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    site = make_site(tmp_path, state_url, customers=400, dirty_rate=0.05)
    _point_at(site, fake, monkeypatch)
    fake.expect_consented(consented(site.data))
    yield site


def report_of(site: Site) -> dict[str, Any]:
    result = site.cli("run", "--as-of", "2026-11-01T09:00:00+00:00", "--json")
    assert result.exit_code in (0, 5), result.output
    report: dict[str, Any] = json.loads(result.stdout)[0]
    return report


def ledger_tags(url: str) -> dict[str, set[str]]:
    store = Store(url)
    t = schema.ledger
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.person_key, t.c.memberships).where(t.c.destination == "mc")
        )
        out = {key[2:]: set(filter(None, tags.split("\n"))) for key, tags in rows}
    store.close()
    return out


def owned_tags(fake: FakeMailchimp) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for tag, emails in fake.tag_members().items():
        if tag.startswith("crm-"):
            for email in emails:
                out.setdefault(email, set()).add(tag)
    return out


def test_store_synced_then_second_run_writes_nothing_then_only_the_change(
    site: Site, fake: FakeMailchimp, state_url: str
) -> None:
    first = report_of(site)
    counts = first["destinations"]["mc"]
    assert counts["create"] > 300 and counts.get("failed", 0) == 0
    assert set(fake.merge_field_types()) >= {"FNAME", "ORDERS", "SPENT", "LASTORDER"}
    tags = ledger_tags(state_url)
    assert owned_tags(fake) == {e: t for e, t in tags.items() if t}
    statuses = fake.statuses()
    assert {s for s in statuses.values()} <= {"subscribed", "unsubscribed", "transactional"}
    assert all(statuses[e] == "subscribed" for e in consented(site.data) if e in statuses)

    fake.reset_counters()
    second = report_of(site)
    assert fake.writes() == 0
    assert second["destinations"]["mc"].get("create", 0) == 0
    assert second["destinations"]["mc"].get("update", 0) == 0

    mapping = load_config(site.config).destinations["mc"].mapping
    vip, repeat = mapping.membership_for("vip"), mapping.membership_for("repeat")
    person = next(e for e, t in sorted(tags.items()) if repeat in t and vip not in t)
    fake.tag_by_hand("Hand picked", [person])
    before = {e: dict(m["merge_fields"]) for e, m in _members(fake).items()}
    orders = [
        json.loads(line)
        for line in (site.data / "orders.jsonl").read_text(encoding="utf-8").splitlines()
        if line.startswith("{")
    ]
    order = next(o for o in orders if str(o.get("email", "")).lower() == person)
    edit_order(
        site.data / "orders.jsonl",
        order["id"],
        total_price="25000.00",
        updated_at="2026-10-31T12:00:00+03:00",
        created_at="2026-10-30T12:00:00+03:00",
    )
    fake.reset_counters()
    third = report_of(site)
    assert third["destinations"]["mc"]["update"] == 1
    after = {e: dict(m["merge_fields"]) for e, m in _members(fake).items()}
    changed = {e for e in after if after[e] != before.get(e)}
    assert changed == {person}
    assert vip in fake.tags_of(person) and "Hand picked" in fake.tags_of(person)
    assert owned_tags(fake) == {e: t for e, t in ledger_tags(state_url).items() if t}


def test_a_first_sync_creates_each_tag_carrying_its_first_members(
    tmp_path: Path, fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in segments' tags are new on a first sync: each is created with its first
    (up to 500) members, instead of an empty create followed by a separate add call. So the
    writes are the merge fields, ⌈people/500⌉ upserts, one create per tag, and tag calls
    only for members beyond a tag's first 500 (with 400 customers: 20 writes, 29 before)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=400, dirty_rate=0.05)
    _point_at(site, fake, monkeypatch)
    fake.expect_consented(consented(site.data))
    fake.reset_counters()
    report_of(site)

    sizes = Counter(tag for owned in owned_tags(fake).values() for tag in owned)
    created_fields = len(fake.audience.merge_fields) - len(DEFAULT_FIELDS)
    expected = {
        ("POST", "/lists/{list_id}/merge-fields"): created_fields,
        ("POST", "/lists/{list_id}"): math.ceil(len(fake.audience.members) / 500),
        ("POST", "/lists/{list_id}/segments"): len(sizes),
        ("POST", "/lists/{list_id}/segments/{segment_id}"): sum(
            math.ceil(max(n - 500, 0) / 500) for n in sizes.values()
        ),
    }
    writes = {call: n for call, n in fake.calls.items() if call[0] != "GET"}
    assert writes == {call: n for call, n in expected.items() if n}
    assert fake.writes() == sum(expected.values())
    assert fake.tagged_on_create == sum(min(n, 500) for n in sizes.values())
    assert len(sizes) >= 5  # most built-in segments have members in the sample store


def _members(fake: FakeMailchimp) -> dict[str, dict[str, Any]]:
    return {m["email_address"].lower(): m for m in fake.audience.members.values()}


def test_an_unsubscribe_in_mailchimp_is_read_back_shown_exported_and_wins(
    site: Site, fake: FakeMailchimp
) -> None:
    report_of(site)
    person = sorted(consented(site.data) & set(fake.statuses()))[0]
    fake.set_status(person, "unsubscribed", at=datetime.now(UTC))

    second = report_of(site)
    assert second["consent_read"]["mc"] == 1
    assert fake.statuses()[person] == "unsubscribed"
    status = site.cli("status", "--json")
    read_back = json.loads(status.stdout)[0]["consent_read_back"]
    assert [(c["email"], c["state"]) for c in read_back] == [(person, "unsubscribed")]
    export = site.cli("consent", "--pipeline", "main")
    assert export.exit_code == 0
    assert f"{person},email,unsubscribed,mc" in export.stdout

    fake.reset_counters()
    report_of(site)  # the platform still says "subscribed" (older): the opt-out wins
    assert fake.statuses()[person] == "unsubscribed"
    assert fake.writes() == 0


@pytest.fixture
def fake(mailchimp_fake: FakeMailchimp) -> FakeMailchimp:
    return mailchimp_fake


__all__ = ["mailchimp_fake"]


@pytest.mark.slow
def test_twenty_thousand_customers_end_exactly_as_the_ledger_says(
    tmp_path: Path, fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=20_000)
    _point_at(site, fake, monkeypatch)
    fake.expect_consented(consented(site.data))
    first = report_of(site)
    assert first["destinations"]["mc"]["create"] > 19_000
    assert first["destinations"]["mc"].get("failed", 0) == 0

    store = Store(url)
    t = schema.ledger
    with store.engine.connect() as conn:
        acked = {
            key[2:]: (json.loads(payload), set(filter(None, tags.split("\n"))))
            for key, payload, tags in conn.execute(
                sa.select(t.c.person_key, t.c.payload, t.c.memberships).where(
                    t.c.status == "synced"
                )
            )
        }
    store.close()
    members = _members(fake)
    assert set(members) == set(acked)  # nobody missing, nobody extra, nobody twice
    for email, (payload, _) in acked.items():
        assert members[email]["merge_fields"] == payload, email
    assert owned_tags(fake) == {e: tags for e, (_, tags) in acked.items() if tags}

    fake.reset_counters()
    report_of(site)
    assert fake.writes() == 0


def _point_at(site: Site, fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_MAILCHIMP_KEY", fake.api_key)
    site.send_to(
        "mc",
        f'kind = "mailchimp"\napi_key = "${{CRMSYNC_TEST_MAILCHIMP_KEY}}"\n'
        f'list_id = "{fake.list_id}"\nbase_url = "{fake.base_url}"\n'
        "[destinations.mc.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )


def test_a_customer_deleted_in_the_platform_is_archived_once(
    site: Site, fake: FakeMailchimp, state_url: str
) -> None:
    report_of(site)
    rows = (site.data / "customers.csv").read_text(encoding="utf-8").splitlines()
    header = rows[0].split(",")
    email_at, deleted_at, updated_at = (header.index(c) for c in ("email", "deleted", "updated_at"))
    target = None
    for i, row in enumerate(rows[1:], start=1):
        cells = row.split(",")
        if len(cells) == len(header) and cells[deleted_at] == "false" and cells[email_at]:
            email = normalize.email(cells[email_at])
            if email in fake.statuses():
                cells[deleted_at], cells[updated_at] = "true", "2026-10-31T23:00:00+03:00"
                rows[i], target = ",".join(cells), email
                break
    assert target is not None
    (site.data / "customers.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    second = report_of(site)
    assert second["destinations"]["mc"]["archive"] == 1
    assert fake.statuses()[target] == "archived"
    fake.reset_counters()
    report_of(site)
    assert fake.writes() == 0
