"""The consent read-back's calls are made while the sources are read, and its opt-outs are
recorded after the pull, so that what the pull staged decides which of them are new.

A run opens its destinations before the pull and starts each one's read-back
(``engine.consent_read``); a read that fails fails the run where the read-back used to,
and a run that fails before recording stops the read and leaves the cursor where it was.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors.files import FilesSource
from connectors.outbox import OutboxDestination
from crmsync.contract import ConsentUpdate
from crmsync.errors import ConnectorError
from crmsync.records import Channel, Consent, ConsentState, Stream
from engine.consent_read import AHEAD, CONSENT_CHUNK, ConsentRead
from state import schema
from state.ledger import opted_out
from state.store import Store
from state.timeutil import to_ms
from tests.builders import customer, days_ago
from tests.e2e import first_read_waits_for, make_site

OUT = ConsentState.UNSUBSCRIBED
SCOPES = ["shop", "mc"]


def opt_out(email: str, days: float = 1) -> ConsentUpdate:
    return ConsentUpdate(email, Channel.EMAIL, OUT, days_ago(days), "unsubscribed")


class Gated:
    """A destination whose read-back tells when it was asked, then waits for ``go``."""

    def __init__(self, updates: list[ConsentUpdate], fail: Exception | None = None) -> None:
        self.updates, self.fail = updates, fail
        self.asked, self.go, self.left = threading.Event(), threading.Event(), threading.Event()
        self.yielded = 0

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        self.asked.set()
        try:
            assert self.go.wait(10)
            for update in self.updates:
                self.yielded += 1
                yield update
            if self.fail is not None:
                raise self.fail
        finally:
            self.left.set()


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    store = Store(state_url)
    yield store
    store.close()


def test_what_is_staged_after_the_calls_began_decides_which_opt_outs_are_new(
    store: Store,
) -> None:
    destination = Gated([opt_out("staged@example.com"), opt_out("new@example.com")])
    with ConsentRead(store, "mc", destination) as read:  # type: ignore[arg-type]
        read.start()
        assert destination.asked.wait(10)
        # the pull stages an opt-out of its own, newer than the one read back
        staged = customer("1", "staged@example.com", email_consent=Consent(OUT, days_ago(0.5)))
        store.stage("shop", Stream.CUSTOMERS, [staged])
        destination.go.set()
        assert read.record(SCOPES) == 1
    assert store.cursor("mc", "consent") is not None
    with store.transaction() as conn:
        assert opted_out(conn, ["new@example.com"], SCOPES) == {"new@example.com"}


def test_a_read_that_fails_raises_in_record_and_leaves_the_cursor(store: Store) -> None:
    destination = Gated([opt_out("a@example.com")], fail=ConnectorError("Mailchimp is down"))
    destination.go.set()
    with (
        ConsentRead(store, "mc", destination) as read,  # type: ignore[arg-type]
        pytest.raises(ConnectorError, match="Mailchimp is down"),
    ):
        read.start().record(SCOPES)
    assert store.cursor("mc", "consent") is None


def test_a_read_never_recorded_is_stopped_though_it_waits_for_room(store: Store) -> None:
    """A run that fails before recording (its pull failed): the reader, blocked with the
    queue full, stops after the chunk in hand and closes the destination's read."""
    many = [opt_out(f"p{i}@example.com") for i in range((AHEAD + 5) * CONSENT_CHUNK)]
    destination = Gated(many)
    destination.go.set()
    read = ConsentRead(store, "mc", destination)  # type: ignore[arg-type]
    read.start()
    deadline = threading.Event()
    while destination.yielded < AHEAD * CONSENT_CHUNK and not deadline.wait(0.01):
        pass  # the queue fills up
    read.close()
    assert destination.left.wait(10)  # the generator was closed, not left hanging
    assert destination.yielded < len(many)
    assert store.cursor("mc", "consent") is None
    assert not [t for t in threading.enumerate() if t.name.startswith("crmsync-consent-")]


def test_a_run_makes_the_read_back_calls_while_it_reads_its_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's first read waits until the destination was asked for its opt-outs:
    in a run that asked only after its pull, it would wait in vain."""
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=20)
    asked = threading.Event()

    def read_consent(self: Any, since: datetime | None) -> Iterator[ConsentUpdate]:
        asked.set()
        yield opt_out("read-back@example.com")

    monkeypatch.setattr(OutboxDestination, "read_consent", read_consent)
    waited = first_read_waits_for(monkeypatch, asked)
    report = site.run_json()
    assert waited == [True]
    assert report["consent_read"] == {"out": 1}
    assert report["status"] == "succeeded"


def test_a_run_whose_pull_fails_stops_the_read_back_and_keeps_the_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state.db"
    site = make_site(tmp_path, f"sqlite:///{state}", customers=20)
    left = threading.Event()

    def read_consent(self: Any, since: datetime | None) -> Iterator[ConsentUpdate]:
        try:
            for i in range((AHEAD + 5) * CONSENT_CHUNK):  # more than the queue holds
                yield opt_out(f"p{i}@example.com")
        finally:
            left.set()

    def read(self: FilesSource, stream: Stream, since: Any, until: datetime) -> Any:
        raise ConnectorError("the export is unreadable")

    monkeypatch.setattr(OutboxDestination, "read_consent", read_consent)
    monkeypatch.setattr(FilesSource, "read", read)
    result = site.cli("run", "--json")
    assert result.exit_code == 1, result.output
    assert "the export is unreadable" in result.output
    assert left.wait(10)
    assert not [t for t in threading.enumerate() if t.name.startswith("crmsync-consent-")]
    store = Store(f"sqlite:///{state}")
    try:
        assert store.cursor("out", "consent") is None
    finally:
        store.close()


def test_opt_outs_read_back_are_recorded_at_the_time_the_destination_gave(
    store: Store,
) -> None:
    """Recorded after the pull, an opt-out keeps the time it was made, not the time of the
    recording."""
    when = datetime(2026, 10, 1, 12, tzinfo=UTC)
    update = ConsentUpdate("x@example.com", Channel.EMAIL, OUT, when, "unsubscribed")
    destination = Gated([update])
    destination.go.set()
    with ConsentRead(store, "mc", destination) as read:  # type: ignore[arg-type]
        assert read.start().record(SCOPES) == 1
    events = schema.consent_events
    with store.transaction() as conn:
        rows = conn.execute(select(events.c.person_key, events.c.occurred_at)).all()
    assert [tuple(row) for row in rows] == [("e:x@example.com", to_ms(when))]
