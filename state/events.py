"""Events in the state store: reading staged orders and carts for their derivation, and
the event ledger (what each destination acknowledged, has in flight, or failed).

Per batch, as for people (``state.ledger``): ``mark_in_flight`` records the events in
the transaction before they are sent, ``record_results`` moves the answers in one
transaction after the destination answered. An event acknowledged is never sent again
to that destination; one left in flight by a crash is sent again (vendors de-duplicate
by the event's key); one that failed waits for its next attempt, under the pipeline's
cap and backoff (``RetryPolicy``); a refused one is not sent again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    false,
    func,
    not_,
    null,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from crmsync.contract import Outcome
from crmsync.events import CART_KINDS, Event, EventKind, EventResult
from state import schema
from state.dialect import upsert_insert
from state.ledger import MAX_RETRY_MS, RetryPolicy

PAGE = 1000  # records per query page: bounded memory whatever the store's size
CHUNK = 500  # keys per IN (...) list and rows per write

Record = tuple[str, str, str]  # kind, source, record id
RecordRef = tuple[bool, str, str]  # a cart (else an order), source, record id


@dataclass(frozen=True, slots=True)
class StagedLine:
    line_no: int
    sku: str | None
    product: str | None
    category: str | None
    quantity: int
    unit_price_minor: int
    discount_minor: int


@dataclass(frozen=True, slots=True)
class StagedOrder:
    source: str
    external_id: str
    customer_external_id: str | None
    email: str | None  # the order's, else its customer's
    phone: str | None  # its customer's
    person_key: str | None
    placed_at: int  # epoch ms, UTC
    updated_at: int | None
    staged_at: int
    status: str
    currency: str
    total_minor: int
    discount_minor: int
    refunded_minor: int
    fulfilled_at: int | None = None  # when it reached the status, where the source says
    cancelled_at: int | None = None
    refunded_at: int | None = None  # its latest refund
    lines: tuple[StagedLine, ...] = ()


@dataclass(frozen=True, slots=True)
class StagedCart:
    source: str
    external_id: str
    customer_external_id: str | None
    email: str | None
    phone: str | None
    person_key: str | None
    currency: str
    value_minor: int
    checkout_url: str | None
    converted: bool
    created_at: int | None
    updated_at: int | None
    staged_at: int
    items: str | None  # JSON list of {sku, product, category, quantity, unit_price}


# --- reading staged records -------------------------------------------------------------


def staged_upto(conn: Connection, sources: Sequence[str]) -> int:
    """The newest ``staged_at`` of the sources' orders and carts (0: nothing staged)."""
    newest = 0
    for table in (schema.orders, schema.carts):
        value = conn.execute(
            select(func.max(table.c.staged_at)).where(table.c.source.in_(sources))
        ).scalar()
        newest = max(newest, int(value or 0))
    return newest


def staged_between(table: Any, after: int | None, upto: int) -> ColumnElement[bool]:
    """Records staged in (after, upto]."""
    upper = table.c.staged_at <= upto
    return upper if after is None else and_(table.c.staged_at > after, upper)


def abandoned_between(low: int | None, high: int) -> ColumnElement[bool]:
    """Open carts whose last change (updated, else created) lies in (low, high]."""
    c = schema.carts
    when = func.coalesce(c.c.updated_at, c.c.created_at)
    bounds = when <= high if low is None else and_(when > low, when <= high)
    return and_(c.c.converted.is_(False), bounds)


def orders_where(
    conn: Connection, sources: Sequence[str], condition: ColumnElement[bool]
) -> Iterator[list[StagedOrder]]:
    """The sources' orders meeting ``condition``, with their lines and their customer's
    e-mail and phone, a page at a time in (source, id) order."""
    o, c = schema.orders, schema.customers
    joined = o.outerjoin(
        c, and_(c.c.source == o.c.source, c.c.external_id == o.c.customer_external_id)
    )
    columns = (
        o.c.source,
        o.c.external_id,
        o.c.customer_external_id,
        func.coalesce(o.c.email, c.c.email),
        c.c.phone,
        o.c.person_key,
        o.c.placed_at,
        o.c.updated_at,
        o.c.staged_at,
        o.c.status,
        o.c.currency,
        o.c.total_minor,
        o.c.discount_minor,
        o.c.refunded_minor,
        o.c.fulfilled_at,
        o.c.cancelled_at,
        o.c.refunded_at,
    )
    base = select(*columns).select_from(joined).where(o.c.source.in_(sources), condition)
    for rows in _pages(conn, base, o.c.source, o.c.external_id):
        lines = _lines(conn, [(r[0], r[1]) for r in rows])
        yield [replace(StagedOrder(*r), lines=tuple(lines.get((r[0], r[1]), ()))) for r in rows]


def carts_where(
    conn: Connection, sources: Sequence[str], condition: ColumnElement[bool]
) -> Iterator[list[StagedCart]]:
    """The sources' carts meeting ``condition``, a page at a time in (source, id) order."""
    k, c = schema.carts, schema.customers
    joined = k.outerjoin(
        c, and_(c.c.source == k.c.source, c.c.external_id == k.c.customer_external_id)
    )
    columns = (
        k.c.source,
        k.c.external_id,
        k.c.customer_external_id,
        func.coalesce(k.c.email, c.c.email),
        c.c.phone,
        k.c.person_key,
        k.c.currency,
        k.c.value_minor,
        k.c.checkout_url,
        k.c.converted,
        k.c.created_at,
        k.c.updated_at,
        k.c.staged_at,
        k.c["items"],
    )
    base = select(*columns).select_from(joined).where(k.c.source.in_(sources), condition)
    for rows in _pages(conn, base, k.c.source, k.c.external_id):
        yield [StagedCart(*r) for r in rows]


def records_in(table: Any, records: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    """Records named by (source, id)."""
    by_source: dict[str, list[str]] = {}
    for source, record_id in records:
        by_source.setdefault(source, []).append(record_id)
    if not by_source:
        return false()
    condition: ColumnElement[bool] = or_(
        *(
            and_(table.c.source == s, table.c.external_id.in_(sorted(ids)))
            for s, ids in by_source.items()
        )
    )
    return condition


def _pages(conn: Connection, base: Any, source: Any, record_id: Any) -> Iterator[list[Any]]:
    after: tuple[str, str] | None = None
    while True:
        query = base if after is None else base.where(tuple_(source, record_id) > after)
        rows = conn.execute(query.order_by(source, record_id).limit(PAGE)).all()
        if not rows:
            return
        yield [tuple(r) for r in rows]
        if len(rows) < PAGE:
            return
        after = (rows[-1][0], rows[-1][1])


def _lines(
    conn: Connection, orders: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[StagedLine]]:
    t = schema.order_lines
    out: dict[tuple[str, str], list[StagedLine]] = {}
    by_source: dict[str, list[str]] = {}
    for source, order_id in orders:
        by_source.setdefault(source, []).append(order_id)
    for source, ids in by_source.items():
        for start in range(0, len(ids), CHUNK):
            rows = conn.execute(
                select(
                    t.c.order_external_id,
                    t.c.line_no,
                    t.c.sku,
                    t.c.product,
                    t.c.category,
                    t.c.quantity,
                    t.c.unit_price_minor,
                    t.c.discount_minor,
                )
                .where(t.c.source == source, t.c.order_external_id.in_(ids[start : start + CHUNK]))
                .order_by(t.c.order_external_id, t.c.line_no)
            )
            for order_id, *line in rows:
                out.setdefault((source, order_id), []).append(StagedLine(*line))
    return out


# --- the derivation's cursor ----------------------------------------------------------------


def event_cursor(conn: Connection, pipeline: str) -> tuple[int, int] | None:
    """(staged_upto, as_of) of the pipeline's last complete derivation, None before one."""
    t = schema.event_cursors
    row = conn.execute(select(t.c.staged_upto, t.c.as_of).where(t.c.pipeline == pipeline)).first()
    return (int(row[0]), int(row[1])) if row is not None else None


def set_event_cursor(conn: Connection, pipeline: str, staged: int, as_of: int, now_ms: int) -> None:
    t = schema.event_cursors
    values = {"staged_upto": staged, "as_of": as_of, "updated_at": now_ms}
    insert = upsert_insert(conn, t).values(pipeline=pipeline, **values)
    conn.execute(insert.on_conflict_do_update(index_elements=[t.c.pipeline], set_=values))


# --- the event ledger -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailureState:
    payload_hash: str
    attempts: int
    next_attempt_at: int | None  # None: not retried


def acknowledged(conn: Connection, destination: str, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` the destination has acknowledged."""
    t = schema.event_ledger
    out: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        rows = conn.execute(
            select(t.c.event_key).where(t.c.destination == destination, t.c.event_key.in_(chunk))
        )
        out.update(key for (key,) in rows)
    return out


def failure_states(
    conn: Connection, destination: str, keys: Sequence[str]
) -> dict[str, FailureState]:
    t = schema.event_failures
    out: dict[str, FailureState] = {}
    for start in range(0, len(keys), CHUNK):
        rows = conn.execute(
            select(t.c.event_key, t.c.payload_hash, t.c.attempts, t.c.next_attempt_at).where(
                t.c.destination == destination, t.c.event_key.in_(keys[start : start + CHUNK])
            )
        )
        out.update({k: FailureState(h, int(a), n) for k, h, a, n in rows})
    return out


def records_to_retry(conn: Connection, destinations: Sequence[str], now_ms: int) -> set[Record]:
    """The records of events due for another attempt, and of events a crash left in
    flight: derived again whatever the cursor says."""
    f, i = schema.event_failures, schema.event_in_flight
    due = select(f.c.kind, f.c.source, f.c.record_id).where(
        f.c.destination.in_(destinations),
        f.c.next_attempt_at.is_not(None),
        f.c.next_attempt_at <= now_ms,
    )
    left = select(i.c.kind, i.c.source, i.c.record_id).where(i.c.destination.in_(destinations))
    return {(k, s, r) for k, s, r in conn.execute(due.union(left))}


def record_ref(event: Event) -> RecordRef:
    return (event.kind in CART_KINDS, event.source, event.record_id)


def person_remote_ids(
    conn: Connection, destination: str, person_keys: Sequence[str]
) -> dict[str, str]:
    """The people's ledger's ids at ``destination`` of those persons it holds synced (an
    archived or deleted person's id names nothing there any more)."""
    t = schema.ledger
    out: dict[str, str] = {}
    for start in range(0, len(person_keys), CHUNK):
        rows = conn.execute(
            select(t.c.person_key, t.c.remote_id).where(
                t.c.destination == destination,
                t.c.person_key.in_(person_keys[start : start + CHUNK]),
                t.c.status == "synced",
                t.c.remote_id.is_not(None),
            )
        )
        out.update({key: str(remote) for key, remote in rows})
    return out


def record_histories(
    conn: Connection, destination: str, records: Iterable[RecordRef]
) -> dict[RecordRef, str | None]:
    """Of these orders and carts, those that any event was ever sent for to
    ``destination`` (acknowledged, in flight, failed or refused), each with the remote id
    its opening event (placed order, started checkout) was acknowledged with, if any. A
    record not in the answer was never sent there."""
    wanted: dict[tuple[bool, str], list[str]] = {}
    for cart, source, record_id in set(records):
        wanted.setdefault((cart, source), []).append(record_id)
    led, flying, failed = schema.event_ledger, schema.event_in_flight, schema.event_failures
    out: dict[RecordRef, str | None] = {}
    for (cart, source), ids in wanted.items():
        kinds = [k.value for k in EventKind if (k in CART_KINDS) == cart]
        opening = (EventKind.STARTED_CHECKOUT if cart else EventKind.PLACED_ORDER).value
        ids.sort()
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            sent = union_all(
                *(
                    select(
                        table.c.record_id,
                        table.c.kind,
                        table.c.remote_id if table is led else null(),
                    ).where(
                        table.c.destination == destination,
                        table.c.kind.in_(kinds),
                        table.c.source == source,
                        table.c.record_id.in_(chunk),
                    )
                    for table in (led, flying, failed)
                )
            )
            for record_id, kind, remote_id in conn.execute(sent):
                ref = (cart, source, str(record_id))
                out.setdefault(ref, None)
                if kind == opening and remote_id is not None:
                    out[ref] = str(remote_id)
    return out


def has_event_history(conn: Connection, destination: str) -> bool:
    """Whether this database ever sent ``destination`` an event (one acknowledged, in
    flight, failed or refused)."""
    for table in (schema.event_ledger, schema.event_in_flight, schema.event_failures):
        found = conn.execute(
            select(table.c.event_key).where(table.c.destination == destination).limit(1)
        ).first()
        if found is not None:
            return True
    return False


@dataclass(frozen=True, slots=True)
class ClosableCheckout:
    """A cart whose started checkout a destination acknowledged, now converted or gone."""

    source: str
    cart_id: str
    person_key: str | None
    currency: str | None  # None: the cart is no longer staged
    updated_at: int | None
    email: str | None


def closable_checkouts(conn: Connection, destination: str) -> Iterator[list[ClosableCheckout]]:
    """Per page, the carts whose started checkout ``destination`` acknowledged and that
    are now converted or no longer staged, and whose closing it has not acknowledged."""
    led, k = schema.event_ledger, schema.carts
    closed = schema.event_ledger.alias("closed")
    query = (
        select(
            led.c.event_key,
            led.c.source,
            led.c.record_id,
            led.c.person_key,
            k.c.currency,
            k.c.updated_at,
            k.c.email,
        )
        .select_from(
            led.outerjoin(k, and_(k.c.source == led.c.source, k.c.external_id == led.c.record_id))
        )
        .where(
            led.c.destination == destination,
            led.c.kind == EventKind.STARTED_CHECKOUT.value,
            or_(k.c.external_id.is_(None), k.c.converted.is_(True)),
            not_(
                select(closed.c.event_key)
                .where(
                    closed.c.destination == destination,
                    closed.c.kind == EventKind.CHECKOUT_CLOSED.value,
                    closed.c.source == led.c.source,
                    closed.c.record_id == led.c.record_id,
                )
                .exists()
            ),
        )
        .order_by(led.c.event_key)
    )
    after: str | None = None
    while True:
        page = query if after is None else query.where(led.c.event_key > after)
        rows = conn.execute(page.limit(PAGE)).all()
        if not rows:
            return
        yield [ClosableCheckout(*r[1:]) for r in rows]
        if len(rows) < PAGE:
            return
        after = rows[-1][0]


def mark_in_flight(
    conn: Connection, destination: str, run_id: int | None, events: Sequence[Event], now_ms: int
) -> None:
    """Records ``events`` as sent, before they go out."""
    t = schema.event_in_flight
    rows = [
        {
            "destination": destination,
            "event_key": e.key,
            "kind": e.kind.value,
            "source": e.source,
            "record_id": e.record_id,
            "sent_at": now_ms,
            "run_id": run_id,
        }
        for e in events
    ]
    _upsert(conn, t, rows, ("sent_at", "run_id"))


def record_results(
    conn: Connection,
    destination: str,
    run_id: int | None,
    events: Sequence[Event],
    hashes: Sequence[str],
    results: Sequence[EventResult],
    *,
    now_ms: int,
    retry: RetryPolicy,
) -> dict[str, int]:
    """Writes acknowledgements to the event ledger and refusals and failures to event
    failures; takes every answered event out of flight; returns counts by outcome.

    An event the destination did not send (NOT_SENT) leaves no trace and costs no
    attempt: it is derived again by a later run (the cursor does not move past it). An
    event missing from the answers counts as FAILED.
    """
    by_key = {r.key: r for r in results}
    counts: dict[str, int] = {}
    acked: list[dict[str, Any]] = []
    failed: list[tuple[Event, str, EventResult]] = []
    answered: list[str] = []
    for event, payload_hash in zip(events, hashes, strict=True):
        result = by_key.get(event.key) or EventResult(
            event.key, Outcome.FAILED, message="the destination returned no result"
        )
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
        answered.append(event.key)
        if result.outcome is Outcome.OK:
            acked.append(
                {
                    "destination": destination,
                    "event_key": event.key,
                    "kind": event.kind.value,
                    "source": event.source,
                    "record_id": event.record_id,
                    "person_key": event.person_key,
                    "payload_hash": payload_hash,
                    "remote_id": result.remote_id,
                    "historical": event.historical,
                    "acked_at": now_ms,
                    "run_id": run_id,
                }
            )
        elif result.outcome is not Outcome.NOT_SENT:
            failed.append((event, payload_hash, result))
    _upsert(conn, schema.event_ledger, acked, ("payload_hash", "remote_id", "acked_at", "run_id"))
    _delete(conn, schema.event_failures, destination, [row["event_key"] for row in acked])
    _delete(conn, schema.event_in_flight, destination, answered)
    if failed:
        _record_failures(conn, destination, failed, now_ms, retry)
    return counts


def _record_failures(
    conn: Connection,
    destination: str,
    failed: list[tuple[Event, str, EventResult]],
    now_ms: int,
    retry: RetryPolicy,
) -> None:
    t = schema.event_failures
    before = failure_states(conn, destination, [e.key for e, _, _ in failed])
    first = {
        k: v
        for k, v in conn.execute(
            select(t.c.event_key, t.c.first_failed_at).where(
                t.c.destination == destination, t.c.event_key.in_(list(before))
            )
        )
    }
    rows = []
    for event, payload_hash, result in failed:
        previous = before.get(event.key)
        same = previous is not None and previous.payload_hash == payload_hash
        attempts = previous.attempts + 1 if previous is not None and same else 1
        next_attempt = None
        if result.outcome is Outcome.FAILED and attempts < retry.max_attempts:
            next_attempt = now_ms + min(retry.first_wait_ms * 2 ** (attempts - 1), MAX_RETRY_MS)
        rows.append(
            {
                "destination": destination,
                "event_key": event.key,
                "kind": event.kind.value,
                "source": event.source,
                "record_id": event.record_id,
                "reason_class": result.outcome.value,
                "message": (result.message or result.outcome.value)[:2000],
                "payload_hash": payload_hash,
                "attempts": attempts,
                "first_failed_at": first.get(event.key, now_ms),
                "last_failed_at": now_ms,
                "next_attempt_at": next_attempt,
            }
        )
    updated = (
        "reason_class",
        "message",
        "payload_hash",
        "attempts",
        "first_failed_at",
        "last_failed_at",
        "next_attempt_at",
    )
    _upsert(conn, t, rows, updated)


def _upsert(
    conn: Connection, table: Any, rows: list[dict[str, Any]], updated: Sequence[str]
) -> None:
    for start in range(0, len(rows), CHUNK):
        insert = upsert_insert(conn, table)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.destination, table.c.event_key],
            set_={name: getattr(insert.excluded, name) for name in updated},
        )
        conn.execute(statement, rows[start : start + CHUNK])


def _delete(conn: Connection, table: Any, destination: str, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), CHUNK):
        conn.execute(
            delete(table).where(
                table.c.destination == destination,
                table.c.event_key.in_(keys[start : start + CHUNK]),
            )
        )


def event_counts(conn: Connection, destinations: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per destination, acknowledged events per kind (for ``status`` and tests)."""
    t = schema.event_ledger
    rows = conn.execute(
        select(t.c.destination, t.c.kind, func.count())
        .where(t.c.destination.in_(destinations))
        .group_by(t.c.destination, t.c.kind)
    )
    out: dict[str, dict[str, int]] = {}
    for destination, kind, n in rows:
        out.setdefault(destination, {})[kind] = int(n)
    return out


def expired_checkouts(
    conn: Connection,
    destination: str,
    sources: Sequence[str],
    changed: ColumnElement[bool],
) -> Iterator[list[ClosableCheckout]]:
    """Per page, the open carts of ``sources`` whose last change meets ``changed`` (a
    range of ``schema.CART_CHANGED``: those that crossed the expiry time), whose started
    checkout ``destination`` acknowledged and whose closing it has not
    (``updated_at``: the cart's last change, updated else created). Each source's carts
    are read by a range of the ``ix_carts_changed`` index (last change), or, where the
    planner prefers it (SQLite does), from the destination's acknowledged checkouts with a
    seek per cart, a page at a time in (last change, id) order."""
    led, k, when = schema.event_ledger, schema.carts, schema.CART_CHANGED
    closed = schema.event_ledger.alias("closed")
    joined = k.join(
        led,
        and_(
            led.c.destination == destination,
            led.c.kind == EventKind.STARTED_CHECKOUT.value,
            led.c.source == k.c.source,
            led.c.record_id == k.c.external_id,
        ),
    )
    for source in sorted(set(sources)):
        base = (
            select(k.c.source, k.c.external_id, k.c.person_key, k.c.currency, when, k.c.email)
            .select_from(joined)
            .where(
                k.c.source == source,
                k.c.converted.is_(False),
                changed,
                not_(
                    select(closed.c.event_key)
                    .where(
                        closed.c.destination == destination,
                        closed.c.kind == EventKind.CHECKOUT_CLOSED.value,
                        closed.c.source == k.c.source,
                        closed.c.record_id == k.c.external_id,
                    )
                    .exists()
                ),
            )
            .order_by(when, k.c.external_id)
        )
        after: tuple[int, str] | None = None
        while True:
            query = base if after is None else base.where(tuple_(when, k.c.external_id) > after)
            rows = conn.execute(query.limit(PAGE)).all()
            if not rows:
                break
            yield [ClosableCheckout(*r) for r in rows]
            if len(rows) < PAGE:
                break
            after = (int(rows[-1][4]), str(rows[-1][1]))
