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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete
from sqlalchemy.engine import Connection

from crmsync.records import IssueAction, RecordIssue, Stream
from state import schema
from state.bulk import Bulk, bulk, overlapped
from state.dialect import upsert_insert
from state.person_keys import customer_keys, fallback_key, rekey
from state.stage_rows import (
    CART_CONTENT,
    CUSTOMER_CONTENT,
    LINE_COLUMNS,
    NOT_COUNTED,
    ORDER_CONTENT,
    ORDER_TIMES,
    TRAILER,
    Built,
    owner_of,
    person_key,
    to_minor,
)


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
    not_read: bool = False  # the source said the stream is unchanged since its last read
    forgotten: int = 0  # issues kept before, not reported again by a full read: gone

    def add(self, other: StageStats) -> None:
        self.received += other.received
        self.staged += other.staged
        self.unchanged += other.unchanged
        self.quarantined += other.quarantined
        self.later += other.later
        self.corrected += other.corrected
        self.forgotten += other.forgotten

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
            **({"not_read": 1} if self.not_read else {}),
            **({"forgotten": self.forgotten} if self.forgotten else {}),
        }


_TABLES: dict[Stream, Table] = {
    Stream.CUSTOMERS: schema.customers,
    Stream.ORDERS: schema.orders,
    Stream.CARTS: schema.carts,
}
_COLUMNS: dict[Stream, tuple[str, ...]] = {
    Stream.CUSTOMERS: CUSTOMER_CONTENT + TRAILER,
    Stream.ORDERS: ORDER_CONTENT + ORDER_TIMES + TRAILER,
    Stream.CARTS: CART_CONTENT + TRAILER,
}
_VERSION = ("external_id", "updated_at", "content_hash", "person_key")

Version = tuple[int | None, str | None, str | None]  # updated_at, content_hash, person_key


def stage_records(
    conn: Connection,
    source: str,
    stream: Stream,
    records: Sequence[Built],
    staged_at: int,
    *,
    durable: bool = True,
) -> StageStats:
    """Upserts one batch of one stream's built records; returns how many were new or newer.

    Every look-up comes first (the versions staged, the keys of the customers that own
    orders or carts); then rows are made a chunk at a time while the driver writes the
    chunk before (``Overlapped``); customers re-key their orders and carts last.

    ``durable=False``: the batch moves no cursor, so a crash of the database server
    that loses it loses nothing a re-read would not bring back. On PostgreSQL its commit
    then returns without waiting for the WAL to reach the disk (``synchronous_commit``
    off, for this transaction only). The batch that moves the cursor is committed as
    usual, and its flush of the WAL takes every batch before it along (the WAL is
    written in order), so the cursor never stands past what is durably staged.
    """
    stats = StageStats(received=len(records))
    if not durable and conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    newest: dict[str, Built] = {}
    for record in records:  # duplicates inside the batch: the newest, else the last read
        kept = newest.get(record.external_id)
        if kept is None or not _strictly_newer(kept.updated_at, record.updated_at):
            newest[record.external_id] = record
    table, columns = _TABLES[stream], _COLUMNS[stream]
    with overlapped(conn) as writer:
        staged: dict[str, Version] = {
            external_id: (updated_at, digest, key)
            for external_id, updated_at, digest, key in writer.select_in(
                table, _VERSION, source, "external_id", list(newest)
            )
        }
        key_of = _key_function(conn, source, stream, newest.values())
        replaced: list[str] = []
        moved: dict[str, str] = {}  # customers whose key is new or changed
        written: set[Table] = set()
        pending = list(newest.values())
        for start in range(0, len(pending), _CHUNK):
            new: list[tuple[Any, ...]] = []  # not staged when looked up
            rows: list[tuple[Any, ...]] = []  # replacing a staged version
            lines: list[tuple[Any, ...]] = []
            again: list[str] = []  # orders staged before, whose lines are replaced
            for built in pending[start : start + _CHUNK]:
                version = staged.get(built.external_id)
                if not _replaces(built, version):
                    continue
                key = key_of(built)
                (new if version is None else rows).append(built.row(staged_at, key))
                replaced.append(built.external_id)
                if stream is Stream.CUSTOMERS and (version is None or version[2] != key):
                    moved[built.external_id] = cast(str, key)
                lines += built.lines
                if version is not None:
                    again.append(built.external_id)
            writer.insert_new(table, columns, new)
            writer.upsert(table, columns, rows)
            written |= {table} if new or rows else set()
            written |= {schema.order_lines} if lines else set()
            if stream is Stream.ORDERS:
                # an order's lines are written only with it: only an order staged
                # before has lines to replace
                writer.delete_in(schema.order_lines, {"source": source}, "order_external_id", again)
                writer.insert(schema.order_lines, LINE_COLUMNS, lines)
        if moved:
            writer.flush()  # rekey uses the connection itself
            rekey(conn, source, moved)
        _clear_quarantine(writer, source, stream, replaced)
        # planned without statistics, a table is read whole for a few keys (``state.bulk``)
        writer.gather_statistics(sorted(written, key=lambda t: t.name))
    stats.staged = len(replaced)
    stats.unchanged = stats.received - stats.staged
    return stats


_CHUNK = 4000  # records built while the driver writes the chunk before


def _key_function(
    conn: Connection, source: str, stream: Stream, records: Iterable[Built]
) -> Callable[[Built], str | None]:
    """How each record of the batch finds its person key: a customer from itself, an
    order or cart from its staged customer (looked up once for the batch), else from its
    e-mail or customer id."""
    if stream is Stream.CUSTOMERS:
        return lambda customer: person_key(source, customer)
    content = ORDER_CONTENT if stream is Stream.ORDERS else CART_CONTENT
    read_owner = owner_of(content)
    owners = {built.external_id: read_owner(built.content) for built in records}
    staged = customer_keys(conn, source, (customer for customer, _ in owners.values()))

    def key_of(built: Built) -> str | None:
        customer, email = owners[built.external_id]
        return staged.get(customer or "") or fallback_key(source, customer, email)

    return key_of


def _strictly_newer(candidate: Any, existing: Any) -> bool:
    """True only when both times are known and ``candidate`` is later."""
    return candidate is not None and existing is not None and bool(candidate > existing)


def _replaces(built: Built, version: Version | None) -> bool:
    """Whether ``built`` replaces the staged version: newer, or as new and different."""
    if version is None:
        return True
    updated_at, content_hash, _ = version
    changed = built.content_hash != content_hash
    if built.updated_at is None or updated_at is None:
        return changed  # full exports: any change, once
    if built.updated_at != updated_at:
        return built.updated_at > updated_at
    return changed


def _clear_quarantine(writer: Bulk, source: str, stream: Stream, ids: Sequence[str]) -> None:
    """A record that now stages cleanly is no longer quarantined.

    The stream's quarantined keys are read first, up to one more than the batch has ids:
    a quarantine that small (the usual few rows) is matched to the batch here and only
    its staged keys are deleted, where a delete for every id of every batch cost about
    5 % of a million-customer store's staging; a larger one is deleted from by id."""
    if not ids:
        return
    fixed = {"source": source, "stream": stream.value, "action": "quarantined"}
    held = writer.values_where(schema.quarantine, fixed, "record_key", len(ids) + 1)
    if len(held) > len(ids):
        writer.delete_in(schema.quarantine, fixed, "record_key", ids)
    elif held:
        writer.delete_in(
            schema.quarantine, fixed, "record_key", sorted(set(held).intersection(ids))
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
    bulk(conn).gather_statistics([table])


def forget_issues(conn: Connection, source: str, stream: Stream, before: int) -> int:
    """Forgets the stream's issues last seen before ``before`` (ms since the epoch), after
    a read of the whole stream whose issues were all stored as seen then: that read
    reported again every bad record still there, so an issue it did not report is of a
    record fixed or gone (a malformed line, kept under a digest of its text, is never
    otherwise seen to be fixed). Returns how many were forgotten."""
    table = schema.quarantine
    done = conn.execute(
        delete(table).where(
            table.c.source == source,
            table.c.stream == stream.value,
            table.c.last_seen < before,
        )
    )
    return int(done.rowcount or 0)


__all__ = [
    "NOT_COUNTED",
    "StageStats",
    "count_issues",
    "fallback_key",
    "forget_issues",
    "person_key",
    "stage_records",
    "store_issues",
    "to_minor",
]
