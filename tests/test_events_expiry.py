"""Cart expiry (issue 14, item 4): an open cart left unchanged for ``cart_expiry_days``
whose started checkout a destination acknowledged gets its *checkout closed* once, found
by a later run with no source change through an index range; a cart that expired before
it was ever sent as abandoned sends nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync.config import PipelineSettings
from engine.events import cart_events, closings, expiry_event, is_expired, plan_window
from state.events import ClosableCheckout, StagedCart, event_cursor
from state.store import Store
from state.timeutil import to_ms
from tests.e2e import AS_OF
from tests.events_site import by_key, edit_cart, event_ledger_keys, events, events_site, jsonl

HOUR = 3_600_000
DAY = 24 * HOUR
CHANGED = "2026-10-31T12:00:00+03:00"  # 09:00Z: abandoned by AS_OF, expires 30 days on


def _cart(changed: datetime, converted: bool = False) -> StagedCart:
    ms = to_ms(changed)
    assert ms is not None
    return StagedCart(
        "shop", "k1", "c1", "a@example.com", None, "e:a@example.com", "TRY", 10_000,
        "https://shop.example/k1", converted, ms, ms, ms, None,
    )  # fmt: skip


def test_a_cart_past_the_expiry_time_starts_no_checkout_and_one_within_it_does() -> None:
    as_of = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    as_of_ms = to_ms(as_of)
    assert as_of_ms is not None
    fresh, stale = _cart(as_of - timedelta(days=29)), _cart(as_of - timedelta(days=30))
    assert [e.key for e in cart_events(fresh, as_of_ms, 4 * HOUR, expiry_ms=30 * DAY)] == [
        "started_checkout:shop:k1"
    ]
    assert cart_events(stale, as_of_ms, 4 * HOUR, expiry_ms=30 * DAY) == []
    assert is_expired(stale, as_of_ms, 30 * DAY)
    assert not is_expired(stale, as_of_ms, None)  # no expiry: never
    assert not is_expired(_cart(as_of - timedelta(days=40), converted=True), as_of_ms, 30 * DAY)


def test_the_closing_of_an_expired_cart_is_timed_at_its_expiry() -> None:
    changed = to_ms(datetime(2026, 10, 31, 9, 0, tzinfo=UTC))
    assert changed is not None
    checkout = ClosableCheckout("shop", "k1", "e:a@example.com", "TRY", changed, "a@example.com")
    event = expiry_event(checkout, 30 * DAY)
    assert event.key == "checkout_closed:shop:k1"
    assert event.occurred_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert event.properties == {"cart_id": "k1", "converted": False, "expired": True}
    assert event.email == "a@example.com" and event.person_key == "e:a@example.com"


def test_cart_expiry_days_must_outlast_the_abandonment_time() -> None:
    settings = PipelineSettings(sources=["shop"], destinations=["out"])
    assert settings.cart_expiry_days == 30
    with pytest.raises(ValueError, match="cart_expiry_days"):
        PipelineSettings(
            sources=["shop"],
            destinations=["out"],
            cart_expiry_days=0.1,  # 2.4 hours
            profile={"abandoned_cart_hours": 4},  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError):
        PipelineSettings(sources=["shop"], destinations=["out"], cart_expiry_days=0)


def _open_cart(site: Any) -> dict[str, Any]:
    return next(c for c in jsonl(site.data / "carts.jsonl") if not c.get("completed_at"))


def _closings(site: Any, cart_id: str) -> list[dict[str, Any]]:
    return [e for e in events(site) if e["key"] == f"checkout_closed:shop:{cart_id}"]


def _run(site: Any, as_of: str) -> dict[str, Any]:
    result = site.cli("run", "--as-of", as_of, "--json")
    assert result.exit_code in (0, 5), result.output
    report: dict[str, Any] = json.loads(result.stdout)[0]
    return report


def test_an_abandoned_cart_left_unchanged_is_closed_once_when_it_expires(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    site = events_site(tmp_path, url)
    cart = _open_cart(site)
    edit_cart(site.data / "carts.jsonl", cart["id"], updated_at=CHANGED)
    site.run_json()
    started = f"started_checkout:shop:{cart['id']}"
    assert started in by_key(events(site))

    # no source change from here on: only time passes
    _run(site, "2026-11-30T08:59:00+00:00")  # a minute before it expires
    assert _closings(site, cart["id"]) == []
    _run(site, "2026-11-30T09:00:00+00:00")  # 30 days after its last change
    [closed] = _closings(site, cart["id"])
    assert closed["occurred_at"] == "2026-11-30T09:00:00+00:00"
    assert closed["properties"]["expired"] is True
    assert closed["email"] == cart["email"]

    before = {e["key"] for e in events(site)}
    again = _run(site, "2026-12-01T09:00:00+00:00")
    assert len(_closings(site, cart["id"])) == 1  # closed once
    assert [e["key"] for e in events(site)].count(started) == 1
    new = [e for e in events(site) if e["key"] not in before]
    assert all(e["kind"] == "checkout_closed" for e in new)  # only other carts' expiries
    assert again["status"] == "succeeded"
    assert f"checkout_closed:shop:{cart['id']}" in event_ledger_keys(url)


def test_every_cart_the_destination_got_is_closed_by_its_expiry_and_none_other(
    tmp_path: Path,
) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    site.run_json()
    started = {e["record_id"] for e in events(site) if e["kind"] == "started_checkout"}
    assert started
    _run(site, "2026-12-02T09:00:00+00:00")  # past every sample cart's expiry (a month at most)
    closed = [e["record_id"] for e in events(site) if e["kind"] == "checkout_closed"]
    assert sorted(closed) == sorted(started)
    _run(site, "2026-12-03T09:00:00+00:00")
    assert [e["record_id"] for e in events(site) if e["kind"] == "checkout_closed"] == closed


def test_a_cart_that_expired_before_it_was_sent_as_abandoned_sends_nothing(
    tmp_path: Path,
) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    cart = _open_cart(site)
    edit_cart(site.data / "carts.jsonl", cart["id"], updated_at="2026-09-20T12:00:00+03:00")
    site.run_json()
    _run(site, "2026-11-20T09:00:00+00:00")
    assert [e for e in events(site) if e["record_id"] == cart["id"]] == []


def test_a_shorter_expiry_is_a_pipeline_setting(tmp_path: Path) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    site.config.write_text(
        site.config.read_text(encoding="utf-8") + "cart_expiry_days = 2\n", encoding="utf-8"
    )
    cart = _open_cart(site)
    edit_cart(site.data / "carts.jsonl", cart["id"], updated_at=CHANGED)
    site.run_json()
    _run(site, "2026-11-02T08:59:00+00:00")
    assert _closings(site, cart["id"]) == []
    _run(site, "2026-11-02T09:00:00+00:00")
    [closed] = _closings(site, cart["id"])
    assert closed["occurred_at"] == "2026-11-02T09:00:00+00:00"


@contextmanager
def _statements(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements run on ``store`` inside the block, with their parameters."""
    found: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any) -> None:
        found.append((statement, params))

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        yield found
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)


def test_the_carts_crossing_the_expiry_time_are_found_without_a_scan_of_the_carts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No scan of every cart per run: the expired carts come from a range of the carts'
    last-change index, or (SQLite's plan) from the destination's acknowledged checkouts
    with a seek per cart, a page at a time (pages of 3 find the same carts)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    site = events_site(tmp_path, url)
    site.run_json()
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            cursor = event_cursor(conn, "main")
        as_of = datetime.fromisoformat(AS_OF) + timedelta(days=31)
        window = plan_window(store, ["shop"], cursor, as_of, 4, None, 24, 30)
        with _statements(store) as captured:
            closed = list(closings(store, "out", ["shop"], "TRY", window, to_ms(as_of) or 0))
        assert closed, "the sample's abandoned carts have all expired a month on"
        monkeypatch.setattr("state.events.PAGE", 3)
        paged = list(closings(store, "out", ["shop"], "TRY", window, to_ms(as_of) or 0))
        assert [e.key for e in paged] == [e.key for e in closed] and len(closed) > 3
        expiry = [(s, p) for s, p in captured if "coalesce(carts.updated_at" in s]
        assert expiry, captured
        with store.engine.connect() as conn:
            for statement, params in expiry:
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
                steps = " | ".join(str(row[-1]) for row in plan)
                # by the range of the carts' change index, or from the destination's
                # checkouts with a seek per cart (SQLite's choice): never every cart
                assert "SCAN carts" not in steps, steps
                assert "ix_carts_changed" in steps or "sqlite_autoindex_carts" in steps, steps
                assert "ix_event_ledger_record" in steps or "sqlite_autoindex" in steps, steps
    finally:
        store.close()
