"""A destination that can take no more in a run (a daily allowance spent): what it did not
send is NOT_SENT, kept for a later run with no retry attempt charged, the run sends it
nothing more, and the next run sends the rest."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.outbox import OutboxDestination
from crmsync import normalize
from crmsync.contract import Change, Outcome, PushResult
from crmsync.errors import SendLater
from crmsync.runs import DestinationReport, RunOptions
from engine.push import Pusher
from state import schema
from state.ledger import RetryPolicy, mark_in_flight, record_results
from state.store import Store
from tests.e2e import Site, config_text, make_site, rename_everyone
from tests.test_push import change

RETRY = RetryPolicy(max_attempts=3, first_wait_ms=1000)
DEST = "dest"
FULL = "the day's calls are spent; the rest goes after midnight"


def table(store: Store, t: sa.Table, *columns: str) -> set[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.select(*(t.c[c] for c in columns)))}


def earlier_failure(store: Store, person: Change, attempts: int) -> None:
    with store.transaction() as conn:
        conn.execute(
            sa.insert(schema.failures).values(
                destination=DEST,
                person_key=person.person_key,
                reason_class="failed",
                message="timeout",
                payload_hash=person.payload_hash,
                attempts=attempts,
                first_failed_at=1,
                last_failed_at=1,
                next_attempt_at=2,
            )
        )


def test_a_change_not_sent_leaves_flight_and_its_attempts_as_they_were(state_url: str) -> None:
    store = Store(state_url)
    sent, unsent, failed_before = change(1), change(2), change(3)
    resent = replace(change(4), resent=True)  # an earlier push of theirs may be applied
    batch = [sent, unsent, failed_before, resent]
    earlier_failure(store, failed_before, attempts=2)
    with store.transaction() as conn:
        mark_in_flight(conn, DEST, 1, batch, now_ms=10)
    results = [PushResult(sent.person_key, Outcome.OK, remote_id="r1")] + [
        PushResult(c.person_key, Outcome.NOT_SENT, message=FULL) for c in batch[1:]
    ]
    with store.transaction() as conn:
        counts = record_results(conn, DEST, 1, batch, results, now_ms=20, retry=RETRY)
    assert counts["ok"] == 1 and counts["not_sent"] == 3 and counts["failed"] == 0
    # released, except the person who may hold an earlier push: kept, waiting for no job
    assert table(store, schema.in_flight, "person_key", "job") == {(resent.person_key, None)}
    # no failure recorded for what was not sent; the earlier one unchanged (no attempt)
    assert table(store, schema.failures, "person_key", "attempts", "next_attempt_at") == {
        (failed_before.person_key, 2, 2)
    }
    assert table(store, schema.ledger, "person_key") == {(sent.person_key,)}
    store.close()


def test_a_job_settled_not_sent_stays_in_flight(state_url: str) -> None:
    store = Store(state_url)
    batch = [change(1)]
    with store.transaction() as conn:
        mark_in_flight(conn, DEST, 1, batch, now_ms=10)
        held = [PushResult(batch[0].person_key, Outcome.PENDING, job="lists:1")]
        record_results(conn, DEST, 1, batch, held, now_ms=20, retry=RETRY)
        later = [PushResult(batch[0].person_key, Outcome.NOT_SENT, message=FULL)]
        record_results(conn, DEST, 1, batch, later, now_ms=30, retry=RETRY)
    # its upsert was sent before the job: it may be applied, so it stays in flight
    assert table(store, schema.in_flight, "person_key", "job") == {(batch[0].person_key, None)}
    assert table(store, schema.failures, "person_key") == set()
    store.close()


class Capped:
    """Takes ``room`` people in all, then answers NOT_SENT, or raises ``SendLater`` for
    a batch of which it can take nothing."""

    max_batch = 3

    def __init__(self, room: int, raise_when_full: bool) -> None:
        self.room, self.raise_when_full = room, raise_when_full
        self.pushed: list[list[str]] = []

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        if self.room == 0 and self.raise_when_full:
            raise SendLater(FULL, retry_after=3600)
        self.pushed.append([c.person_key for c in changes])
        results = []
        for c in changes:
            if self.room:
                self.room -= 1
                results.append(PushResult(c.person_key, Outcome.OK, remote_id="r"))
            else:
                results.append(PushResult(c.person_key, Outcome.NOT_SENT, message=FULL))
        return results


@pytest.mark.parametrize(
    ("room", "raise_when_full", "pushes"),
    [(4, False, 2), (3, True, 1)],  # a batch cut short; a batch refused as a whole
)
def test_the_pusher_stops_sending_once_the_destination_is_full(
    state_url: str, room: int, raise_when_full: bool, pushes: int
) -> None:
    store = Store(state_url)
    destination = Capped(room, raise_when_full)
    report = DestinationReport(DEST, "capped")
    pusher = Pusher(DEST, destination, store, report, RunOptions(), None, RETRY)  # type: ignore[arg-type]
    for n in range(12):
        pusher.add(change(n))
    pusher.flush()
    assert len(destination.pushed) == pushes  # nothing more once it said it was full
    assert report.error == FULL
    assert report.counts["ok"] == min(room, 3 * pushes)
    assert report.counts["ok"] + report.counts["not_sent"] == 12
    assert not report.counts["failed"]
    assert table(store, schema.failures, "person_key") == set()
    assert table(store, schema.in_flight, "person_key") == set()
    store.close()


class Held:
    """Holds everyone on one job; at its collect, the rest cannot be sent."""

    max_batch = 3

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        return [PushResult(c.person_key, Outcome.PENDING, "r", "", "job-1") for c in changes]

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult]:
        return [PushResult(c.person_key, Outcome.NOT_SENT, "r", FULL) for c in changes]


@pytest.mark.parametrize("failed_before", [False, True])
def test_a_job_whose_rest_is_not_sent_stops_the_destination_cleanly(
    state_url: str, failed_before: bool
) -> None:
    store = Store(state_url)
    report = DestinationReport(DEST, "held")
    pusher = Pusher(DEST, Held(), store, report, RunOptions(), None, RETRY)  # type: ignore[arg-type]
    for n in range(4):
        pusher.add(change(n))
    pusher.flush()
    if failed_before:  # a real failure since: it stays the run's error
        report.error = "HTTP 500 from the vendor"
    assert pusher.collect() == 0
    assert report.counts["not_sent"] == 4
    assert report.full is not failed_before
    assert report.error == ("HTTP 500 from the vendor" if failed_before else FULL)
    assert table(store, schema.failures, "person_key") == set()  # nothing charged
    # sent before they waited: they stay in flight, for the next run to plan again
    assert len(table(store, schema.in_flight, "person_key")) == 4
    store.close()


# -- through the pipeline ----------------------------------------------------------------


def capped_outbox(monkeypatch: pytest.MonkeyPatch, room: int) -> Callable[[], int]:
    """The outbox takes ``room`` people in the run, then can take no more; returns how
    many changes it was handed."""
    real = OutboxDestination.push
    left, handed = [room], [0]

    def push(self: OutboxDestination, changes: Sequence[Change]) -> list[PushResult]:
        handed[0] += len(changes)
        if left[0] == 0:
            raise SendLater(FULL)
        taken, rest = list(changes[: left[0]]), changes[left[0] :]
        left[0] -= len(taken)
        not_sent = [PushResult(c.person_key, Outcome.NOT_SENT, message=FULL) for c in rest]
        return real(self, taken) + not_sent

    monkeypatch.setattr(OutboxDestination, "push", push)
    return lambda: handed[0]


def fail_one(monkeypatch: pytest.MonkeyPatch, person: str) -> None:
    """The outbox fails one person (a timeout), and writes the rest."""
    real = OutboxDestination.push

    def push(self: OutboxDestination, changes: Sequence[Change]) -> list[PushResult]:
        fine = [c for c in changes if c.person_key != person]
        refused = [
            PushResult(c.person_key, Outcome.FAILED, message="timeout")
            for c in changes
            if c.person_key == person
        ]
        return real(self, fine) + refused

    monkeypatch.setattr(OutboxDestination, "push", push)


def last_customer(site: Site) -> str:
    """The person key of the customer planned last (keys in order): beyond any room."""
    with open(site.data / "customers.csv", encoding="utf-8", newline="") as handle:
        return "e:" + max(normalize.email(row["email"]) or "" for row in csv.DictReader(handle))


def test_what_a_full_destination_did_not_take_goes_in_the_next_run_at_no_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=150, batch_size=20)
    # a failed person is due again at once, so the capped run meets them
    tail = "retry_minutes = 1e-5\n"
    site.config.write_text(
        config_text(url, site.data, site.outbox_root, 20, pipeline_tail=tail), encoding="utf-8"
    )
    store = Store(url)
    person = last_customer(site)
    with monkeypatch.context() as patch:
        fail_one(patch, person)
        code, first = site.run_report()
    assert code == 5 and first["destinations"]["out"]["failed"] == 1
    assert table(store, schema.failures, "person_key", "attempts") == {(person, 1)}
    before = dict(table(store, schema.ledger, "person_key", "payload_hash"))

    rename_everyone(site)  # every customer changes; the destination takes 50 of them
    with monkeypatch.context() as patch:
        handed = capped_outbox(patch, room=50)
        code, capped = site.run_report()
    out = capped["destinations"]["out"]
    changes = out.get("create", 0) + out.get("update", 0)
    assert capped["status"] == "partial" and code == 5  # stopped at the destination's limit
    assert FULL in capped["errors"]["out"]
    assert out["ok"] == 50 and out["ok"] + out["not_sent"] == changes
    assert not out.get("failed")
    assert handed() == 60  # batches of 20: the third cut short, none handed over after
    # nobody's attempts grew, and nobody was left in flight but the failed one, as before
    assert table(store, schema.failures, "person_key", "attempts") == {(person, 1)}
    assert table(store, schema.in_flight, "person_key") == {(person,)}

    code, last = site.run_report()  # the next run: the destination has room again
    assert code == 0 and last["status"] == "succeeded"
    assert last["destinations"]["out"]["ok"] == changes - 50
    assert table(store, schema.failures, "person_key") == set()
    after = dict(table(store, schema.ledger, "person_key", "payload_hash"))
    assert person in after and person not in before
    renamed = {key for key in before if after[key] != before[key]}
    assert len(renamed) + 1 == changes  # everyone renamed, and the one that had failed
    store.close()
