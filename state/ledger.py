"""Ledger, in flight, failures and consent events: what destinations were sent,
acknowledged, refused or said.

Per batch: ``mark_in_flight`` records the changes in the transaction before they are
sent; ``record_results`` runs after the destination answered, in one transaction that
moves acknowledged changes into the ledger (and out of flight), keeps pending ones in
flight with their job, records refusals, and releases the changes the destination did
not send. A crash at any point leaves either the whole acknowledgement or none of it,
and never forgets what may have been applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, select
from sqlalchemy.engine import Connection

from crmsync.contract import (
    Action,
    Change,
    ConsentIntent,
    ConsentUpdate,
    Outcome,
    PushResult,
)
from state import schema
from state.bulk import Row
from state.dialect import bytewise, key_list, one_of, upsert_insert
from state.ledger_bulk import Columns, JobRow, LedgerBulk, ledger_bulk
from state.timeutil import to_ms

SEPARATOR = "\n"  # joins membership names in one column
MAX_RETRY_MS = 24 * 3_600_000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    first_wait_ms: int


def ledger_query(conn: Connection, destination: str) -> Select[Any]:
    t = schema.ledger
    key = bytewise(conn, t.c.person_key)
    return (
        select(
            t.c.person_key,
            t.c.payload_hash,
            t.c.memberships,
            t.c.remote_id,
            t.c.status,
            t.c.acked_at,
            t.c.payload,
        )
        .where(t.c.destination == destination)
        .order_by(key)
    )


def in_flight_query(conn: Connection, destination: str) -> Select[Any]:
    t = schema.in_flight
    key = bytewise(conn, t.c.person_key)
    return (
        select(t.c.person_key, t.c.action, t.c.possible, t.c.job)
        .where(t.c.destination == destination)
        .order_by(key)
    )


def failures_query(conn: Connection, destination: str) -> Select[Any]:
    t = schema.failures
    key = bytewise(conn, t.c.person_key)
    return (
        select(
            t.c.person_key, t.c.reason_class, t.c.payload_hash, t.c.attempts, t.c.next_attempt_at
        )
        .where(t.c.destination == destination)
        .order_by(key)
    )


# the columns each table is written with, in the order of the rows built below
IN_FLIGHT_COLUMNS: Columns = ("destination", "person_key", "action", "possible", "job")
IN_FLIGHT_COLUMNS += ("change", "sent_at", "run_id")
LEDGER_COLUMNS: Columns = ("destination", "person_key", "payload_hash", "payload")
LEDGER_COLUMNS += ("memberships", "remote_id", "status", "acked_at", "run_id")
FAILURE_COLUMNS: Columns = ("destination", "person_key", "reason_class", "message")
FAILURE_COLUMNS += ("payload_hash", "attempts", "first_failed_at", "last_failed_at")
FAILURE_COLUMNS += ("next_attempt_at",)
NO_CHANGE = ""  # in flight's ``change`` until the person waits for a job


def mark_in_flight(
    conn: Connection, destination: str, run_id: int | None, changes: Sequence[Change], now_ms: int
) -> None:
    """Records ``changes`` as sent before they go out.

    ``possible`` is what the person may hold at the destination whatever part of the push
    lands: the new memberships and those it removes (the diff computed the removals from
    the acknowledged and the possibly applied ones, so nothing older is lost).

    The change itself is written only when its person is left waiting for a job
    (``record_results``): only ``collect`` reads it back, and only for such people, so
    a row that is acknowledged, refused, or left behind by a crash never needs it.
    """
    rows = [
        (
            destination,
            change.person_key,
            change.action.value,
            SEPARATOR.join(sorted({*change.memberships, *change.memberships_remove})),
            None,
            NO_CHANGE,
            now_ms,
            run_id,
        )
        for change in changes
    ]
    ledger_bulk(conn).upsert(schema.in_flight, IN_FLIGHT_COLUMNS, rows)


def record_results(
    conn: Connection,
    destination: str,
    run_id: int | None,
    changes: Sequence[Change],
    results: Sequence[PushResult],
    *,
    now_ms: int,
    retry: RetryPolicy,
) -> dict[str, int]:
    """Writes acknowledgements to the ledger, pending jobs to in flight and refusals to
    failures; returns counts by outcome.

    Acknowledged people leave in flight and failures; people waiting for a job keep it
    (with their change, to settle it with); what failed stays in flight, since it may be
    partly applied, but waits for no job. A change NOT_SENT leaves no trace: it is
    released from flight, and its failure (attempts, next attempt) stays as it was, so
    the person is planned again with nothing charged. Only a person who may hold an
    earlier push (``Change.resent``, or one waiting for a job, whose change was sent
    before it) stays in flight, waiting for no job, as after a crash.
    """
    by_key = {r.person_key: r for r in results}
    acknowledged: list[Row] = []
    jobs: list[JobRow] = []
    failed: list[tuple[Change, PushResult]] = []
    released: list[str] = []
    counts = {"ok": 0, "failed": 0, "rejected": 0, "compliance": 0, "pending": 0}
    for change in changes:
        key = change.person_key
        result = by_key.get(key) or PushResult(
            key, Outcome.FAILED, message="the destination returned no result"
        )
        outcome = result.outcome
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
        if outcome is Outcome.OK:
            acknowledged.append(
                (
                    destination,
                    key,
                    change.payload_hash,
                    _payload(change.fields),
                    SEPARATOR.join(change.memberships),
                    result.remote_id or change.remote_id,
                    "synced" if change.action is Action.UPSERT else "archived",
                    now_ms,
                    run_id,
                )
            )
        elif outcome is Outcome.PENDING and result.job:
            # the remote id the destination already gave goes with the change: its
            # collect may need it (Klaviyo's list job moves profiles by id)
            waiting = change
            if result.remote_id and result.remote_id != change.remote_id:
                waiting = replace(change, remote_id=result.remote_id)
            jobs.append((key, result.job, encode_change(waiting)))
        elif outcome is Outcome.NOT_SENT:
            if change.resent:
                jobs.append((key, None, None))
            else:
                released.append(key)
        else:
            failed.append((change, result))
            jobs.append((key, None, None))
    writer = ledger_bulk(conn)
    if released:  # a job's people were sent before they waited: they stay in flight
        rows = writer.select(schema.in_flight, ("person_key", "job"), destination, released)
        sent = {key for key, job in rows if job is not None}
        jobs.extend((key, None, None) for key in released if key in sent)
        released = [key for key in released if key not in sent]
    if acknowledged:
        writer.upsert(schema.ledger, LEDGER_COLUMNS, acknowledged)
        keys = [row[1] for row in acknowledged]
        writer.delete(schema.failures, destination, keys)
        writer.delete(schema.in_flight, destination, keys)
    if released:
        writer.delete(schema.in_flight, destination, released)
    writer.assign_jobs(destination, jobs)
    if failed:
        _record_failures(writer, destination, failed, now_ms, retry)
    return counts


def _payload(fields: Mapping[str, Any]) -> str:
    """The acknowledged fields as the ledger keeps them: JSON with sorted keys."""
    return orjson.dumps(fields, default=_plain, option=orjson.OPT_SORT_KEYS).decode()


def _plain(value: object) -> dict[str, Any]:
    """orjson's fallback: a mapping that is not a dict (the fields of a change) as one."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


JOB_PAGE = 10_000  # changes of one job per ``job_pages`` page: Klaviyo's largest job fits one


def pending_job_ids(conn: Connection, destination: str) -> list[str]:
    """The asynchronous jobs still to collect for ``destination``."""
    f = schema.in_flight
    rows = conn.execute(
        select(f.c.job)
        .where(f.c.destination == destination, f.c.job.is_not(None))
        .group_by(f.c.job)
        .order_by(f.c.job)
    )
    return [job for (job,) in rows]


def job_pages(
    conn: Connection, destination: str, job: str, page: int = JOB_PAGE
) -> Iterator[list[Change]]:
    """The changes still waiting for ``job``, in pages of at most ``page`` by person key.

    One query per page, each starting after the last key of the one before, so a job of
    any size is read in bounded memory, and no cursor stays open while the caller
    records each page's results (which takes those rows out of flight).
    """
    f = schema.in_flight
    key = bytewise(conn, f.c.person_key)
    after: str | None = None
    while True:
        query = select(f.c.person_key, f.c.change).where(
            f.c.destination == destination, f.c.job == job
        )
        if after is not None:
            query = query.where(key > after)
        rows = conn.execute(query.order_by(key).limit(page)).all()
        if not rows:
            return
        yield [decode_change(change) for _, change in rows]
        if len(rows) < page:
            return
        after = rows[-1][0]


def encode_change(change: Change) -> str:
    """A change as JSON, to settle a pending job with: a positional array in the order of
    ``decode_change`` (no names to write and read again; the fields are JSON already)."""
    return orjson.dumps(
        (
            change.person_key,
            change.action,
            change.is_new,
            change.email,
            change.phone,
            change.fields,
            change.memberships_add,
            change.memberships_remove,
            change.email_intent,
            change.sms_intent,
            change.payload_hash,
            change.remote_id,
            change.memberships,
            change.email_consent_at,
            change.sms_consent_at,
            change.resent,
        ),
        default=_plain,
    ).decode()


def decode_change(text: str) -> Change:
    data = orjson.loads(text)
    if isinstance(data, dict):  # written by an earlier version: an object with names
        return _decode_named(data)
    (
        person_key,
        action,
        is_new,
        email,
        phone,
        fields,
        add,
        remove,
        email_intent,
        sms_intent,
        payload_hash,
        remote_id,
        memberships,
        email_at,
        sms_at,
        resent,
    ) = data
    return Change(
        person_key=person_key,
        action=Action(action),
        is_new=is_new,
        email=email,
        phone=phone,
        fields=fields,
        memberships_add=tuple(add),
        memberships_remove=tuple(remove),
        email_intent=ConsentIntent(email_intent),
        sms_intent=ConsentIntent(sms_intent),
        payload_hash=payload_hash,
        remote_id=remote_id,
        memberships=tuple(memberships),
        email_consent_at=_when(email_at),
        sms_consent_at=_when(sms_at),
        resent=resent,
    )


def _decode_named(data: dict[str, Any]) -> Change:
    return Change(
        person_key=data["person_key"],
        action=Action(data["action"]),
        is_new=data["is_new"],
        email=data["email"],
        phone=data["phone"],
        fields=data["fields"],
        memberships_add=tuple(data["memberships_add"]),
        memberships_remove=tuple(data["memberships_remove"]),
        email_intent=ConsentIntent(data["email_intent"]),
        sms_intent=ConsentIntent(data["sms_intent"]),
        payload_hash=data["payload_hash"],
        remote_id=data["remote_id"],
        memberships=tuple(data["memberships"]),
        email_consent_at=_when(data["email_consent_at"]),
        sms_consent_at=_when(data["sms_consent_at"]),
        resent=data.get("resent", False),
    )


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _record_failures(
    writer: LedgerBulk,
    destination: str,
    failed: list[tuple[Change, PushResult]],
    now_ms: int,
    retry: RetryPolicy,
) -> None:
    keys = [c.person_key for c, _ in failed]
    columns = ("person_key", "payload_hash", "attempts", "first_failed_at")
    previous = {
        key: (payload_hash, attempts, first)
        for key, payload_hash, attempts, first in writer.select(
            schema.failures, columns, destination, keys
        )
    }
    rows: list[Row] = []
    for change, result in failed:
        before = previous.get(change.person_key)
        same_payload = before is not None and before[0] == change.payload_hash
        attempts = int(before[1]) + 1 if before is not None and same_payload else 1
        next_attempt: int | None = None
        if result.outcome is Outcome.FAILED and attempts < retry.max_attempts:
            next_attempt = now_ms + min(retry.first_wait_ms * 2 ** (attempts - 1), MAX_RETRY_MS)
        rows.append(
            (
                destination,
                change.person_key,
                result.outcome.value,
                (result.message or result.outcome.value)[:2000],
                change.payload_hash,
                attempts,
                before[2] if before is not None else now_ms,
                now_ms,
                next_attempt,
            )
        )
    writer.upsert(schema.failures, FAILURE_COLUMNS, rows)


def add_consent_events(
    conn: Connection, scope: str, updates: Iterable[ConsentUpdate], recorded_at: int
) -> int:
    rows = [
        {
            "person_key": f"e:{u.email}",
            "email": u.email,
            "channel": u.channel.value,
            "state": u.state.value,
            "source": scope,
            "reason": u.reason,
            "occurred_at": to_ms(u.at),
            "recorded_at": recorded_at,
        }
        for u in updates
    ]
    if not rows:
        return 0
    events = schema.consent_events
    insert = (
        upsert_insert(conn, events)
        .on_conflict_do_nothing(
            index_elements=["person_key", "channel", "source", "occurred_at", "state"]
        )
        .returning(events.c.id)
    )
    return len(conn.execute(insert, rows).all())


def opted_out(
    conn: Connection, emails: Sequence[str], scopes: Sequence[str], channel: str = "email"
) -> set[str]:
    """Which of these e-mails are already recorded as opted out of ``channel`` (latest
    state) in scope.

    Both look-ups seek by the person key ``e:<email>``: a staged customer with an e-mail
    has that key (``stage_rows.person_key``), and on SQLite the customers' covering
    profile index leads with it, so each address costs one index seek and no table row
    (through the e-mail index, each found customer cost a second seek into the table:
    most of the look-up, since a read-back after a first sync asks about every
    unsubscribe that sync pushed). PostgreSQL has no covering index there: it seeks the
    person index, then the row. Staged customers' sources are checked here rather than
    in SQL: with ``source IN (...)`` in the query SQLite walks the whole source in the
    primary key.

    One statement per table for the whole list (one ``IN (...)`` of bound parameters: a
    caller's chunk of e-mails), its rows taken in one fetch rather than one at a time.
    """
    if not emails:
        return set()
    in_scope = set(scopes)
    keys = [f"e:{email}" for email in emails]
    c, e = schema.customers, schema.consent_events
    state_column = c.c.email_consent if channel == "email" else c.c.sms_consent
    at_column = c.c.email_consent_at if channel == "email" else c.c.sms_consent_at
    # the list is a parameter bound at execution (``one_of``): written into the
    # statement, SQLAlchemy would coerce it one element at a time
    bound = {"keys": key_list(conn, keys)}
    staged = conn.execute(
        select(c.c.source, c.c.email, state_column, at_column, c.c.updated_at).where(
            one_of(conn, c.c.person_key, "keys", bound["keys"]), state_column != "none"
        ),
        bound,
    ).all()
    events = conn.execute(
        select(e.c.email, e.c.occurred_at, e.c.state).where(
            one_of(conn, e.c.person_key, "keys", bound["keys"]),
            e.c.source.in_(scopes),
            e.c.channel == channel,
        ),
        bound,
    ).all()
    found = [
        (email, at or updated, state)
        for source, email, state, at, updated in staged
        if source in in_scope
    ]
    latest: dict[str, tuple[int, bool]] = {}
    for email, at, state in [*found, *events]:
        entry = (at or 0, state != "subscribed")  # at equal times an opt-out wins
        if email not in latest or entry > latest[email]:
            latest[email] = entry
    return {email for email, (_, out) in latest.items() if out}


def consent_events(conn: Connection, scopes: Sequence[str], limit: int) -> Iterator[Any]:
    e = schema.consent_events
    query = select(e).where(e.c.source.in_(scopes)).order_by(e.c.occurred_at.desc()).limit(limit)
    return iter(conn.execute(query))
