"""Profile building: one profile per person from every source of a pipeline.

The rows come from key-ordered streams (``state.profile_reads``): customers, orders, carts and
consent events, each grouped by person key and merge-joined, so memory holds one person at
a time, never a store. Metrics that need the as-of time use ``ProfileContext.as_of_ms``,
which makes a run reproducible with ``--as-of``.

Identity: a customer's key is its normalised e-mail (``e:``), else its phone (``p:``),
else its source id (``s:``). A customer without an e-mail whose phone matches a customer
*with* an e-mail in the same pipeline joins that person. Guest orders with only an e-mail
join the person with that e-mail.

This runs once per person per run, a million times for a large store, so the builder
works on row tuples by position, keeps money in integer minor units until the profile
needs a ``Decimal``, and takes a fast path for the usual person with one customer row.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from crmsync.merge_join import merge_groups
from crmsync.normalize import minor_unit_exponent
from crmsync.profile_scope import EVERYONE, KeyRange, ProfileContext
from state.profile_reads import (
    CARTS,
    CONSENT,
    CUSTOMERS,
    LINKED_AWAY,
    LINKED_CARTS,
    LINKED_CUSTOMERS,
    LINKED_ORDERS,
    ORDERS,
    foreign_currency_orders,
    profile_streams,
)

DAY_MS = 86_400_000
_NONE = "none"

# positions in a customer row (see state.profile_reads.customers_query)
_SOURCE, _EMAIL, _PHONE, _BIRTHDAY, _CREATED, _UPDATED = 1, 2, 3, 12, 13, 14
_EMAIL_CONSENT, _EMAIL_CONSENT_AT, _SMS_CONSENT, _SMS_CONSENT_AT, _DELETED = 15, 16, 17, 18, 19
# profile fields taken from the first customer row that has them, with their positions
_FIRST_VALUE: tuple[tuple[str, int], ...] = (
    ("phone", 3),
    ("first_name", 4),
    ("last_name", 5),
    ("city", 6),
    ("region", 7),
    ("country", 8),
    ("postal_code", 9),
    ("address1", 10),
    ("language", 11),
    ("birthday", 12),
)
_FIRST_NAMES = tuple(name for name, _ in _FIRST_VALUE)
# they sit side by side in the row, so one slice reads them all
_FIRST_SLICE = slice(_FIRST_VALUE[0][1], _FIRST_VALUE[-1][1] + 1)
assert [i for _, i in _FIRST_VALUE] == list(range(_FIRST_SLICE.start, _FIRST_SLICE.stop))
_CART_AT = 5
_NO_FIRSTS: list[int | None] = []
_timestamp = datetime.fromtimestamp  # from_ms without a call in between: it runs ~5 per person

_NO_ORDERS: dict[str, Any] = {
    "first_order_at": None,
    "last_order_at": None,
    "days_since_last_order": None,
    "avg_order_value": None,
    "rfm_recency": None,
    "rfm_frequency": None,
    "rfm_monetary": None,
    "rfm_score": None,
    "rfm_label": "none",
    "lifecycle_stage": "prospect",
}
_NO_CART: dict[str, Any] = {
    "cart_open": False,
    "cart_abandoned": False,
    "cart_value": None,
    "cart_items": None,
    "cart_url": None,
    "cart_updated_at": None,
}


def _newest_first(row: Any) -> tuple[bool, int, str]:
    """Customer rows: most recently updated first (unknown last), then by source."""
    updated = row[_UPDATED]
    return (updated is None, -(updated or 0), row[_SOURCE])


def _joined(main: list[Any] | None, linked: list[Any] | None) -> list[Any]:
    if linked is None:
        return main or []
    return linked if main is None else main + linked


class ProfileBuilder:
    """Turns one person's grouped rows into a profile dict (pure; no I/O)."""

    def __init__(self, ctx: ProfileContext, watched: frozenset[str] = frozenset()) -> None:
        self.ctx = ctx
        # the as_of-dependent fields whose next change ``build_planned`` looks for: only
        # those a rule or a mapping reads matter (a change in another is never seen)
        self.watch_windows = any(n.startswith(("spent_", "orders_")) for n in watched)
        self.watch_days = "days_since_last_order" in watched
        self.watch_rfm = bool(watched & {"rfm_recency", "rfm_score", "rfm_label"})
        self.watch_lifecycle = "lifecycle_stage" in watched
        self.watch_cart = "cart_abandoned" in watched
        # what ``build_planned`` needs of the person built last (None: nothing such)
        self.future: int | None = None  # the earliest row after as_of (orders, carts, consent)
        self.first_ms: int | None = None  # first and last counted orders
        self.last_ms: int | None = None
        self.cart_at: int | None = None  # the open cart's last change
        self.window_firsts: list[int | None] = []  # per window bucket, its earliest order
        exponent = minor_unit_exponent(ctx.currency)
        self.scale = Decimal(10) ** -exponent
        self.zero = Decimal(0) * self.scale
        settings = ctx.settings
        widest_first = sorted(set(settings.windows_days), reverse=True)
        self.window_names_widest_first = tuple(
            (f"spent_{d}d", f"orders_{d}d") for d in widest_first
        )
        self.starts_widest_first = tuple(ctx.as_of_ms - d * DAY_MS for d in widest_first)
        self.widths_widest_first = tuple(d * DAY_MS for d in widest_first)
        self.lifecycle = (settings.lapsed_days, settings.at_risk_days, settings.new_days)
        self.abandon_ms = int(settings.abandoned_cart_hours * 3_600_000)
        rfm = settings.rfm  # thresholds are validated ascending, so scores are bisections
        self.recency = tuple(rfm.recency_days)
        self.frequency = tuple(rfm.frequency_orders)
        # spend >= threshold, compared exactly in (integer) minor units
        self.monetary = tuple(math.ceil(Decimal(str(m)).scaleb(exponent)) for m in rfm.monetary)
        # a person with no rows at all: each profile starts as a copy (one allocation of the
        # right size, and nothing to store for what a person lacks)
        empty: dict[str, Any] = dict.fromkeys(("person_key", *_FIRST_NAMES, "email"))
        empty.update(full_name=None, birthday_month=None, birthday_day=None)
        empty.update(customer_since=None, sources=(), deleted=False)
        empty.update(orders_count=0, cancelled_orders=0, total_spent=self.zero)
        empty["currency"] = ctx.currency
        for spent_name, count_name in self.window_names_widest_first:
            empty[spent_name], empty[count_name] = self.zero, 0
        empty.update(discounted_orders=0, full_price_orders=0, categories=(), top_category=None)
        empty.update(_NO_ORDERS)
        empty.update(_NO_CART)
        empty.update(
            email_consent=_NONE, email_consent_at=None, sms_consent=_NONE, sms_consent_at=None
        )
        self.empty = empty

    def money(self, minor: int | None) -> Decimal:
        return Decimal(minor) * self.scale if minor else self.zero

    def build(self, key: str, slots: list[Any]) -> dict[str, Any] | None:
        """The profile for ``key`` from its merged slots; None when only a ledger,
        failure or consent row has the key (nobody to build)."""
        built = self.build_with_activity(key, slots)
        return built[0] if built is not None else None

    def build_with_activity(
        self, key: str, slots: list[Any]
    ) -> tuple[dict[str, Any], int | None] | None:
        """The profile and the person's latest activity (customer or order change, in ms)."""
        self.future = self.first_ms = self.last_ms = self.cart_at = None
        self.window_firsts = _NO_FIRSTS
        if slots[LINKED_AWAY] is not None:
            return None  # this p: key joined its e-mail's person, built under that e: key
        customers = _joined(slots[CUSTOMERS], slots[LINKED_CUSTOMERS])
        orders = _joined(slots[ORDERS], slots[LINKED_ORDERS])
        carts = _joined(slots[CARTS], slots[LINKED_CARTS])
        if not customers and not self._any_visible(orders, carts):
            return None
        if len(customers) > 1:
            customers.sort(key=_newest_first)
        p = self.empty.copy()
        p["person_key"] = key
        if customers:
            self._identity(p, key, customers)
        elif key.startswith("e:"):
            p["email"] = key[2:]
        activity = last_order = None
        if orders:
            activity, last_order = self._orders(p, orders)
        if carts:
            self._cart(p, carts, last_order)
        events = slots[CONSENT]
        if events:
            events = self._visible_events(events)
        if customers or events:
            self._consent(p, customers, events or ())
        for row in customers:
            updated = row[_UPDATED]
            if updated is not None and (activity is None or updated > activity):
                activity = updated
        return p, activity

    def build_planned(
        self, key: str, slots: list[Any]
    ) -> tuple[dict[str, Any] | None, int | None, int | None] | None:
        """The profile (None: nobody yet), the latest activity, and the earliest as_of
        (ms) after this one at which a watched field may change with time alone, or a
        row dated after as_of starts to count (None: never); None when there is nobody
        now and no row dated later."""
        built = self.build_with_activity(key, slots)
        if built is None:
            return None if self.future is None else (None, None, self.future)
        profile, activity = built
        return profile, activity, self._next_change(profile)

    def _next_change(self, p: dict[str, Any]) -> int | None:
        as_of = self.ctx.as_of_ms
        found = [self.future]
        last, first = self.last_ms, self.first_ms
        if last is not None and first is not None:
            days = (as_of - last) // DAY_MS
            if self.watch_days:  # one more day every day
                found.append(last + (days + 1) * DAY_MS)
            if self.watch_rfm:  # the score drops the day after a limit is passed
                above = bisect_left(self.recency, days)
                if above < len(self.recency):
                    found.append(last + (self.recency[above] + 1) * DAY_MS)
            if self.watch_lifecycle:
                lapsed_days, at_risk_days, new_days = self.lifecycle
                found += [last + n * DAY_MS for n in (at_risk_days, lapsed_days) if days < n]
                if (as_of - first) // DAY_MS < new_days:
                    found.append(first + new_days * DAY_MS)
        if self.watch_windows and self.window_firsts:
            firsts = self.window_firsts
            for j, width in enumerate(self.widths_widest_first):
                # the earliest order in window j sits in the first bucket after j with any
                earliest = next((f for f in firsts[j + 1 :] if f is not None), None)
                if earliest is not None:
                    found.append(earliest + width)
        if self.watch_cart and self.cart_at is not None and not p["cart_abandoned"]:
            found.append(self.cart_at + self.abandon_ms)
        return min((at for at in found if at is not None), default=None)

    def _later(self, at: int) -> None:
        if self.future is None or at < self.future:
            self.future = at

    def _any_visible(self, orders: list[Any], carts: list[Any]) -> bool:
        """Whether any order or cart is dated by as_of (the rest are noted for later)."""
        as_of = self.ctx.as_of_ms
        for rows, at in ((orders, 1), (carts, _CART_AT)):
            for row in rows:
                if row[at] <= as_of:
                    return True
                self._later(row[at])
        return False

    def _visible_events(self, events: list[Any]) -> list[Any]:
        """Consent events by as_of; later ones are noted (they count from then on)."""
        as_of = self.ctx.as_of_ms
        visible = []
        for event in events:
            if event[3] <= as_of:
                visible.append(event)
            else:
                self._later(event[3])
        return visible

    def _identity(self, p: dict[str, Any], key: str, rows: list[Any]) -> None:
        if len(rows) == 1:
            row = rows[0]
            (
                p["phone"],
                p["first_name"],
                p["last_name"],
                p["city"],
                p["region"],
                p["country"],
                p["postal_code"],
                p["address1"],
                p["language"],
                p["birthday"],
            ) = row[_FIRST_SLICE]  # _FIRST_NAMES, as statements: update(zip()) costs 4x
            email = row[_EMAIL]
            created = row[_CREATED]
            sources: tuple[str, ...] = (row[_SOURCE],)
            deleted = bool(row[_DELETED])
        else:
            for name, index in _FIRST_VALUE:
                p[name] = next((r[index] for r in rows if r[index] is not None), None)
            email = next((r[_EMAIL] for r in rows if r[_EMAIL] is not None), None)
            times = [r[_CREATED] for r in rows if r[_CREATED] is not None]
            created = min(times) if times else None
            sources = tuple(sorted({r[_SOURCE] for r in rows}))
            deleted = bool(rows) and all(r[_DELETED] for r in rows)
        p["email"] = key[2:] if key.startswith("e:") else email
        first_name, last_name = p["first_name"], p["last_name"]
        if first_name and last_name:
            p["full_name"] = f"{first_name} {last_name}"
        else:
            p["full_name"] = first_name or last_name or None
        birthday = p["birthday"]
        if birthday.__class__ is str:  # SQLite rows read without SQLAlchemy: ISO text
            birthday = p["birthday"] = date.fromisoformat(birthday)
        p["birthday_month"] = birthday.month if birthday else None
        p["birthday_day"] = birthday.day if birthday else None
        p["customer_since"] = _timestamp(created / 1000, UTC) if created is not None else None
        p["sources"] = sources
        p["deleted"] = deleted

    def _orders(self, p: dict[str, Any], rows: list[Any]) -> tuple[int | None, int | None]:
        """Order metrics into ``p``; returns the latest order change and the latest
        counted order's time (ms, or None)."""
        count = cancelled = discounted = spent = 0
        first = last = activity = None
        # an order counts in every window that starts before it; bucket k holds the orders
        # inside exactly the k widest windows, so each order costs one bisection
        starts = self.starts_widest_first
        bucket_spent = [0] * (len(starts) + 1)
        bucket_count = [0] * (len(starts) + 1)
        firsts: list[int | None] = [None] * (len(starts) + 1)
        self.window_firsts = firsts
        as_of = self.ctx.as_of_ms
        category_lists: list[str] = []
        for _, placed, counted, net, has_discount, names, changed in rows:
            if placed > as_of:  # placed after as_of: counts from then on
                self._later(placed)
                continue
            if activity is None or changed > activity:
                activity = changed
            if not counted:
                cancelled += 1
                continue
            count += 1
            spent += net
            if has_discount:
                discounted += 1
            if first is None or placed < first:
                first = placed
            if last is None or placed > last:
                last = placed
            inside = bisect_left(starts, placed)
            bucket_spent[inside] += net
            bucket_count[inside] += 1
            first_inside = firsts[inside]
            if first_inside is None or placed < first_inside:
                firsts[inside] = placed
            if names:
                category_lists.append(names)
        money = self.money
        total = money(spent)
        p["orders_count"] = count
        p["cancelled_orders"] = cancelled
        p["total_spent"] = total
        window_spent = window_count = 0
        last_minor, last_money = spent, total  # windows often hold the same sum: reuse it
        for k in range(len(starts), 0, -1):  # narrowest window first
            window_spent += bucket_spent[k]
            window_count += bucket_count[k]
            spent_name, count_name = self.window_names_widest_first[k - 1]
            if window_spent != last_minor:
                last_minor, last_money = window_spent, money(window_spent)
            p[spent_name] = last_money
            p[count_name] = window_count
        p["discounted_orders"] = discounted
        p["full_price_orders"] = count - discounted
        if category_lists:
            # an order's categories are distinct, so counting names counts orders
            categories: dict[str, int] = {}
            for name in "|".join(category_lists).split("|"):
                if name:
                    categories[name] = categories.get(name, 0) + 1
            names_sorted = sorted(categories)
            p["categories"] = tuple(names_sorted)
            # bought in the most orders; the first by name among equals (max keeps the first)
            p["top_category"] = max(names_sorted, key=categories.__getitem__)
        if not count or first is None or last is None:
            return activity, None  # the recency fields keep their empty values
        self._recency(p, count, spent, first, last)
        return activity, last

    def _recency(self, p: dict[str, Any], count: int, spent: int, first: int, last: int) -> None:
        as_of = self.ctx.as_of_ms
        self.first_ms, self.last_ms = first, last
        p["first_order_at"] = _timestamp(first / 1000, UTC)
        p["last_order_at"] = _timestamp(last / 1000, UTC)
        days = (as_of - last) // DAY_MS
        p["days_since_last_order"] = days
        # spend / count rounded half-even to the minor unit, in integers (as Decimal would)
        quotient, remainder = divmod(abs(spent), count)
        if 2 * remainder > count or (2 * remainder == count and quotient & 1):
            quotient += 1
        p["avg_order_value"] = self.money(quotient if spent >= 0 else -quotient)
        r = 5 - bisect_left(self.recency, days)  # limits exceeded
        f = 1 + bisect_right(self.frequency, count)  # limits reached
        m = 1 + bisect_right(self.monetary, spent)
        p["rfm_recency"], p["rfm_frequency"], p["rfm_monetary"] = r, f, m
        p["rfm_score"] = f"{r}{f}{m}"
        p["rfm_label"] = rfm_label(r, f, m)
        lapsed_days, at_risk_days, new_days = self.lifecycle
        if days >= lapsed_days:
            stage = "lapsed"
        elif days >= at_risk_days:
            stage = "at_risk"
        elif (as_of - first) // DAY_MS < new_days:
            stage = "new"
        else:
            stage = "active"
        p["lifecycle_stage"] = stage

    def _cart(self, p: dict[str, Any], rows: list[Any], last_order: int | None) -> None:
        if len(rows) > 1:
            rows = sorted(rows, key=lambda row: -row[_CART_AT])
        as_of = self.ctx.as_of_ms
        for _, value, items, url, currency, at in rows:  # newest first
            if at > as_of:  # changed after as_of: open (or not) from then on
                self._later(at)
                continue
            if currency != self.ctx.currency:
                continue
            if last_order is not None and last_order >= at:
                break  # an order placed after the cart's last change converted it
            p["cart_open"] = True
            p["cart_abandoned"] = self.ctx.as_of_ms - at >= self.abandon_ms
            p["cart_value"] = self.money(value)
            p["cart_items"] = int(items)
            p["cart_url"] = url
            p["cart_updated_at"] = _timestamp(at / 1000, UTC)
            self.cart_at = at
            return

    @staticmethod
    def _consent(p: dict[str, Any], customers: list[Any], events: Any) -> None:
        # (time, rank, state): at equal times an opt-out (rank 1) wins over an opt-in
        email: tuple[int, bool, str] | None = None
        sms: tuple[int, bool, str] | None = None
        for row in customers:
            state = row[_EMAIL_CONSENT]
            if state != _NONE:
                at = row[_EMAIL_CONSENT_AT] or row[_UPDATED] or 0
                item = (at, state != "subscribed", state)
                email = item if email is None or item > email else email
            state = row[_SMS_CONSENT]
            if state != _NONE:
                at = row[_SMS_CONSENT_AT] or row[_UPDATED] or 0
                item = (at, state != "subscribed", state)
                sms = item if sms is None or item > sms else sms
        for _, channel, state, at in events:
            item = (at, state != "subscribed", state)
            if channel == "email":
                email = item if email is None or item > email else email
            else:
                sms = item if sms is None or item > sms else sms
        p["email_consent"] = email[2] if email else _NONE
        p["email_consent_at"] = _timestamp(email[0] / 1000, UTC) if email else None
        p["sms_consent"] = sms[2] if sms else _NONE
        p["sms_consent_at"] = _timestamp(sms[0] / 1000, UTC) if sms else None


def rfm_label(r: int, f: int, m: int) -> str:
    if r >= 4 and f >= 4 and m >= 4:
        return "champions"
    if r >= 3 and f >= 4:
        return "loyal"
    if r >= 4 and f == 1:
        return "new"
    if r >= 3:
        return "potential"
    if f >= 3:
        return "at_risk"
    if r == 2:
        return "hibernating"
    return "lost"


def iter_profiles(
    conn: Connection, ctx: ProfileContext, keys: KeyRange = EVERYONE
) -> Iterator[dict[str, Any]]:
    """Every profile of the pipeline, in person-key order (for plans, tests and benches)."""
    builder = ProfileBuilder(ctx)
    for key, slots in merge_groups(profile_streams(conn, ctx, keys)):
        profile = builder.build(key, slots)
        if profile is not None:
            yield profile


__all__ = [
    "KeyRange",
    "ProfileBuilder",
    "ProfileContext",
    "foreign_currency_orders",
    "iter_profiles",
    "rfm_label",
]
