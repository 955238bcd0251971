"""Profile building: one profile per person from every source of a pipeline.

The heavy lifting is set-based: SQL groups orders per person (counts, spend, windows,
discounts, categories) and returns customers, carts and consent events ordered by person
key. Python then merge-joins these key-ordered streams, so memory holds one person at a
time, never a store. Metrics that need the as-of time are computed in SQL from the
``as_of`` parameter, which makes a run reproducible with ``--as-of``.

Identity: a customer's key is its normalised e-mail (``e:``), else its phone (``p:``),
else its source id (``s:``). A customer without an e-mail whose phone matches a customer
*with* an e-mail in the same pipeline joins that person. Guest orders with only an e-mail
join the person with that e-mail.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, case, false, func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from crmsync.config import ProfileSettings
from crmsync.normalize import minor_unit_exponent
from crmsync.records import ConsentState
from state import schema
from state.timeutil import from_ms

DAY_MS = 86_400_000
_COUNTED_OUT = ("cancelled", "refunded")


@dataclass(frozen=True, slots=True)
class ProfileContext:
    """Everything a profile depends on besides the data: fixed for one run."""

    sources: tuple[str, ...]
    consent_scopes: tuple[str, ...]  # connector names whose consent events apply
    currency: str
    as_of_ms: int
    settings: ProfileSettings


def _bytewise(conn: Connection, expr: ColumnElement[Any]) -> ColumnElement[Any]:
    return expr.collate("C") if conn.dialect.name == "postgresql" else expr


def _customer_key(customers: Any, sources: Sequence[str]) -> ColumnElement[Any]:
    """The customer's person key, with e-mail-less customers linked by phone."""
    other = schema.customers.alias("linked")
    linked = (
        select(literal("e:") + func.min(other.c.email))
        .where(
            other.c.phone == customers.c.phone,
            other.c.email.is_not(None),
            other.c.source.in_(sources),
        )
        .scalar_subquery()
    )
    return case(
        (
            customers.c.email.is_(None) & customers.c.phone.is_not(None),
            func.coalesce(linked, customers.c.person_key),
        ),
        else_=customers.c.person_key,
    )


def customers_query(conn: Connection, ctx: ProfileContext) -> Select[Any]:
    c = schema.customers
    key = _customer_key(c, ctx.sources).label("key")
    return (
        select(
            key,
            c.c.source,
            c.c.email,
            c.c.phone,
            c.c.first_name,
            c.c.last_name,
            c.c.city,
            c.c.region,
            c.c.country,
            c.c.postal_code,
            c.c.address1,
            c.c.language,
            c.c.birthday,
            c.c.created_at,
            c.c.updated_at,
            c.c.email_consent,
            c.c.email_consent_at,
            c.c.sms_consent,
            c.c.sms_consent_at,
            c.c.deleted,
        )
        .where(c.c.source.in_(ctx.sources))
        .order_by(_bytewise(conn, key), c.c.updated_at.desc().nulls_last(), c.c.source)
    )


def _order_key(orders: Any, customers: Any, sources: Sequence[str]) -> ColumnElement[Any]:
    return func.coalesce(
        _customer_key(customers, sources),
        literal("e:") + orders.c.email,
        literal("s:") + orders.c.source + literal(":") + orders.c.customer_external_id,
    )


def orders_query(conn: Connection, ctx: ProfileContext) -> Select[Any]:
    o, c = schema.orders, schema.customers
    as_of = ctx.as_of_ms
    counted = and_(o.c.status.not_in(_COUNTED_OUT), o.c.placed_at <= as_of)
    net = o.c.total_minor - o.c.refunded_minor
    key = _order_key(o, c, ctx.sources).label("key")
    columns: list[Any] = [
        key,
        func.sum(case((counted, 1), else_=0)).label("orders_count"),
        func.sum(case((counted, 0), else_=1)).label("cancelled"),
        func.sum(case((counted, net), else_=0)).label("spent"),
        func.min(case((counted, o.c.placed_at))).label("first_at"),
        func.max(case((counted, o.c.placed_at))).label("last_at"),
        func.sum(case((counted & (o.c.discount_minor > 0), 1), else_=0)).label("discounted"),
        func.aggregate_strings(case((counted, o.c.categories)), "|").label("categories"),
        func.max(func.coalesce(o.c.updated_at, o.c.placed_at)).label("activity_at"),
    ]
    for days in ctx.settings.windows_days:
        inside = counted & (o.c.placed_at > as_of - days * DAY_MS)
        columns.append(func.sum(case((inside, net), else_=0)).label(f"spent_{days}"))
        columns.append(func.sum(case((inside, 1), else_=0)).label(f"orders_{days}"))
    join = o.outerjoin(
        c, and_(c.c.source == o.c.source, c.c.external_id == o.c.customer_external_id)
    )
    return (
        select(*columns)
        .select_from(join)
        .where(o.c.source.in_(ctx.sources), o.c.currency == ctx.currency, o.c.placed_at <= as_of)
        .group_by(key)
        .order_by(_bytewise(conn, key))
    )


def carts_query(conn: Connection, ctx: ProfileContext) -> Select[Any]:
    k, c = schema.carts, schema.customers
    at = func.coalesce(k.c.updated_at, k.c.created_at).label("at")
    key = func.coalesce(
        _customer_key(c, ctx.sources),
        literal("e:") + k.c.email,
        literal("s:") + k.c.source + literal(":") + k.c.customer_external_id,
    ).label("key")
    join = k.outerjoin(
        c, and_(c.c.source == k.c.source, c.c.external_id == k.c.customer_external_id)
    )
    return (
        select(key, k.c.value_minor, k.c.item_count, k.c.checkout_url, k.c.currency, at)
        .select_from(join)
        .where(k.c.source.in_(ctx.sources), k.c.converted == false(), at <= ctx.as_of_ms)
        .order_by(_bytewise(conn, key), at.desc())
    )


def consent_query(conn: Connection, ctx: ProfileContext) -> Select[Any]:
    e = schema.consent_events
    return (
        select(e.c.person_key.label("key"), e.c.channel, e.c.state, e.c.occurred_at)
        # every known event, whatever --as-of says: an opt-out is never undone by a
        # reproducible run of an earlier time
        .where(e.c.source.in_(ctx.consent_scopes))
        .order_by(_bytewise(conn, e.c.person_key), e.c.occurred_at)
    )


CUSTOMER, ORDERS, CART, CONSENT = 0, 1, 2, 3


def _tag(stream: Iterator[Any], tag: int) -> Iterator[tuple[str, int, Any]]:
    for row in stream:
        yield row[0], tag, row


def keyed_groups(
    streams: Sequence[Iterator[Any]],
) -> Iterator[tuple[str, list[list[Any]]]]:
    """Merge-joins key-ordered row streams: yields (key, rows of each stream for that key)."""
    tagged = [_tag(stream, tag) for tag, stream in enumerate(streams)]
    merged = heapq.merge(*tagged, key=lambda item: item[0])
    for key, items in itertools.groupby(merged, key=lambda item: item[0]):
        if key is None:
            continue
        groups: list[list[Any]] = [[] for _ in streams]
        for _, tag, row in items:
            groups[tag].append(row)
        yield key, groups


class ProfileBuilder:
    """Turns one person's grouped rows into a profile dict (pure; no I/O)."""

    def __init__(self, ctx: ProfileContext) -> None:
        self.ctx = ctx
        self.scale = Decimal(10) ** -minor_unit_exponent(ctx.currency)
        settings = ctx.settings
        self.windows = tuple(settings.windows_days)
        self.window_names = tuple(
            (f"spent_{d}d", f"orders_{d}d", f"spent_{d}", f"orders_{d}") for d in self.windows
        )
        self.abandon_ms = int(settings.abandoned_cart_hours * 3_600_000)
        rfm = settings.rfm
        self.recency = tuple(rfm.recency_days)
        self.frequency = tuple(rfm.frequency_orders)
        self.monetary = tuple(Decimal(str(m)) for m in rfm.monetary)
        self.zero = Decimal(0)

    def money(self, minor: int | None) -> Decimal:
        return (Decimal(minor or 0) * self.scale) if minor else self.zero * self.scale

    def build(self, key: str, groups: list[list[Any]]) -> dict[str, Any]:
        customers, orders, carts, consents = groups
        p: dict[str, Any] = {"person_key": key}
        self._identity(p, key, customers)
        self._orders(p, orders[0] if orders else None)
        self._cart(p, carts)
        self._consent(p, customers, consents)
        return p

    def _identity(self, p: dict[str, Any], key: str, rows: list[Any]) -> None:
        def first(index: int) -> Any:
            for row in rows:
                if row[index] is not None:
                    return row[index]
            return None

        email = key[2:] if key.startswith("e:") else first(2)
        p["email"] = email
        p["phone"] = first(3)
        p["first_name"] = first_name = first(4)
        p["last_name"] = last_name = first(5)
        p["full_name"] = " ".join(x for x in (first_name, last_name) if x) or None
        p["city"], p["region"], p["country"] = first(6), first(7), first(8)
        p["postal_code"], p["address1"], p["language"] = first(9), first(10), first(11)
        birthday = first(12)
        p["birthday"] = birthday
        p["birthday_month"] = birthday.month if birthday else None
        p["birthday_day"] = birthday.day if birthday else None
        created = [row[13] for row in rows if row[13] is not None]
        p["customer_since"] = from_ms(min(created)) if created else None
        p["sources"] = tuple(sorted({row[1] for row in rows}))
        p["deleted"] = bool(rows) and all(row[19] for row in rows)

    def _orders(self, p: dict[str, Any], agg: Any) -> None:
        as_of = self.ctx.as_of_ms
        count = int(agg.orders_count) if agg is not None else 0
        p["orders_count"] = count
        p["cancelled_orders"] = int(agg.cancelled) if agg is not None else 0
        spent = self.money(agg.spent if agg is not None else 0)
        p["total_spent"] = spent
        p["currency"] = self.ctx.currency
        for names in self.window_names:
            p[names[0]] = self.money(getattr(agg, names[2]) if agg is not None else 0)
            p[names[1]] = int(getattr(agg, names[3])) if agg is not None else 0
        discounted = int(agg.discounted) if agg is not None else 0
        p["discounted_orders"] = discounted
        p["full_price_orders"] = count - discounted
        cats: Counter[str] = Counter()
        if agg is not None and agg.categories:
            cats.update(c for c in agg.categories.split("|") if c)
        p["categories"] = tuple(sorted(cats))
        p["top_category"] = min(cats.items(), key=lambda kv: (-kv[1], kv[0]))[0] if cats else None
        if not count:
            p.update(
                first_order_at=None,
                last_order_at=None,
                days_since_last_order=None,
                avg_order_value=None,
                rfm_recency=None,
                rfm_frequency=None,
                rfm_monetary=None,
                rfm_score=None,
                rfm_label="none",
                lifecycle_stage="prospect",
            )
            return
        p["first_order_at"] = from_ms(agg.first_at)
        p["last_order_at"] = from_ms(agg.last_at)
        days = (as_of - agg.last_at) // 86_400_000
        first_days = (as_of - agg.first_at) // 86_400_000
        p["days_since_last_order"] = days
        p["avg_order_value"] = (spent / count).quantize(self.scale)
        r = 5 - sum(days > limit for limit in self.recency)
        f = 1 + sum(count >= limit for limit in self.frequency)
        m = 1 + sum(spent >= limit for limit in self.monetary)
        p["rfm_recency"], p["rfm_frequency"], p["rfm_monetary"] = r, f, m
        p["rfm_score"] = f"{r}{f}{m}"
        p["rfm_label"] = rfm_label(r, f, m)
        settings = self.ctx.settings
        if days >= settings.lapsed_days:
            stage = "lapsed"
        elif days >= settings.at_risk_days:
            stage = "at_risk"
        elif first_days < settings.new_days:
            stage = "new"
        else:
            stage = "active"
        p["lifecycle_stage"] = stage

    def _cart(self, p: dict[str, Any], rows: list[Any]) -> None:
        last_order = p["last_order_at"]
        last_ms = int(last_order.timestamp() * 1000) if last_order else None
        for row in rows:  # newest first
            if row.currency != self.ctx.currency:
                continue
            if last_ms is not None and row.at is not None and last_ms >= row.at:
                break  # an order placed after the cart's last change converted it
            p["cart_open"] = True
            p["cart_abandoned"] = (
                row.at is not None and self.ctx.as_of_ms - row.at >= self.abandon_ms
            )
            p["cart_value"] = self.money(row.value_minor)
            p["cart_items"] = int(row.item_count)
            p["cart_url"] = row.checkout_url
            p["cart_updated_at"] = from_ms(row.at)
            return
        p.update(
            cart_open=False,
            cart_abandoned=False,
            cart_value=None,
            cart_items=None,
            cart_url=None,
            cart_updated_at=None,
        )

    def _consent(self, p: dict[str, Any], customers: list[Any], events: list[Any]) -> None:
        # (time, rank, state): at equal times an opt-out (rank 1) wins over an opt-in
        email: list[tuple[int, int, str]] = []
        sms: list[tuple[int, int, str]] = []
        for row in customers:
            if row[15] != "none":
                email.append((row[16] or row[14] or 0, row[15] != "subscribed", row[15]))
            if row[17] != "none":
                sms.append((row[18] or row[14] or 0, row[17] != "subscribed", row[17]))
        for row in events:
            target = email if row.channel == "email" else sms
            target.append((row.occurred_at, row.state != "subscribed", row.state))
        latest_email = max(email) if email else None
        p["email_consent"] = latest_email[2] if latest_email else ConsentState.NONE.value
        p["email_consent_at"] = from_ms(latest_email[0]) if latest_email else None
        p["sms_consent"] = max(sms)[2] if sms else ConsentState.NONE.value


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


def profile_streams(conn: Connection, ctx: ProfileContext) -> list[Iterator[Any]]:
    """The four key-ordered row streams, opened on ``conn`` (streaming, not buffered)."""
    streaming = conn.execution_options(stream_results=True, yield_per=2000)
    return [
        iter(streaming.execute(customers_query(conn, ctx))),
        iter(streaming.execute(orders_query(conn, ctx))),
        iter(streaming.execute(carts_query(conn, ctx))),
        iter(streaming.execute(consent_query(conn, ctx))),
    ]


def foreign_currency_orders(conn: Connection, ctx: ProfileContext) -> int:
    o = schema.orders
    query = select(func.count()).where(o.c.source.in_(ctx.sources), o.c.currency != ctx.currency)
    return int(conn.execute(query).scalar() or 0)


def iter_profiles(conn: Connection, ctx: ProfileContext) -> Iterator[dict[str, Any]]:
    """Every profile of the pipeline, in person-key order (for plans, tests and benches)."""
    builder = ProfileBuilder(ctx)
    for key, groups in keyed_groups(profile_streams(conn, ctx)):
        if groups[CUSTOMER] or groups[ORDERS] or groups[CART]:
            yield builder.build(key, groups)
