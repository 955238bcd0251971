"""Staging writes: canonical records into the staging tables, de-duplicated by external
id, ``updated_at`` and content, with the source cursor advanced in the same transaction.

A record replaces its staged version when it is newer, or when it is as new (or either
side has no ``updated_at``, as with full exports) and its content differs: sources that
keep times to the second (WooCommerce) can change a record twice within one second, and
the second version must not wait for a later change. An older version never replaces a
newer one. So re-reading a lookback window, duplicates across pages and out-of-order
pages are all harmless, and a re-read of the same content writes nothing.

Orders and carts are staged with their person's key, and a customer staged with a new or
changed key re-keys its orders and carts in the same transaction (``person_keys``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
from sqlalchemy import Table, and_, delete, select
from sqlalchemy.engine import Connection

from crmsync.normalize import minor_unit_exponent
from crmsync.records import Cart, Customer, IssueAction, Order, RecordIssue, Stream
from state import schema
from state.dialect import upsert_insert
from state.person_keys import customer_keys, fallback_key, keys_for, rekey
from state.timeutil import to_ms


@dataclass
class StageStats:
    """What became of the items a source yielded for one stream.

    Every item lands in exactly one of staged, unchanged, quarantined or later, so
    ``received`` is always their sum (``adds_up``); ``corrected`` counts the records
    staged or unchanged with a value corrected, a note on them, not a fifth outcome.
    """

    received: int = 0  # every item read: records (those left for later too), quarantined rows
    staged: int = 0  # new or newer than what was staged
    unchanged: int = 0  # same or older version already staged, or a duplicate in the batch
    quarantined: int = 0  # not staged: kept in ``quarantine`` with the reason
    later: int = 0  # changed after the run started: left for the next run
    corrected: int = 0  # records with a value corrected (among staged and unchanged)

    def add(self, other: StageStats) -> None:
        self.received += other.received
        self.staged += other.staged
        self.unchanged += other.unchanged
        self.quarantined += other.quarantined
        self.later += other.later
        self.corrected += other.corrected

    def adds_up(self) -> bool:
        return self.received == self.staged + self.unchanged + self.quarantined + self.later

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "staged": self.staged,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "later": self.later,
            "corrected": self.corrected,
        }


NOT_COUNTED = ("cancelled", "refunded")  # order statuses left out of counts and spend


def to_minor(amount: Decimal, currency: str) -> int:
    exponent = minor_unit_exponent(currency)
    return int((amount * (10**exponent)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def person_key(source: str, customer: Customer) -> str:
    """The identity a customer record starts with: e-mail first, then phone, then its id."""
    if customer.email:
        return f"e:{customer.email}"
    if customer.phone:
        return f"p:{customer.phone}"
    return f"s:{source}:{customer.external_id}"


def _customer_row(source: str, c: Customer, staged_at: int) -> dict[str, Any]:
    email_consent = c.email_consent
    sms_consent = c.sms_consent
    return {
        "source": source,
        "external_id": c.external_id,
        "person_key": person_key(source, c),
        "email": c.email,
        "phone": c.phone,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "city": c.city,
        "region": c.region,
        "country": c.country,
        "postal_code": c.postal_code,
        "address1": c.address1,
        "language": c.language,
        "birthday": c.birthday,
        "created_at": to_ms(c.created_at),
        "updated_at": to_ms(c.updated_at),
        "email_consent": email_consent.state.value if email_consent else "none",
        "email_consent_at": to_ms(email_consent.at) if email_consent else None,
        "sms_consent": sms_consent.state.value if sms_consent else "none",
        "sms_consent_at": to_ms(sms_consent.at) if sms_consent else None,
        "deleted": c.deleted,
        "staged_at": staged_at,
    }


def _order_row(source: str, o: Order, staged_at: int, key: str | None) -> dict[str, Any]:
    categories = sorted({line.category for line in o.lines if line.category})
    total = to_minor(o.total, o.currency)
    refunded = to_minor(o.refunded_total, o.currency)
    discount = to_minor(o.discount_total, o.currency)
    return {
        "source": source,
        "external_id": o.external_id,
        "customer_external_id": o.customer_external_id,
        "email": o.email,
        "placed_at": to_ms(o.placed_at),
        "updated_at": to_ms(o.updated_at),
        "status": o.status.value,
        "currency": o.currency,
        "total_minor": total,
        "discount_minor": discount,
        "refunded_minor": refunded,
        "item_count": sum(line.quantity for line in o.lines),
        "categories": "|".join(categories) if categories else None,
        "staged_at": staged_at,
        "person_key": key,
        "counted": o.status.value not in NOT_COUNTED,
        "net_minor": total - refunded,
        "discounted": discount > 0,
    }


def _line_rows(source: str, o: Order) -> list[dict[str, Any]]:
    return [
        {
            "source": source,
            "order_external_id": o.external_id,
            "line_no": number,
            "sku": line.sku,
            "product": line.product,
            "category": line.category,
            "quantity": line.quantity,
            "unit_price_minor": to_minor(line.unit_price, o.currency),
            "discount_minor": to_minor(line.discount, o.currency),
        }
        for number, line in enumerate(o.lines, start=1)
    ]


def _cart_row(source: str, c: Cart, staged_at: int, key: str | None) -> dict[str, Any]:
    items = [
        {
            "sku": i.sku,
            "product": i.product,
            "category": i.category,
            "quantity": i.quantity,
            "unit_price": str(i.unit_price),
        }
        for i in c.items
    ]
    return {
        "source": source,
        "external_id": c.external_id,
        "customer_external_id": c.customer_external_id,
        "email": c.email,
        "currency": c.currency,
        "value_minor": to_minor(c.value, c.currency),
        "item_count": sum(i.quantity for i in c.items),
        "checkout_url": c.checkout_url,
        "converted": c.converted,
        "created_at": to_ms(c.created_at),
        "updated_at": to_ms(c.updated_at),
        "items": orjson.dumps(items).decode(),
        "staged_at": staged_at,
        "person_key": key,
    }


_NOT_CONTENT = frozenset({"staged_at", "content_hash", "person_key"})  # not the record's own


def _with_hash(row: dict[str, Any], lines: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """``row`` with the digest of its content (and its order lines) as ``content_hash``."""
    content = {k: v for k, v in row.items() if k not in _NOT_CONTENT}
    body = orjson.dumps([content, list(lines)], option=orjson.OPT_SORT_KEYS)
    row["content_hash"] = hashlib.blake2b(body, digest_size=16).hexdigest()
    return row


_TABLES: dict[Stream, Table] = {
    Stream.CUSTOMERS: schema.customers,
    Stream.ORDERS: schema.orders,
    Stream.CARTS: schema.carts,
}


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    insert = upsert_insert(conn, table)
    update = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in keys}
    conn.execute(insert.on_conflict_do_update(index_elements=keys, set_=update), rows)


def _staged_versions(
    conn: Connection, table: Table, source: str, ids: Sequence[str]
) -> dict[str, tuple[int | None, str | None]]:
    """external id -> (updated_at, content_hash) of what is staged."""
    found: dict[str, tuple[int | None, str | None]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        query = select(table.c.external_id, table.c.updated_at, table.c.content_hash).where(
            table.c.source == source, table.c.external_id.in_(chunk)
        )
        found.update({r.external_id: (r.updated_at, r.content_hash) for r in conn.execute(query)})
    return found


def stage_records(
    conn: Connection,
    source: str,
    stream: Stream,
    records: Sequence[Customer | Order | Cart],
    staged_at: int,
) -> StageStats:
    """Upserts one batch of one stream; returns how many were new or newer."""
    stats = StageStats(received=len(records))
    newest: dict[str, Customer | Order | Cart] = {}
    for record in records:  # duplicates inside the batch: the newest, else the last read
        kept = newest.get(record.external_id)
        if kept is None or not _strictly_newer(kept.updated_at, record.updated_at):
            newest[record.external_id] = record
    table = _TABLES[stream]
    staged = _staged_versions(conn, table, source, list(newest))
    if stream is Stream.CUSTOMERS:
        customers: list[Customer] = list(newest.values())  # type: ignore[arg-type]
        rows = [_with_hash(_customer_row(source, c, staged_at)) for c in customers]
        rows = [row for row in rows if _replaces(row, staged)]
        _count(stats, rows)
        old_keys = customer_keys(conn, source, (row["external_id"] for row in rows))
        _upsert(conn, table, rows)
        rekey(
            conn,
            source,
            {
                row["external_id"]: row["person_key"]
                for row in rows
                if old_keys.get(row["external_id"]) != row["person_key"]
            },
        )
    elif stream is Stream.ORDERS:
        every: list[Order] = list(newest.values())  # type: ignore[arg-type]
        candidates = [(o, _line_rows(source, o)) for o in every]
        replacing = [
            (o, lines, row)
            for o, lines in candidates
            if _replaces(row := _with_hash(_order_row(source, o, staged_at, None), lines), staged)
        ]
        orders = [o for o, _, _ in replacing]
        rows = _keyed([row for _, _, row in replacing], keys_for(conn, source, orders))
        _count(stats, rows)
        _upsert(conn, table, rows)
        ids = [o.external_id for o in orders]
        for start in range(0, len(ids), 500):
            lines = schema.order_lines
            conn.execute(
                delete(lines).where(
                    lines.c.source == source,
                    lines.c.order_external_id.in_(ids[start : start + 500]),
                )
            )
        line_rows = [row for _, lines, _ in replacing for row in lines]
        if line_rows:
            conn.execute(schema.order_lines.insert(), line_rows)
    else:
        every_cart: list[Cart] = list(newest.values())  # type: ignore[arg-type]
        replacing_carts = [
            (c, row)
            for c in every_cart
            if _replaces(row := _with_hash(_cart_row(source, c, staged_at, None)), staged)
        ]
        carts = [c for c, _ in replacing_carts]
        rows = _keyed([row for _, row in replacing_carts], keys_for(conn, source, carts))
        _count(stats, rows)
        _upsert(conn, table, rows)
    _clear_quarantine(conn, source, stream, [row["external_id"] for row in rows])
    return stats


def _count(stats: StageStats, staged_rows: Sequence[dict[str, Any]]) -> None:
    stats.staged = len(staged_rows)
    stats.unchanged = stats.received - stats.staged


def _keyed(rows: list[dict[str, Any]], keys: Sequence[str | None]) -> list[dict[str, Any]]:
    """Order or cart rows with their person keys (not part of the content hash)."""
    for row, key in zip(rows, keys, strict=True):
        row["person_key"] = key
    return rows


def _strictly_newer(candidate: Any, existing: Any) -> bool:
    """True only when both times are known and ``candidate`` is later."""
    return candidate is not None and existing is not None and bool(candidate > existing)


def _replaces(row: dict[str, Any], staged: dict[str, tuple[int | None, str | None]]) -> bool:
    """Whether ``row`` replaces the staged version: newer, or as new and different."""
    version = staged.get(row["external_id"])
    if version is None:
        return True
    updated_at, content_hash = version
    changed = bool(row["content_hash"] != content_hash)
    if row["updated_at"] is None or updated_at is None:
        return changed  # full exports: any change, once
    if row["updated_at"] != updated_at:
        return bool(row["updated_at"] > updated_at)
    return changed


def _clear_quarantine(conn: Connection, source: str, stream: Stream, ids: Iterable[str]) -> None:
    """A record that now stages cleanly is no longer quarantined."""
    table = schema.quarantine
    id_list = list(ids)
    for start in range(0, len(id_list), 500):
        conn.execute(
            delete(table).where(
                and_(
                    table.c.source == source,
                    table.c.stream == stream.value,
                    table.c.action == "quarantined",
                    table.c.record_key.in_(id_list[start : start + 500]),
                )
            )
        )


def record_key(issue: RecordIssue) -> str:
    if issue.external_id:
        return issue.external_id
    return "raw:" + hashlib.sha256(issue.excerpt.encode()).hexdigest()[:24]


def count_issues(stats: StageStats, issues: Sequence[RecordIssue]) -> None:
    """Adds a batch's issues to ``stats``: each quarantined row is an item read and not
    staged; corrections count once per record (a record may have several)."""
    quarantined = sum(1 for issue in issues if issue.action == IssueAction.QUARANTINED)
    stats.received += quarantined
    stats.quarantined += quarantined
    stats.corrected += len(
        {record_key(issue) for issue in issues if issue.action == IssueAction.CORRECTED}
    )


def store_issues(
    conn: Connection, source: str, issues: Sequence[RecordIssue], seen_at: int
) -> None:
    """Keeps each issue once per (record, field), counting how often it was seen again."""
    table = schema.quarantine
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for issue in issues:
        key = (issue.stream.value, record_key(issue), issue.field or "")
        rows[key] = {
            "source": source,
            "stream": key[0],
            "record_key": key[1],
            "field": key[2],
            "action": issue.action.value,
            "external_id": issue.external_id,
            "reason": issue.reason[:2000],
            "excerpt": issue.excerpt[:500],
            "first_seen": seen_at,
            "last_seen": seen_at,
            "times_seen": 1,
        }
    if not rows:
        return
    insert = upsert_insert(conn, table)
    statement = insert.on_conflict_do_update(
        index_elements=["source", "stream", "record_key", "field"],
        set_={
            "action": insert.excluded.action,
            "reason": insert.excluded.reason,
            "excerpt": insert.excluded.excerpt,
            "last_seen": insert.excluded.last_seen,
            "times_seen": table.c.times_seen + 1,
        },
    )
    conn.execute(statement, list(rows.values()))


__all__ = [
    "NOT_COUNTED",
    "StageStats",
    "count_issues",
    "fallback_key",
    "person_key",
    "stage_records",
    "store_issues",
    "to_minor",
]
