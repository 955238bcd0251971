"""Deriving e-commerce events from staged orders and carts (``crmsync.events``).

The events of a record follow from its current state alone (pure functions below): an
order has a *placed order* and an *ordered product* per line, a *fulfilled* or
*cancelled order* once it reached that status, and a *refunded order* per refunded
amount (the amount is in the key, so a further refund is a new event); an open cart
past the abandonment time has a *started checkout*. So deriving a record twice gives
the same events with the same keys, and the event ledger (``state.events``) decides
what each destination still needs: re-derivation is always safe, never a duplicate.

Which records are derived in a run (``derive``): those staged since the pipeline's last
complete derivation, the open carts that crossed the abandonment time since its as-of,
and the records of events due for a retry or left in flight by a crash. A backfill adds
the records placed (carts: changed) since its date, flagged historical. Records are read
a page at a time in (source, id) order, so memory stays bounded.

A status event is timed by when the order reached the status, where the source gives it
(``fulfilled_at``, ``cancelled_at``, ``refunded_at``: the platform's instant, converted
to UTC by the mapping as ``placed_at`` is), else by the order's last change.

*Checkout closed* is per destination (only where the started checkout was acknowledged),
from ``closings``: a cart now converted or no longer staged (the ledger's open
checkouts), or one left unchanged for the expiry time (``cart_expiry_days``), found, as
the abandoned ones are, by the range of last changes that crossed it since the last
derivation (an index range, ``schema.CART_CHANGED``). A cart already expired when it
would be abandoned sends no started checkout at all, so it has nothing to close.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import and_

from crmsync.events import Event, EventKind, EventLine
from crmsync.normalize import minor_unit_exponent
from state import schema
from state.events import (
    ClosableCheckout,
    StagedCart,
    StagedLine,
    StagedOrder,
    abandoned_between,
    carts_where,
    closable_checkouts,
    expired_checkouts,
    orders_where,
    records_in,
    records_to_retry,
    staged_between,
    staged_upto,
)
from state.store import Store
from state.timeutil import from_ms, to_ms

CART_KINDS = frozenset({EventKind.STARTED_CHECKOUT.value, EventKind.CHECKOUT_CLOSED.value})


def money(minor: int, currency: str) -> Decimal:
    """An amount in minor units (kuruş) as a Decimal of the currency's major unit."""
    return Decimal(minor).scaleb(-minor_unit_exponent(currency))


def _when(ms: int) -> datetime:
    at = from_ms(ms)
    assert at is not None
    return at


def _line(line: StagedLine, currency: str) -> EventLine:
    name = line.product or line.sku or f"line {line.line_no}"
    return EventLine(
        product_id=line.sku or line.product or f"line-{line.line_no}",
        name=name,
        quantity=line.quantity,
        unit_price=money(line.unit_price_minor, currency),
        sku=line.sku,
        discount=money(line.discount_minor, currency),
        categories=(line.category,) if line.category else (),
    )


def order_events(order: StagedOrder, historical: bool = False) -> list[Event]:
    """The events an order's current state implies (none for an order of nobody)."""
    if order.person_key is None:
        return []
    src, oid, currency = order.source, order.external_id, order.currency
    lines = tuple(_line(line, currency) for line in order.lines)
    common: dict[str, Any] = {
        "person_key": order.person_key,
        "source": src,
        "record_id": oid,
        "currency": currency,
        "email": order.email,
        "phone": order.phone,
        "customer_id": order.customer_external_id,
        "historical": historical,
    }
    placed = _when(order.placed_at)
    changed = order.updated_at or order.placed_at
    refunded = order.refunded_minor
    if not refunded and order.status == "refunded":
        refunded = order.total_minor  # refunded with no amount given: all of it
    properties = {
        "order_id": oid,
        "status": order.status,  # the order's status now, which a resend must not undo
        "refunded": str(money(refunded, currency)),
        "discount": str(money(order.discount_minor, currency)),
        "item_count": sum(line.quantity for line in order.lines),
    }
    events = [
        Event(
            key=f"{EventKind.PLACED_ORDER.value}:{src}:{oid}",
            kind=EventKind.PLACED_ORDER,
            occurred_at=placed,
            value=money(order.total_minor, currency),
            lines=lines,
            properties=properties,
            **common,
        )
    ]
    for staged, line in zip(order.lines, lines, strict=True):
        line_value = line.unit_price * line.quantity - line.discount
        events.append(
            Event(
                key=f"{EventKind.ORDERED_PRODUCT.value}:{src}:{oid}:{staged.line_no}",
                kind=EventKind.ORDERED_PRODUCT,
                occurred_at=placed,
                value=line_value,
                lines=(line,),
                properties={"order_id": oid},
                **common,
            )
        )
    status_kind, reached = {
        "fulfilled": (EventKind.FULFILLED_ORDER, order.fulfilled_at),
        "cancelled": (EventKind.CANCELLED_ORDER, order.cancelled_at),
    }.get(order.status, (None, None))
    if status_kind is not None:
        events.append(
            Event(
                key=f"{status_kind.value}:{src}:{oid}",
                kind=status_kind,
                occurred_at=_when(changed if reached is None else reached),
                value=money(order.total_minor, currency),
                lines=lines,
                properties=properties,
                **common,
            )
        )
    if refunded > 0:
        events.append(
            Event(
                key=f"{EventKind.REFUNDED_ORDER.value}:{src}:{oid}:{refunded}",
                kind=EventKind.REFUNDED_ORDER,
                occurred_at=_when(changed if order.refunded_at is None else order.refunded_at),
                value=money(refunded, currency),
                lines=lines,
                properties={**properties, "order_total": str(money(order.total_minor, currency))},
                **common,
            )
        )
    return events


def cart_changed_at(cart: StagedCart) -> int | None:
    return cart.updated_at if cart.updated_at is not None else cart.created_at


def is_abandoned(cart: StagedCart, as_of_ms: int, abandon_ms: int) -> bool:
    """Open (not converted) and unchanged for at least the abandonment time."""
    changed = cart_changed_at(cart)
    return not cart.converted and changed is not None and changed + abandon_ms <= as_of_ms


def is_expired(cart: StagedCart, as_of_ms: int, expiry_ms: int | None) -> bool:
    """Open and unchanged for at least the expiry time (never, without one)."""
    changed = cart_changed_at(cart)
    if expiry_ms is None or cart.converted or changed is None:
        return False
    return changed + expiry_ms <= as_of_ms


def cart_events(
    cart: StagedCart,
    as_of_ms: int,
    abandon_ms: int,
    historical: bool = False,
    expiry_ms: int | None = None,
) -> list[Event]:
    """A *started checkout* for an open cart past the abandonment time; nothing for a
    cart converted before it, one still within it, one already past the expiry time (a
    checkout no reminder should start), or one of nobody."""
    changed = cart_changed_at(cart)
    if cart.person_key is None or changed is None or not is_abandoned(cart, as_of_ms, abandon_ms):
        return []
    if is_expired(cart, as_of_ms, expiry_ms):
        return []
    currency = cart.currency
    lines = tuple(_cart_line(n, item, currency) for n, item in enumerate(_items(cart), 1))
    return [
        Event(
            key=f"{EventKind.STARTED_CHECKOUT.value}:{cart.source}:{cart.external_id}",
            kind=EventKind.STARTED_CHECKOUT,
            person_key=cart.person_key,
            occurred_at=_when(changed),
            source=cart.source,
            record_id=cart.external_id,
            currency=currency,
            value=money(cart.value_minor, currency),
            lines=lines,
            email=cart.email,
            phone=cart.phone,
            customer_id=cart.customer_external_id,
            checkout_url=cart.checkout_url,
            historical=historical,
            properties={"cart_id": cart.external_id},
        )
    ]


def _items(cart: StagedCart) -> list[dict[str, Any]]:
    if not cart.items:
        return []
    items = orjson.loads(cart.items)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _cart_line(number: int, item: dict[str, Any], currency: str) -> EventLine:
    sku, product = item.get("sku"), item.get("product")
    category = item.get("category")
    return EventLine(
        product_id=sku or product or f"line-{number}",
        name=product or sku or f"line {number}",
        quantity=int(item.get("quantity") or 0),
        unit_price=Decimal(str(item.get("unit_price") or 0)),
        sku=sku,
        categories=(category,) if category else (),
    )


def closing_event(checkout: ClosableCheckout, currency: str, as_of_ms: int) -> Event:
    """*Checkout closed* for a cart whose started checkout was acknowledged and that is
    now converted (at its last change) or no longer staged (as of the run)."""
    when = checkout.updated_at if checkout.currency is not None else None
    return Event(
        key=f"{EventKind.CHECKOUT_CLOSED.value}:{checkout.source}:{checkout.cart_id}",
        kind=EventKind.CHECKOUT_CLOSED,
        person_key=checkout.person_key or "",
        occurred_at=_when(when if when is not None else as_of_ms),
        source=checkout.source,
        record_id=checkout.cart_id,
        currency=checkout.currency or currency,
        email=checkout.email,
        properties={"cart_id": checkout.cart_id, "converted": checkout.currency is not None},
    )


def expiry_event(checkout: ClosableCheckout, expiry_ms: int) -> Event:
    """*Checkout closed* for an open cart left unchanged for the expiry time, at the
    instant it expired (``checkout.updated_at``: the cart's last change)."""
    changed = checkout.updated_at
    assert changed is not None  # expired_checkouts selects by it
    return Event(
        key=f"{EventKind.CHECKOUT_CLOSED.value}:{checkout.source}:{checkout.cart_id}",
        kind=EventKind.CHECKOUT_CLOSED,
        person_key=checkout.person_key or "",
        occurred_at=_when(changed + expiry_ms),
        source=checkout.source,
        record_id=checkout.cart_id,
        currency=checkout.currency or "",
        email=checkout.email,
        properties={"cart_id": checkout.cart_id, "converted": False, "expired": True},
    )


@dataclass(frozen=True)
class Window:
    """What one derivation covers: records staged in (staged_after, staged_upto], carts
    abandoned by as_of since last_as_of, and (backfill) records since ``since``."""

    staged_after: int | None
    staged_upto: int
    last_as_of: int | None
    as_of: int
    abandon_ms: int
    since: int | None = None
    live_ms: int | None = None  # older events than this, at as_of, go as historical
    expiry_ms: int | None = None  # an open cart unchanged this long is closed (None: never)


def plan_window(
    store: Store,
    sources: Sequence[str],
    cursor: tuple[int, int] | None,
    as_of: datetime,
    abandon_hours: float,
    since: datetime | None = None,
    live_hours: float | None = None,
    expiry_days: float | None = None,
) -> Window:
    with store.engine.connect() as conn:
        upto = staged_upto(conn, sources)
    as_of_ms = to_ms(as_of)
    assert as_of_ms is not None
    return Window(
        staged_after=cursor[0] if cursor else None,
        staged_upto=upto,
        last_as_of=cursor[1] if cursor else None,
        as_of=as_of_ms,
        abandon_ms=int(abandon_hours * 3_600_000),
        since=to_ms(since),
        live_ms=None if live_hours is None else int(live_hours * 3_600_000),
        expiry_ms=None if expiry_days is None else int(expiry_days * 86_400_000),
    )


def derive(
    store: Store,
    sources: Sequence[str],
    destinations: Sequence[str],
    window: Window,
    now_ms: int,
    person: str | None = None,
) -> Iterator[Event]:
    """Every event of the window's records, a record at a time in (source, id) order:
    orders, then carts, then the records of events to retry, then (backfill) the
    records since its date, historical. An event older than the window's live time is
    historical too: a first run's past orders and a cart abandoned days ago must not
    start an automation as if they had just happened. ``person``: only the records of
    this person key (``plan --person``)."""
    if window.live_ms is None:
        yield from _derive(store, sources, destinations, window, now_ms, person)
        return
    cutoff = window.as_of - window.live_ms
    for event in _derive(store, sources, destinations, window, now_ms, person):
        old = not event.historical and (to_ms(event.occurred_at) or 0) < cutoff
        yield replace(event, historical=True) if old else event


def _derive(
    store: Store,
    sources: Sequence[str],
    destinations: Sequence[str],
    window: Window,
    now_ms: int,
    person: str | None,
) -> Iterator[Event]:
    o, k = schema.orders, schema.carts
    after, upto = window.staged_after, window.staged_upto
    mine = _mine(person)

    def carts_of(cart: StagedCart, historical: bool = False) -> list[Event]:
        return cart_events(cart, window.as_of, window.abandon_ms, historical, window.expiry_ms)

    def fresh_order(order: StagedOrder) -> bool:
        return (after is None or order.staged_at > after) and order.staged_at <= upto

    def fresh_cart(cart: StagedCart) -> bool:
        if (after is None or cart.staged_at > after) and cart.staged_at <= upto:
            return True
        return _crossed(cart, window)

    with store.engine.connect() as conn:
        retry = records_to_retry(conn, destinations, now_ms)
    for orders in _read_orders(store, sources, mine(o, staged_between(o, after, upto))):
        for order in orders:
            yield from order_events(order)
    low = None if window.last_as_of is None else window.last_as_of - window.abandon_ms
    high = window.as_of - window.abandon_ms
    carts = staged_between(k, after, upto) | abandoned_between(low, high)
    for page in _read_carts(store, sources, mine(k, carts)):
        for cart in page:
            yield from carts_of(cart)
    order_ids = [(s, r) for kind, s, r in retry if kind not in CART_KINDS and s in sources]
    cart_ids = [(s, r) for kind, s, r in retry if kind in CART_KINDS and s in sources]
    if order_ids:
        retried = mine(o, records_in(o, sorted(set(order_ids))))
        for orders in _read_orders(store, sources, retried):
            for order in orders:
                if not fresh_order(order):
                    yield from order_events(order)
    if cart_ids:
        for page in _read_carts(store, sources, mine(k, records_in(k, sorted(set(cart_ids))))):
            for cart in page:
                if not fresh_cart(cart):
                    yield from carts_of(cart)
    if window.since is not None:
        for orders in _read_orders(store, sources, mine(o, o.c.placed_at >= window.since)):
            for order in orders:
                yield from order_events(order, historical=True)
        changed = (k.c.updated_at >= window.since) | (
            k.c.updated_at.is_(None) & (k.c.created_at >= window.since)
        )
        for page in _read_carts(store, sources, mine(k, changed)):
            for cart in page:
                yield from carts_of(cart, historical=True)


def _mine(person: str | None) -> Callable[[Any, Any], Any]:
    """A condition narrowed to one person's records, or left as it is."""

    def narrowed(table: Any, condition: Any) -> Any:
        return condition if person is None else and_(condition, table.c.person_key == person)

    return narrowed


def closings(
    store: Store,
    destination: str,
    sources: Sequence[str],
    currency: str,
    window: Window,
    now_ms: int,
    person: str | None = None,
) -> Iterator[Event]:
    """The *checkout closed* events ``destination`` needs: for the carts whose started
    checkout it acknowledged that are now converted or no longer staged, then for the
    open ones that crossed the expiry time since the last derivation (a backfill: since
    its date too), and for those whose closing is due for a retry or was left in flight.
    ``person``: only that person's carts."""
    with store.engine.connect() as conn:
        pages = list(closable_checkouts(conn, destination))
    for page in pages:
        for checkout in page:
            if person is None or checkout.person_key == person:
                yield closing_event(checkout, currency, window.as_of)
    expiry = window.expiry_ms
    if expiry is None:
        return
    k, changed = schema.carts, schema.CART_CHANGED
    high = window.as_of - expiry
    low = None if window.last_as_of is None else window.last_as_of - expiry
    if low is not None and window.since is not None:
        low = min(low, window.since - 1)
    crossed = changed <= high if low is None else and_(changed > low, changed <= high)
    with store.engine.connect() as conn:
        retry = records_to_retry(conn, [destination], now_ms)
    again = sorted(
        {(s, r) for kind, s, r in retry if kind == EventKind.CHECKOUT_CLOSED.value and s in sources}
    )
    conditions = [crossed] + ([and_(records_in(k, again), changed <= high)] if again else [])
    seen: set[str] = set()
    narrowed = _mine(person)
    for condition in conditions:
        query = narrowed(k, condition)
        found = _paged(store, lambda c, q=query: expired_checkouts(c, destination, sources, q))
        for page in found:
            for checkout in page:
                event = expiry_event(checkout, expiry)
                if event.key not in seen:
                    seen.add(event.key)
                    yield event


def _crossed(cart: StagedCart, window: Window) -> bool:
    """The cart crossed the abandonment time in (last_as_of, as_of]."""
    changed = cart_changed_at(cart)
    if cart.converted or changed is None:
        return False
    at = changed + window.abandon_ms
    return at <= window.as_of and (window.last_as_of is None or at > window.last_as_of)


def _read_orders(
    store: Store, sources: Sequence[str], condition: Any
) -> Iterator[list[StagedOrder]]:
    """Pages of orders; no read transaction stays open while the caller pushes and
    records a page's events."""
    yield from _paged(store, lambda conn: orders_where(conn, sources, condition))


def _read_carts(store: Store, sources: Sequence[str], condition: Any) -> Iterator[list[StagedCart]]:
    yield from _paged(store, lambda conn: carts_where(conn, sources, condition))


def _paged(store: Store, pages: Any) -> Iterator[Any]:
    with store.engine.connect() as conn:
        iterator = pages(conn)
        while True:
            try:
                page = next(iterator)
            except StopIteration:
                return
            conn.commit()  # end the read transaction before the caller writes
            yield page
