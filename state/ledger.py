"""Ledger, in flight, failures and consent events: what destinations were sent,
acknowledged, refused or said.

Per batch: ``mark_in_flight`` records the changes in the transaction before they are
sent; ``record_results`` runs after the destination answered, in one transaction that
moves acknowledged changes into the ledger (and out of flight), keeps pending ones in
flight with their job, and records refusals. A crash at any point leaves either the
whole acknowledgement or none of it, and never forgets what may have been applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, delete, select, update
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
from state.dialect import bytewise, upsert_insert
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


def mark_in_flight(
    conn: Connection, destination: str, run_id: int | None, changes: Sequence[Change], now_ms: int
) -> None:
    """Records ``changes`` as sent before they go out.

    ``possible`` is what the person may hold at the destination whatever part of the push
    lands: the new memberships and those it removes (the diff computed the removals from
    the acknowledged and the possibly applied ones, so nothing older is lost).
    """
    if not changes:
        return
    rows = [
        {
            "destination": destination,
            "person_key": change.person_key,
            "action": change.action.value,
            "possible": SEPARATOR.join(sorted({*change.memberships, *change.memberships_remove})),
            "job": None,
            "change": encode_change(change),
            "sent_at": now_ms,
            "run_id": run_id,
        }
        for change in changes
    ]
    insert = upsert_insert(conn, schema.in_flight)
    keys = {"destination", "person_key"}
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=sorted(keys),
            set_={c: insert.excluded[c] for c in rows[0] if c not in keys},
        ),
        rows,
    )


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
    failures; returns counts by outcome."""
    by_key = {r.person_key: r for r in results}
    ledger_rows: list[dict[str, Any]] = []
    acked_keys: list[str] = []
    pending: dict[str, list[str]] = {}
    failed: list[tuple[Change, PushResult]] = []
    counts = {"ok": 0, "failed": 0, "rejected": 0, "compliance": 0, "pending": 0}
    for change in changes:
        result = by_key.get(change.person_key) or PushResult(
            change.person_key, Outcome.FAILED, message="the destination returned no result"
        )
        counts[result.outcome.value] += 1
        if result.outcome is Outcome.OK:
            acked_keys.append(change.person_key)
            archived = change.action is not Action.UPSERT
            ledger_rows.append(
                {
                    "destination": destination,
                    "person_key": change.person_key,
                    "payload_hash": change.payload_hash,
                    "payload": orjson.dumps(
                        dict(change.fields), option=orjson.OPT_SORT_KEYS
                    ).decode(),
                    "memberships": SEPARATOR.join(change.memberships),
                    "remote_id": result.remote_id or change.remote_id,
                    "status": "archived" if archived else "synced",
                    "acked_at": now_ms,
                    "run_id": run_id,
                }
            )
        elif result.outcome is Outcome.PENDING and result.job:
            pending.setdefault(result.job, []).append(change.person_key)
        else:
            failed.append((change, result))
    if ledger_rows:
        insert = upsert_insert(conn, schema.ledger)
        keys = {"destination", "person_key"}
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=sorted(keys),
                set_={c: insert.excluded[c] for c in ledger_rows[0] if c not in keys},
            ),
            ledger_rows,
        )
        for table in (schema.failures, schema.in_flight):
            for start in range(0, len(acked_keys), 500):
                conn.execute(
                    delete(table).where(
                        table.c.destination == destination,
                        table.c.person_key.in_(acked_keys[start : start + 500]),
                    )
                )
    f = schema.in_flight
    for job, keys_of_job in pending.items():
        for start in range(0, len(keys_of_job), 500):
            conn.execute(
                update(f)
                .where(
                    f.c.destination == destination,
                    f.c.person_key.in_(keys_of_job[start : start + 500]),
                )
                .values(job=job)
            )
    if failed:
        # what failed stays in flight (it may be partly applied), but waits for no job
        failed_keys = [c.person_key for c, _ in failed]
        for start in range(0, len(failed_keys), 500):
            conn.execute(
                update(f)
                .where(
                    f.c.destination == destination,
                    f.c.person_key.in_(failed_keys[start : start + 500]),
                    f.c.job.is_not(None),
                )
                .values(job=None)
            )
        _record_failures(conn, destination, failed, now_ms, retry)
    return counts


def pending_jobs(conn: Connection, destination: str) -> dict[str, list[Change]]:
    """The asynchronous jobs still to collect for ``destination``, with their changes."""
    f = schema.in_flight
    rows = conn.execute(
        select(f.c.job, f.c.change)
        .where(f.c.destination == destination, f.c.job.is_not(None))
        .order_by(f.c.job, bytewise(conn, f.c.person_key))
    )
    jobs: dict[str, list[Change]] = {}
    for job, change in rows:
        jobs.setdefault(job, []).append(decode_change(change))
    return jobs


def encode_change(change: Change) -> str:
    """A change as JSON, to settle a pending job with (the fields are JSON already)."""
    return orjson.dumps(
        {
            "person_key": change.person_key,
            "action": change.action.value,
            "is_new": change.is_new,
            "email": change.email,
            "phone": change.phone,
            "fields": dict(change.fields),
            "memberships_add": change.memberships_add,
            "memberships_remove": change.memberships_remove,
            "email_intent": change.email_intent.value,
            "sms_intent": change.sms_intent.value,
            "payload_hash": change.payload_hash,
            "remote_id": change.remote_id,
            "memberships": change.memberships,
            "email_consent_at": change.email_consent_at,
            "sms_consent_at": change.sms_consent_at,
            "resent": change.resent,
        }
    ).decode()


def decode_change(text: str) -> Change:
    data = orjson.loads(text)
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
    conn: Connection,
    destination: str,
    failed: list[tuple[Change, PushResult]],
    now_ms: int,
    retry: RetryPolicy,
) -> None:
    f = schema.failures
    keys = [c.person_key for c, _ in failed]
    previous: dict[str, Any] = {}
    for start in range(0, len(keys), 500):
        rows = conn.execute(
            select(f).where(
                f.c.destination == destination, f.c.person_key.in_(keys[start : start + 500])
            )
        )
        previous.update({r.person_key: r for r in rows})
    out = []
    for change, result in failed:
        before = previous.get(change.person_key)
        same_payload = before is not None and before.payload_hash == change.payload_hash
        attempts = int(before.attempts) + 1 if before is not None and same_payload else 1
        next_attempt: int | None = None
        if result.outcome is Outcome.FAILED and attempts < retry.max_attempts:
            next_attempt = now_ms + min(retry.first_wait_ms * 2 ** (attempts - 1), MAX_RETRY_MS)
        out.append(
            {
                "destination": destination,
                "person_key": change.person_key,
                "reason_class": result.outcome.value,
                "message": (result.message or result.outcome.value)[:2000],
                "payload_hash": change.payload_hash,
                "attempts": attempts,
                "first_failed_at": before.first_failed_at if before is not None else now_ms,
                "last_failed_at": now_ms,
                "next_attempt_at": next_attempt,
            }
        )
    insert = upsert_insert(conn, f)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["destination", "person_key"],
            set_={c: insert.excluded[c] for c in out[0] if c not in {"destination", "person_key"}},
        ),
        out,
    )


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
    state) in scope."""
    if not emails:
        return set()
    c, e = schema.customers, schema.consent_events
    state_column = c.c.email_consent if channel == "email" else c.c.sms_consent
    at_column = c.c.email_consent_at if channel == "email" else c.c.sms_consent_at
    latest: dict[str, tuple[int, bool]] = {}

    def note(email: str, at: int | None, state: str) -> None:
        entry = (at or 0, state != "subscribed")  # at equal times an opt-out wins
        if email not in latest or entry > latest[email]:
            latest[email] = entry

    staged = conn.execute(
        select(c.c.email, state_column, at_column, c.c.updated_at).where(
            c.c.email.in_(emails), c.c.source.in_(scopes), state_column != "none"
        )
    )
    for email, state, at, updated in staged:
        note(email, at or updated, state)
    events = conn.execute(
        select(e.c.email, e.c.state, e.c.occurred_at).where(
            e.c.email.in_(emails), e.c.source.in_(scopes), e.c.channel == channel
        )
    )
    for email, state, at in events:
        note(email, at, state)
    return {email for email, (_, out) in latest.items() if out}


def consent_events(conn: Connection, scopes: Sequence[str], limit: int) -> Iterator[Any]:
    e = schema.consent_events
    query = select(e).where(e.c.source.in_(scopes)).order_by(e.c.occurred_at.desc()).limit(limit)
    return iter(conn.execute(query))
