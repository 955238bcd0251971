"""Naming the staged records a run did not sync: queries and the ``not_synced`` table.

The planner keeps only the keys of the people a destination could not address (few, and
nothing per person otherwise); here those keys become their customers, orders and carts,
looked up through the person-key indexes a chunk of keys at a time. The reason follows
from the key: ``s:`` is a customer with neither e-mail nor phone, or, when no customer
has the key, an order or cart whose customer was never read or is quarantined; ``p:``
has no e-mail; ``e:`` (for a destination that addresses by phone only) has no phone.
Records of nobody (no customer and no e-mail) and records in another currency are found
by their own queries, since no profile reads them.

Each run replaces its pipeline's rows, so the table says what the last run left out;
its primary key (pipeline, reason, ...) serves the counts and the first rows per reason.
A run that names exactly what the last one did (the usual case: the same few bad
records, run after run) writes nothing but its run id: ``not_synced_sets`` keeps a
digest of the set.

A run that plans only some people again (``engine.plan_run``, incremental) names only
what can have changed (``rename_scope``): its people's records replace theirs, and the
rows of everyone else stand, since a person none of whose records was staged, re-keyed
or deleted since the last planning is outside its scope and has the same records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from crmsync.not_synced import NotSynced, Reason, Summary
from crmsync.profile_scope import ProfileContext
from state import schema
from state.dialect import bytewise, key_list, one_of, upsert_insert
from state.profile_reads import cart_filter, of_sources, order_filter
from state.timeutil import now_ms

CHUNK = 500  # person keys per look-up
WRITE_BATCH = 1000
SEPARATOR = "\n"
UNKNOWN = ""  # the digest of a set written in part: the next full naming writes it whole
# found by their own queries, whoever is in a run's scope: named anew by every run
EVERY_RUN = (Reason.GUEST_NO_EMAIL.value, Reason.OTHER_CURRENCY.value)


@dataclass(frozen=True, slots=True)
class Naming:
    """How a run names the records it left out."""

    run_id: int | None
    keep: bool  # keep the names (not a dry run)
    limit: int  # records listed per reason in the summary
    currencies: bool  # look for records in another currency (the run counted some)


def records(
    conn: Connection,
    ctx: ProfileContext,
    invalid: Mapping[str, Sequence[str]],
    currencies: bool = True,
) -> Iterator[NotSynced]:
    """Every staged record of the pipeline left out, except the quarantined ones.

    ``invalid`` is, per destination, the keys of the people it could not address.
    ``currencies`` says whether to look for records in another currency: two scans
    (no index has the currency), so a run looks only when it counted orders in another
    currency (``profile_reads.foreign_currency_orders``, read through an index).
    """
    yield from people(conn, ctx, invalid)
    yield from nobodys(conn, ctx)
    if currencies:
        yield from other_currency(conn, ctx)


def people(
    conn: Connection, ctx: ProfileContext, invalid: Mapping[str, Sequence[str]]
) -> Iterator[NotSynced]:
    """The records of the people skipped as invalid, each with the destinations missed."""
    missed: dict[str, list[str]] = {}
    for destination, keys in invalid.items():
        for key in keys:
            missed.setdefault(key, []).append(destination)
    keys = sorted(missed)  # code point order: byte order, as both engines compare keys
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        found: dict[tuple[str, str], list[Any]] = {}
        bound = key_list(conn, chunk)
        for stream, lookup in _lookups(conn, ctx, bound):
            for row in conn.execute(lookup, {"keys": bound, "low": chunk[0], "high": chunk[-1]}):
                found.setdefault((stream, row.person_key), []).append(row)
        yield from _of_people(conn, chunk, found, missed)


def _lookups(conn: Connection, ctx: ProfileContext, keys: Any) -> list[tuple[str, Select[Any]]]:
    """Per stream, the records of a chunk of person keys, through the person-key indexes
    (the source terms unindexed, as the profile reads have them) and with the same
    filters as those reads, so that the names match what was skipped. ``keys`` is the
    chunk's ``dialect.key_list``, whose kind decides the statements' form; their text is
    the same for every chunk, and they are compiled once.

    The chunk's first and last key bound it as a range too. Without statistics (a store
    just staged; autovacuum off or not yet run) PostgreSQL takes each key of a list to
    match 0.5% of a table and, from some 30 keys, scans the table instead of the index
    (0.2 s per look-up at 100k customers); a range it takes for narrow. Three statements,
    not one union, which it would plan in parallel workers that take longer to start
    than the look-ups take.
    """
    c, o, k = schema.customers, schema.orders, schema.carts
    low: Any = bindparam("low")
    high: Any = bindparam("high")

    def wanted(column: Any) -> ColumnElement[bool]:
        ordered = bytewise(conn, column)
        return and_(one_of(conn, column, "keys", keys), ordered >= low, ordered <= high)

    nobody = literal(None, c.c.external_id.type).label("customer_id")
    return [
        (
            "customers",
            select(c.c.person_key, c.c.source, c.c.external_id, nobody).where(
                wanted(c.c.person_key), of_sources(c.c.source, ctx.sources)
            ),
        ),
        (
            "orders",
            select(o.c.person_key, o.c.source, o.c.external_id)
            .add_columns(o.c.customer_external_id.label("customer_id"))
            .where(wanted(o.c.person_key), order_filter(o, ctx)),
        ),
        (
            "carts",
            select(k.c.person_key, k.c.source, k.c.external_id)
            .add_columns(k.c.customer_external_id.label("customer_id"))
            .where(wanted(k.c.person_key), cart_filter(k, ctx)),
        ),
    ]


def _of_people(
    conn: Connection,
    keys: list[str],
    found: dict[tuple[str, str], list[Any]],
    missed: dict[str, list[str]],
) -> Iterator[NotSynced]:
    """Each key's records, customers first, each stream in (source, id) order."""
    for rows in found.values():
        rows.sort(key=lambda row: (row.source, row.external_id))
    owned = [
        (row.source, row.customer_id)
        for key in keys
        if ("customers", key) not in found
        for stream in ("orders", "carts")
        for row in found.get((stream, key), ())
    ]
    held = _quarantined_customers(conn, set(owned)) if owned else set()
    for key in keys:
        destinations = tuple(sorted(missed[key]))
        reason = _reason(key, ("customers", key) in found)
        for stream in ("customers", "orders", "carts"):
            for row in found.get((stream, key), ()):
                why = reason
                if why is Reason.UNKNOWN_CUSTOMER and (row.source, row.customer_id) in held:
                    why = Reason.CUSTOMER_QUARANTINED
                yield NotSynced(
                    why, row.source, stream, row.external_id, key, row.customer_id, destinations
                )


def _reason(key: str, has_customer: bool) -> Reason:
    if key.startswith("e:"):
        return Reason.NO_PHONE  # only a destination that addresses by phone skips an e: key
    if key.startswith("p:"):
        return Reason.NO_EMAIL
    return Reason.NO_IDENTITY if has_customer else Reason.UNKNOWN_CUSTOMER


def _quarantined_customers(
    conn: Connection, wanted: set[tuple[str, str | None]]
) -> set[tuple[str, str]]:
    """The (source, customer id) pairs among ``wanted`` whose customer is quarantined."""
    q = schema.quarantine
    by_source: dict[str, list[str]] = {}
    for source, customer_id in wanted:
        if customer_id is not None:
            by_source.setdefault(source, []).append(customer_id)
    found: set[tuple[str, str]] = set()
    for source, ids in by_source.items():
        for start in range(0, len(ids), CHUNK):
            query = select(q.c.record_key).where(
                q.c.source == source,
                q.c.stream == "customers",
                q.c.action == "quarantined",
                q.c.record_key.in_(ids[start : start + CHUNK]),
            )
            found.update((source, key) for key in conn.execute(query).scalars())
    return found


def nobodys(conn: Connection, ctx: ProfileContext) -> Iterator[NotSynced]:
    """Orders and open carts with neither a customer nor an e-mail (no person key), found
    through the person-key indexes."""
    o, k = schema.orders, schema.carts
    for stream, table, where in (
        ("orders", o, o.c.person_key.is_(None)),
        ("carts", k, and_(k.c.person_key.is_(None), k.c.converted == false())),
    ):
        query = select(table.c.source, table.c.external_id).where(
            where, of_sources(table.c.source, ctx.sources)
        )
        for row in _streamed(conn, query):
            yield NotSynced(Reason.GUEST_NO_EMAIL, row.source, stream, row.external_id)


def other_currency(conn: Connection, ctx: ProfileContext) -> Iterator[NotSynced]:
    """Orders and open carts of a person in another currency than the pipeline's."""
    o, k = schema.orders, schema.carts
    for stream, table, where in (
        ("orders", o, o.c.currency != ctx.currency),
        ("carts", k, and_(k.c.currency != ctx.currency, k.c.converted == false())),
    ):
        columns = (table.c.source, table.c.external_id, table.c.person_key)
        query = select(*columns, table.c.customer_external_id).where(
            where, table.c.person_key.is_not(None), of_sources(table.c.source, ctx.sources)
        )
        for row in _streamed(conn, query):
            yield NotSynced(
                Reason.OTHER_CURRENCY,
                row.source,
                stream,
                row.external_id,
                row.person_key,
                row.customer_external_id,
            )


def _streamed(conn: Connection, query: Any) -> Iterable[Any]:
    """The rows of ``query``, fetched a batch at a time (a server-side cursor on
    PostgreSQL); the option is the statement's, so the connection can go on writing."""
    return conn.execute(query.execution_options(stream_results=True, yield_per=WRITE_BATCH))


class Digest:
    """A digest of a set of records, whatever order they come in (a sum of their own
    digests), to tell whether a run names exactly what the last one did."""

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def add(self, record: NotSynced) -> None:
        body = SEPARATOR.join(
            (
                record.reason.value,
                record.source,
                record.stream,
                record.record_key,
                record.person_key or "",
                record.customer_id or "",
                ",".join(record.destinations),
            )
        )
        self.total += int.from_bytes(hashlib.blake2b(body.encode(), digest_size=16).digest())
        self.count += 1

    def hexdigest(self) -> str:
        return f"{self.total % 2**128:032x}"


def summed(found: Iterable[NotSynced], summary: Summary) -> Iterator[NotSynced]:
    """``found`` as it is read, each record added to ``summary`` on its way."""
    for record in found:
        summary.add(record)
        yield record


def stored_digest(conn: Connection, pipeline: str) -> str | None:
    table = schema.not_synced_sets
    query = select(table.c.digest).where(table.c.pipeline == pipeline)
    return conn.execute(query).scalar()


def replace(conn: Connection, pipeline: str, found: Iterable[NotSynced]) -> Digest:
    """Replaces the pipeline's rows with ``found``, written in batches (memory stays
    flat); returns the digest of what was written."""
    table = schema.not_synced
    conn.execute(delete(table).where(table.c.pipeline == pipeline))
    digest = Digest()
    _write(conn, pipeline, found, digest)
    return digest


def _write(
    conn: Connection, pipeline: str, found: Iterable[NotSynced], digest: Digest | None = None
) -> int:
    """Adds ``found`` to the pipeline's rows, in batches; returns how many."""
    table = schema.not_synced
    written = 0
    batch: list[dict[str, Any]] = []
    for record in found:
        if digest is not None:
            digest.add(record)
        batch.append(
            {
                "pipeline": pipeline,
                "reason": record.reason.value,
                "source": record.source,
                "stream": record.stream,
                "record_key": record.record_key,
                "person_key": record.person_key,
                "customer_id": record.customer_id,
                "destinations": SEPARATOR.join(record.destinations),
            }
        )
        if len(batch) >= WRITE_BATCH:
            conn.execute(table.insert(), batch)
            written += len(batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)
        written += len(batch)
    return written


def rename_scope(
    conn: Connection,
    pipeline: str,
    ctx: ProfileContext,
    scope: Select[Any],
    invalid: Mapping[str, Sequence[str]],
    currencies: bool,
) -> int | None:
    """Names again, on ``conn`` and in its transaction, only what a run that planned the
    people in ``scope`` (a query of their person keys) can have changed:

    - the rows of the people in the scope make way for the records of those among them
      a destination could not address (``invalid``, per destination);
    - the records of nobody and in another currency, found by their own queries, are
      named anew (as ``records`` does);
    - an order or cart whose customer was never read is told apart again from one whose
      customer is quarantined, since a record can enter or leave quarantine without its
      person being planned again.

    Returns how many rows the pipeline has now, or None when no run named its records
    yet (then everything must be named). The stored digest becomes ``UNKNOWN``, so the
    next run that names everything writes its set whole.
    """
    sets, table = schema.not_synced_sets, schema.not_synced
    before = conn.execute(select(sets.c.records).where(sets.c.pipeline == pipeline)).scalar()
    if before is None:
        return None
    ours = table.c.pipeline == pipeline
    renamed = or_(table.c.person_key.in_(scope), table.c.reason.in_(EVERY_RUN))
    gone = conn.execute(delete(table).where(ours, renamed)).rowcount
    _requalify(conn, pipeline)
    found = chain(people(conn, ctx, invalid), nobodys(conn, ctx))
    if currencies:
        found = chain(found, other_currency(conn, ctx))
    return int(before) - gone + _write(conn, pipeline, found)


def rename(
    conn: Connection,
    pipeline: str,
    ctx: ProfileContext,
    scope: Select[Any],
    invalid: Mapping[str, Sequence[str]],
    naming: Naming,
) -> Summary | None:
    """``rename_scope``, then the run recorded as naming the set and the set's counts and
    first records read back; None when no run named the pipeline's records yet."""
    found = rename_scope(conn, pipeline, ctx, scope, invalid, naming.currencies)
    if found is None:
        return None
    mark(conn, pipeline, UNKNOWN, found, naming.run_id, now_ms())
    return stored(conn, pipeline, ctx.sources, naming.limit)[0]


def named_outside(conn: Connection, pipeline: str, scope: Select[Any]) -> dict[str, list[str]]:
    """Per destination, the people outside ``scope`` it could not address, as the last
    run named them: a dry run that planned only the scope names their records too,
    without writing (``engine.plan_run.name_not_synced``)."""
    table = schema.not_synced
    query = (
        select(table.c.person_key, table.c.destinations)
        .where(
            table.c.pipeline == pipeline,
            table.c.destinations != "",
            table.c.person_key.is_not(None),
            table.c.person_key.not_in(scope),
        )
        .distinct()
    )
    found: dict[str, set[str]] = {}
    for key, destinations in conn.execute(query):
        for name in destinations.split(SEPARATOR):
            found.setdefault(name, set()).add(key)
    return {name: sorted(keys) for name, keys in found.items()}


def _requalify(conn: Connection, pipeline: str) -> None:
    """Sets the reason of the pipeline's rows for an order or cart without a customer
    by whether that customer is quarantined now (as ``_of_people`` decides it)."""
    table, q = schema.not_synced, schema.quarantine
    held = exists().where(
        q.c.source == table.c.source,
        q.c.stream == "customers",
        q.c.record_key == table.c.customer_id,
        q.c.action == "quarantined",
    )
    unknown, quarantined = Reason.UNKNOWN_CUSTOMER.value, Reason.CUSTOMER_QUARANTINED.value
    for was, now, where in ((unknown, quarantined, held), (quarantined, unknown, ~held)):
        conn.execute(
            update(table)
            .where(table.c.pipeline == pipeline, table.c.reason == was, where)
            .values(reason=now)
        )


def mark(
    conn: Connection, pipeline: str, digest: str, records: int, run_id: int | None, at: int
) -> None:
    """Records that run ``run_id`` named the pipeline's ``records`` (their ``digest``,
    or ``UNKNOWN``)."""
    table = schema.not_synced_sets
    insert = upsert_insert(conn, table)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["pipeline"],
            set_={
                "digest": insert.excluded.digest,
                "records": insert.excluded.records,
                "run_id": insert.excluded.run_id,
                "named_at": insert.excluded.named_at,
            },
        ),
        {
            "pipeline": pipeline,
            "digest": digest,
            "records": records,
            "run_id": run_id,
            "named_at": at,
        },
    )


def stored(
    conn: Connection, pipeline: str, sources: Sequence[str], limit: int
) -> tuple[Summary, int | None]:
    """What the pipeline's last run left out: counts per reason, the first ``limit``
    records of each (by source, stream and id, as ``Summary`` keeps them), with the
    records of ``sources`` quarantined now, and that run's id."""
    table, sets = schema.not_synced, schema.not_synced_sets
    summary = Summary(limit)
    run_id = conn.execute(select(sets.c.run_id).where(sets.c.pipeline == pipeline)).scalar()
    counts = conn.execute(
        select(table.c.reason, func.count())
        .where(table.c.pipeline == pipeline)
        .group_by(table.c.reason)
    ).all()
    order = [bytewise(conn, c) for c in (table.c.source, table.c.stream, table.c.record_key)]
    for reason, count in counts:
        rows = conn.execute(
            select(table)
            .where(table.c.pipeline == pipeline, table.c.reason == reason)
            .order_by(*order)
            .limit(limit)
        )
        summary.put(Reason(reason), int(count), [_record(row) for row in rows])
    summary.put(Reason.QUARANTINED, *quarantined(conn, sources, limit))
    return summary, run_id


def _record(row: Any) -> NotSynced:
    return NotSynced(
        Reason(row.reason),
        row.source,
        row.stream,
        row.record_key,
        row.person_key,
        row.customer_id,
        tuple(row.destinations.split(SEPARATOR)) if row.destinations else (),
    )


def quarantined(
    conn: Connection, sources: Sequence[str], limit: int
) -> tuple[int, list[NotSynced]]:
    """How many records of ``sources`` are quarantined, and the first ``limit`` of them."""
    q = schema.quarantine
    where = and_(q.c.source.in_(sources), q.c.action == "quarantined")
    count = conn.execute(
        select(func.count()).select_from(
            select(q.c.source, q.c.stream, q.c.record_key).where(where).distinct().subquery()
        )
    ).scalar()
    rows = conn.execute(
        select(q.c.source, q.c.stream, q.c.record_key, q.c.external_id)
        .where(where)
        .distinct()
        .order_by(q.c.source, q.c.stream, q.c.record_key)
        .limit(limit)
    )
    return int(count or 0), [
        NotSynced(Reason.QUARANTINED, r.source, r.stream, r.external_id or r.record_key)
        for r in rows
    ]
