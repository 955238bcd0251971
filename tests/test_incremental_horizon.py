"""Time boundaries: when a person's rules and profile fields next change with time alone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from crmsync.config import ProfileSettings
from crmsync.fields import catalogue
from crmsync.profile_scope import ProfileContext
from crmsync.rule_horizon import RuleHorizon
from crmsync.segments import SegmentSet
from engine.profiles import DAY_MS, ProfileBuilder
from state.profile_reads import PROFILE_STREAMS
from state.timeutil import to_ms

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
FIELDS = catalogue()
TICK = timedelta(microseconds=1)


def next_change(rule: str, profile: dict[str, Any], now: datetime = NOW) -> datetime | None:
    return RuleHorizon.compile({"r": rule}, FIELDS).next_change(profile, now)


@pytest.mark.parametrize(
    ("rule", "profile", "expected"),
    [
        # a field against now minus a duration flips when the field leaves the window
        (
            "last_order_at >= now - days(30)",
            {"last_order_at": NOW - timedelta(days=10)},
            NOW + timedelta(days=20),
        ),
        (
            "now - last_order_at > days(90)",
            {"last_order_at": NOW - timedelta(days=10)},
            NOW + timedelta(days=80),
        ),
        # already crossed for good: never again
        ("last_order_at < now - days(30)", {"last_order_at": NOW - timedelta(days=40)}, None),
        # null stays null
        ("last_order_at < now - days(30)", {"last_order_at": None}, None),
        # calendar units in now's zone
        ("birthday_month == month(now)", {"birthday_month": 4}, datetime(2026, 4, 1, tzinfo=UTC)),
        ("birthday_month == month(today + days(7))", {}, datetime(2026, 3, 25, tzinfo=UTC)),
        ("day(now - hours(5)) == 1", {}, datetime(2026, 3, 11, 5, tzinfo=UTC)),
        (
            "today - birthday > days(3)",
            {"birthday": date(2000, 1, 1)},
            datetime(2026, 3, 11, tzinfo=UTC),
        ),
        ("year(now) == 2027", {}, datetime(2027, 1, 1, tzinfo=UTC)),
        # nothing about time
        ('orders_count >= 2 and city == "İzmir"', {"orders_count": 3}, None),
        # a shape the reader does not know: may change at any moment
        ('now in [datetime("2026-01-01T00:00:00Z")]', {}, NOW + TICK),
    ],
)
def test_the_next_change_of_a_rule(
    rule: str, profile: dict[str, Any], expected: datetime | None
) -> None:
    assert next_change(rule, profile) == expected


def test_no_answer_changes_before_the_next_change() -> None:
    """Between now and the instant found, the compiled rule answers the same everywhere."""
    rules = {
        "a": "last_order_at >= now - days(30) and orders_count > 1",
        "b": "not (first_order_at < now - hours(36)) or month(today) == 4",
        "c": "now - days(2) - cart_updated_at <= hours(5)",
    }
    segments = SegmentSet.compile(rules, FIELDS)
    horizon = RuleHorizon.compile(rules, FIELDS)
    profile = {
        "last_order_at": NOW - timedelta(days=29, hours=23),
        "orders_count": 2,
        "first_order_at": NOW - timedelta(hours=30),
        "cart_updated_at": NOW - timedelta(days=2, hours=3),
    }
    now = NOW
    for _ in range(6):
        turn = horizon.next_change(profile, now)
        assert turn is not None
        before = segments.evaluate(profile, now)
        for probe in (now + (turn - now) * k / 10 for k in range(10)):
            assert segments.evaluate(profile, probe) == before
        now = turn + TICK


def _builder(watched: set[str]) -> ProfileBuilder:
    ctx = ProfileContext(("shop",), ("shop",), "TRY", to_ms(NOW) or 0, ProfileSettings())
    return ProfileBuilder(ctx, frozenset(watched))


def _slots(orders: list[tuple[int, bool]], carts: list[int] = ()) -> list[Any]:  # type: ignore[assignment]
    slots: list[Any] = [None] * PROFILE_STREAMS
    slots[1] = [
        ("e:a@example.com", placed, counted, 1000, False, None, placed)
        for placed, counted in orders
    ] or None
    slots[2] = [("e:a@example.com", 500, 1, "u", "TRY", at) for at in carts] or None
    return slots


AS_OF = to_ms(NOW) or 0


def test_spend_windows_end_when_the_earliest_order_in_them_leaves() -> None:
    builder = _builder({"spent_30d", "orders_90d"})
    orders = [
        (AS_OF - 20 * DAY_MS, True),
        (AS_OF - 50 * DAY_MS, True),
        (AS_OF - 400 * DAY_MS, True),
    ]
    built = builder.build_planned("e:a@example.com", _slots(orders))
    assert built is not None and built[0] is not None
    assert built[2] == AS_OF + 10 * DAY_MS  # the 20-day-old order leaves the 30-day window


def test_a_field_nobody_reads_sets_no_boundary() -> None:
    orders = [(AS_OF - 20 * DAY_MS, True)]
    assert _builder(set()).build_planned("e:a@example.com", _slots(orders))[2] is None  # type: ignore[index]
    days = _builder({"days_since_last_order"}).build_planned("e:a@example.com", _slots(orders))
    assert days is not None and days[2] == AS_OF + DAY_MS


def test_recency_and_lifecycle_limits_and_cart_abandonment() -> None:
    orders = [(AS_OF - 85 * DAY_MS, True)]
    rfm = _builder({"rfm_score"}).build_planned("e:a@example.com", _slots(orders))
    assert rfm is not None and rfm[2] == AS_OF - 85 * DAY_MS + 91 * DAY_MS  # past 90 days
    stage = _builder({"lifecycle_stage"}).build_planned("e:a@example.com", _slots(orders))
    assert stage is not None and stage[2] == AS_OF + 5 * DAY_MS  # at risk from 90 days
    cart = _builder({"cart_abandoned"}).build_planned(
        "e:a@example.com", _slots([], [AS_OF - 3_600_000])
    )
    assert cart is not None and cart[2] == AS_OF + 3 * 3_600_000  # abandoned after 4 hours


def test_rows_dated_after_as_of_count_from_their_time_and_make_someone_then() -> None:
    later = AS_OF + 5 * DAY_MS
    nobody_yet = _builder(set()).build_planned("e:a@example.com", _slots([(later, True)]))
    assert nobody_yet == (None, None, later)
    someone = _builder(set()).build_planned(
        "e:a@example.com", _slots([(AS_OF - DAY_MS, True), (later, True)])
    )
    assert someone is not None and someone[0] is not None
    assert someone[0]["orders_count"] == 1 and someone[2] == later
