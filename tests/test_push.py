"""Push and acknowledge: what is in flight, pending jobs and their collection, on both
state engines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from crmsync.contract import Action, Change, ConsentIntent, Outcome, PushResult
from crmsync.runs import DestinationReport, RunOptions
from engine.push import Pusher
from state import schema
from state.ledger import (
    RetryPolicy,
    decode_change,
    encode_change,
    job_pages,
    mark_in_flight,
    pending_job_ids,
    record_results,
)
from state.store import Store

RETRY = RetryPolicy(max_attempts=3, first_wait_ms=1000)


def change(n: int, add: tuple[str, ...] = ("crm-new",), remove: tuple[str, ...] = ()) -> Change:
    return Change(
        person_key=f"e:p{n}@example.com",
        action=Action.UPSERT,
        is_new=True,
        email=f"p{n}@example.com",
        phone=None,
        fields={"FNAME": f"P{n}", "ORDERS": n},
        memberships_add=add,
        memberships_remove=remove,
        email_intent=ConsentIntent.SUBSCRIBE_IF_NEW,
        sms_intent=ConsentIntent.LEAVE,
        payload_hash=f"h{n}",
        memberships=add,
        email_consent_at=datetime(2026, 5, 1, 12, 30, tzinfo=UTC),
    )


def in_flight(store: Store) -> dict[str, tuple[str, str | None]]:
    f = schema.in_flight
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(f.c.person_key, f.c.possible, f.c.job))
        return {key: (possible, job) for key, possible, job in rows}


def test_a_change_survives_its_round_trip_through_the_state_store() -> None:
    original = change(1, add=("crm-vip",), remove=("crm-new",))
    assert decode_change(encode_change(original)) == original


def test_in_flight_until_acknowledged_then_in_the_ledger(state_url: str) -> None:
    store = Store(state_url)
    batch = [change(1), change(2, add=("crm-vip",), remove=("crm-lapsed",))]
    with store.transaction() as conn:
        mark_in_flight(conn, "dest", 7, batch, now_ms=1)
    # the removal stays possible until the acknowledgement: it may not have landed
    assert in_flight(store) == {
        "e:p1@example.com": ("crm-new", None),
        "e:p2@example.com": ("crm-lapsed\ncrm-vip", None),
    }
    results = [
        PushResult("e:p1@example.com", Outcome.OK, remote_id="r1"),
        PushResult("e:p2@example.com", Outcome.REJECTED, message="bad phone"),
    ]
    with store.transaction() as conn:
        counts = record_results(conn, "dest", 7, batch, results, now_ms=2, retry=RETRY)
    assert counts["ok"] == 1 and counts["rejected"] == 1
    assert in_flight(store) == {"e:p2@example.com": ("crm-lapsed\ncrm-vip", None)}
    ledger = schema.ledger
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(ledger.c.person_key, ledger.c.memberships)).all()
    assert [tuple(r) for r in rows] == [("e:p1@example.com", "crm-new")]
    store.close()


def test_pending_results_keep_their_job_and_come_back_as_the_changes_sent(
    state_url: str,
) -> None:
    store = Store(state_url)
    batch = [change(n) for n in range(3)]
    with store.transaction() as conn:
        mark_in_flight(conn, "dest", 1, batch, now_ms=1)
        record_results(
            conn,
            "dest",
            1,
            batch,
            [PushResult(c.person_key, Outcome.PENDING, job="job-A") for c in batch[:2]]
            + [PushResult(batch[2].person_key, Outcome.PENDING, job="job-B")],
            now_ms=2,
            retry=RETRY,
        )
    with store.engine.connect() as conn:
        assert pending_job_ids(conn, "other") == []
        jobs = {job: list(job_pages(conn, "dest", job)) for job in pending_job_ids(conn, "dest")}
        # a job larger than a page comes back a page at a time, in key order
        paged = list(job_pages(conn, "dest", "job-A", page=1))
    assert jobs == {"job-A": [batch[:2]], "job-B": [batch[2:]]}
    assert paged == [batch[:1], batch[1:2]]
    store.close()


class AsyncDestination:
    """Answers every push PENDING; its jobs finish after ``polls`` looks."""

    max_batch = 2

    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.looks = 0
        self.pushed: list[str] = []

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        job = f"job-{len(self.pushed)}"
        self.pushed.append(job)
        return [PushResult(c.person_key, Outcome.PENDING, job=job) for c in changes]

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        self.looks += 1
        if self.looks <= self.polls:
            return None
        return [
            PushResult(c.person_key, Outcome.OK, remote_id=f"{job}:{c.person_key}") for c in changes
        ]


def test_the_pusher_waits_for_jobs_and_acknowledges_only_when_they_finish(
    state_url: str,
) -> None:
    store = Store(state_url)
    destination = AsyncDestination(polls=3)
    report = DestinationReport("dest", "async")
    pusher = Pusher("dest", destination, store, report, RunOptions(), None, RETRY)  # type: ignore[arg-type]
    for n in range(3):
        pusher.add(change(n))
    pusher.flush()
    assert destination.pushed == ["job-0", "job-1"]
    assert report.counts["pending"] == 3 and not report.counts["ok"]
    assert {job for _, job in in_flight(store).values()} == {"job-0", "job-1"}
    naps: list[float] = []
    assert pusher.collect(0) == 2  # still running; no waiting asked for
    assert pusher.collect(60, sleep=naps.append) == 0
    assert naps and all(nap <= 10 for nap in naps)
    assert report.counts["ok"] == 3
    assert in_flight(store) == {}
    ledger = schema.ledger
    with store.engine.connect() as conn:
        ids = dict(conn.execute(sa.select(ledger.c.person_key, ledger.c.remote_id)).all())
    assert ids == {
        "e:p0@example.com": "job-0:e:p0@example.com",
        "e:p1@example.com": "job-0:e:p1@example.com",
        "e:p2@example.com": "job-1:e:p2@example.com",
    }
    store.close()
