"""The ledger's bulk writes: one batch with every kind of answer leaves exactly the rows of
ledger, in flight and failures it should, on both state engines."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from crmsync.contract import Action, Change, Outcome, PushResult
from state import schema
from state.ledger import (
    RetryPolicy,
    decode_change,
    encode_change,
    job_pages,
    mark_in_flight,
    record_results,
)
from state.store import Store
from tests.test_push import change

RETRY = RetryPolicy(max_attempts=3, first_wait_ms=1000)
DEST, RUN, SENT, ACKED = "dest", 7, 1_000, 2_000


def key(n: int) -> str:
    return f"e:p{n}@example.com"


def rows(store: Store, table: sa.Table, *columns: str) -> set[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.select(*(table.c[c] for c in columns)))}


def earlier_state(store: Store) -> None:
    """What earlier runs left: an acknowledged person, failures with their attempts, people
    in flight (one waiting for a job), and a row of another destination."""
    old_flight = {"action": "upsert", "possible": "crm-old", "change": "{}", "sent_at": 5}
    with store.transaction() as conn:
        conn.execute(
            sa.insert(schema.ledger),
            [
                {
                    "destination": DEST,
                    "person_key": key(1),
                    "payload_hash": "old",
                    "payload": "{}",
                    "memberships": "crm-new",
                    "remote_id": "r1-old",
                    "status": "synced",
                    "acked_at": 50,
                    "run_id": 3,
                }
            ],
        )
        conn.execute(
            sa.insert(schema.failures),
            [
                {
                    "destination": DEST,
                    "person_key": key(n),
                    "reason_class": reason,
                    "message": "before",
                    "payload_hash": payload_hash,
                    "attempts": 1,
                    "first_failed_at": 100,
                    "last_failed_at": 100,
                    "next_attempt_at": None,
                }
                for n, reason, payload_hash in [
                    (1, "failed", "x"),
                    (2, "failed", "h2"),
                    (3, "rejected", "x"),
                ]
            ],
        )
        conn.execute(
            sa.insert(schema.in_flight),
            [
                {
                    "destination": DEST,
                    "person_key": key(4),
                    "job": "old-job",
                    "run_id": 3,
                    **old_flight,
                },
                {
                    "destination": DEST,
                    "person_key": key(11),
                    "job": "job-A",
                    "run_id": 3,
                    **old_flight,
                },
                {
                    "destination": "other",
                    "person_key": key(4),
                    "job": "x",
                    "run_id": 3,
                    **old_flight,
                },
            ],
        )


def a_batch() -> list[Change]:
    archived = replace(change(6, add=()), action=Action.ARCHIVE, remote_id="r6", memberships=())
    deleted = replace(change(7, add=()), action=Action.DELETE, remote_id="r7", memberships=())
    return [
        change(1, add=("crm-vip",), remove=("crm-new",)),
        change(2),
        change(3),
        change(4, add=("crm-a", "crm-b")),
        change(5),
        archived,
        deleted,
        change(8),
        change(10),
        change(11),
    ]


def answers() -> list[PushResult]:
    return [
        PushResult(key(1), Outcome.OK, remote_id="r1"),
        PushResult(key(2), Outcome.FAILED, message="timeout"),
        PushResult(key(3), Outcome.REJECTED, message="bad phone"),
        PushResult(key(4), Outcome.PENDING, message="held", job="job-B"),
        PushResult(key(5), Outcome.COMPLIANCE, message="unsubscribed there"),
        PushResult(key(6), Outcome.OK),
        PushResult(key(7), Outcome.OK, remote_id="r7-new"),
        # none for 8: the destination forgot it
        PushResult(key(10), Outcome.PENDING, message=""),  # pending without a job
        PushResult(key(11), Outcome.FAILED, message="x" * 2100),
    ]


@pytest.mark.parametrize("batch_size", [10, 3])
def test_a_batch_with_every_answer_writes_exactly_the_expected_rows(
    state_url: str, batch_size: int
) -> None:
    store = Store(state_url)
    earlier_state(store)
    batch = a_batch()
    results = answers()
    for start in range(0, len(batch), batch_size):
        part = batch[start : start + batch_size]
        with store.transaction() as conn:
            mark_in_flight(conn, DEST, RUN, part, SENT)
    flying = schema.in_flight
    columns = ("destination", "person_key", "action", "possible", "job", "sent_at", "run_id")
    # before the push every person is in flight, waiting for no job; a job of an earlier
    # run is forgotten, another destination's row is left alone
    assert rows(store, flying, *columns) == {
        (DEST, key(1), "upsert", "crm-new\ncrm-vip", None, SENT, RUN),
        (DEST, key(2), "upsert", "crm-new", None, SENT, RUN),
        (DEST, key(3), "upsert", "crm-new", None, SENT, RUN),
        (DEST, key(4), "upsert", "crm-a\ncrm-b", None, SENT, RUN),
        (DEST, key(5), "upsert", "crm-new", None, SENT, RUN),
        (DEST, key(6), "archive", "", None, SENT, RUN),
        (DEST, key(7), "delete", "", None, SENT, RUN),
        (DEST, key(8), "upsert", "crm-new", None, SENT, RUN),
        (DEST, key(10), "upsert", "crm-new", None, SENT, RUN),
        (DEST, key(11), "upsert", "crm-new", None, SENT, RUN),
        ("other", key(4), "upsert", "crm-old", "x", 5, 3),
    }
    counts: dict[str, int] = {}
    for start in range(0, len(batch), batch_size):
        part = batch[start : start + batch_size]
        with store.transaction() as conn:
            got = record_results(conn, DEST, RUN, part, results, now_ms=ACKED, retry=RETRY)
        counts = {k: counts.get(k, 0) + v for k, v in got.items()}
    assert counts == {"ok": 3, "failed": 3, "rejected": 1, "compliance": 1, "pending": 2}

    payload = {
        n: orjson.dumps(dict(c.fields), option=orjson.OPT_SORT_KEYS).decode()
        for n, c in zip([1, 6, 7], [batch[0], batch[5], batch[6]], strict=True)
    }
    assert rows(store, schema.ledger, *(c.name for c in schema.ledger.columns)) == {
        (DEST, key(1), "h1", payload[1], "crm-vip", "r1", "synced", ACKED, RUN),
        (DEST, key(6), "h6", payload[6], "", "r6", "archived", ACKED, RUN),
        (DEST, key(7), "h7", payload[7], "", "r7-new", "archived", ACKED, RUN),
    }
    after = ACKED + 1000  # the first retry waits first_wait_ms
    assert rows(store, schema.failures, *(c.name for c in schema.failures.columns)) == {
        # the same payload failed again: one more attempt, the first failure kept
        (DEST, key(2), "failed", "timeout", "h2", 2, 100, ACKED, ACKED + 2000),
        # another payload: attempts counted afresh (the first failure is kept); refusals
        # are not retried
        (DEST, key(3), "rejected", "bad phone", "h3", 1, 100, ACKED, None),
        (DEST, key(5), "compliance", "unsubscribed there", "h5", 1, ACKED, ACKED, None),
        (
            DEST,
            key(8),
            "failed",
            "the destination returned no result",
            "h8",
            1,
            ACKED,
            ACKED,
            after,
        ),
        (DEST, key(10), "pending", "pending", "h10", 1, ACKED, ACKED, None),
        (DEST, key(11), "failed", "x" * 2000, "h11", 1, ACKED, ACKED, after),
    }
    # acknowledged people left flight (and failures); the others stay, only the pending
    # one with a job waits for it
    assert rows(store, flying, "destination", "person_key", "job") == {
        (DEST, key(n), "job-B" if n == 4 else None) for n in (2, 3, 4, 5, 8, 10, 11)
    } | {("other", key(4), "x")}
    with store.engine.connect() as conn:
        assert list(job_pages(conn, DEST, "job-B")) == [[batch[3]]]
    store.close()


def test_a_pending_answer_again_keeps_the_job_and_the_change(state_url: str) -> None:
    store = Store(state_url)
    batch = [change(1), change(2)]
    pending = [PushResult(c.person_key, Outcome.PENDING, job="job-A") for c in batch]
    with store.transaction() as conn:
        mark_in_flight(conn, DEST, RUN, batch, SENT)
        record_results(conn, DEST, RUN, batch, pending, now_ms=ACKED, retry=RETRY)
    with store.transaction() as conn:  # collect: one still running, one now failed
        changes = next(job_pages(conn, DEST, "job-A"))
        again = [pending[0], PushResult(key(2), Outcome.FAILED, message="gone")]
        record_results(conn, DEST, RUN, changes, again, now_ms=ACKED, retry=RETRY)
    with store.engine.connect() as conn:
        assert list(job_pages(conn, DEST, "job-A")) == [[batch[0]]]
    assert rows(store, schema.in_flight, "person_key", "job") == {(key(1), "job-A"), (key(2), None)}
    store.close()


def test_a_change_written_by_an_earlier_version_still_decodes() -> None:
    """In flight rows outlive an upgrade: a change stored as an object with names (the
    format before the positional one) is still read back by ``collect``."""
    original = replace(change(1, add=("crm-vip",), remove=("crm-new",)), resent=True)
    named = {
        "person_key": original.person_key,
        "action": "upsert",
        "is_new": True,
        "email": original.email,
        "phone": None,
        "fields": dict(original.fields),
        "memberships_add": ["crm-vip"],
        "memberships_remove": ["crm-new"],
        "email_intent": "subscribe_if_new",
        "sms_intent": "leave",
        "payload_hash": "h1",
        "remote_id": None,
        "memberships": ["crm-vip"],
        "email_consent_at": "2026-05-01T12:30:00+00:00",
        "sms_consent_at": None,
        "resent": True,
    }
    assert decode_change(orjson.dumps(named).decode()) == original
    assert decode_change(encode_change(original)) == original
