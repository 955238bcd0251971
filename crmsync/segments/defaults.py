"""The segments crmsync ships with, used when a pipeline's configuration names none.

Amounts are in the pipeline's currency (TRY by default); ``vip`` needs the 365-day spend
window, which the default windows (30, 90, 365) provide. Recency segments are disjoint
by construction: ``at_risk`` is a last order 90-180 days ago and ``lapsed`` is older.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

DEFAULT_SEGMENTS: Mapping[str, str] = MappingProxyType(
    {
        # first ever order within the last 30 days: time for the welcome series
        "new": "first_order_at >= now - days(30)",
        # bought at least twice
        "repeat": "orders_count >= 2",
        # five or more orders and still active (an order within 180 days)
        "loyal": "orders_count >= 5 and last_order_at >= now - days(180)",
        # 10,000 or more spent in the last 365 days (pipeline currency, TRY by default)
        "vip": "spent_365d >= 10000",
        # a repeat customer whose last order was 90 to 180 days ago: win them back now
        "at_risk": (
            "orders_count >= 2 and last_order_at < now - days(90)"
            " and last_order_at >= now - days(180)"
        ),
        # ordered before, but not for more than 180 days (null last_order_at: never ordered)
        "lapsed": "last_order_at < now - days(180)",
        # has an open cart older than the abandonment threshold
        "cart_abandoners": "cart_abandoned",
        # two or more orders, every one of them with a discount
        "only_discount": "orders_count >= 2 and discounted_orders == orders_count",
        # birthday falls in the current month (of the run's as-of time, UTC)
        "birthday_this_month": "birthday_month == month(now)",
    }
)
