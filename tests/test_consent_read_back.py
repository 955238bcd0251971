"""The consent read-back: Mailchimp's times read as they come, and the opt-outs read
looked up and recorded a chunk at a time.

A read-back after a first sync reads every member that sync unsubscribed (tens of
thousands at 100,000 customers), so what it does per member is what a no-change run pays.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from connectors.mailchimp.consent import consent_update, parse_mailchimp_time
from crmsync.contract import ConsentUpdate
from crmsync.records import Channel, Consent, ConsentState, Stream
from crmsync.runs import RunReport
from engine.pipeline import CONSENT_CHUNK, read_consent_once
from state.ledger import opted_out
from state.store import Store
from tests.builders import customer, days_ago

OUT = ConsentState.UNSUBSCRIBED


@pytest.mark.parametrize(
    "text",
    ["2026-03-04T05:06:07+00:00", "2026-03-04T05:06:07Z", "2026-03-04T08:06:07+03:00"],
)
def test_a_mailchimp_time_with_z_or_an_offset_is_the_same_instant(text: str) -> None:
    assert parse_mailchimp_time(text) == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_a_mailchimp_time_without_offset_is_utc_and_junk_is_none() -> None:
    parsed = parse_mailchimp_time("2026-03-04T05:06:07")
    assert parsed == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert parsed is not None and parsed.utcoffset() == timedelta(0)
    assert [parse_mailchimp_time(v) for v in ("", "yesterday", None, 5)] == [None] * 4


def test_a_member_read_back_is_an_email_opt_out_at_its_last_change() -> None:
    member = {"email_address": " Ali@X.co ", "last_changed": "2026-03-04T08:06:07+03:00"}
    update = consent_update(member, "unsubscribed in Mailchimp", datetime(2026, 1, 1, tzinfo=UTC))
    assert update == ConsentUpdate(
        "ali@x.co",
        Channel.EMAIL,
        ConsentState.UNSUBSCRIBED,
        datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),  # the same instant
        "unsubscribed in Mailchimp",
    )


class ReadBack:
    """A destination that reads back the opt-outs it was given."""

    def __init__(self, updates: list[ConsentUpdate]) -> None:
        self.updates = updates

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        yield from self.updates


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    store = Store(state_url)
    known = customer("0", "p0@example.com", email_consent=Consent(OUT, days_ago(5)))
    store.stage("shop", Stream.CUSTOMERS, [known, customer("1", "p1@example.com")])
    yield store
    store.close()


def test_a_read_back_of_several_chunks_records_each_new_opt_out_once(store: Store) -> None:
    read = [
        ConsentUpdate(f"p{i}@example.com", Channel.EMAIL, OUT, days_ago(1), "unsubscribed")
        for i in range(2 * CONSENT_CHUNK + 200)
    ]
    spec = SimpleNamespace(
        sources=[SimpleNamespace(name="shop")], destinations=[SimpleNamespace(name="mc")]
    )

    def read_back() -> dict[str, int]:
        report = RunReport("main", None, "manual", False, datetime.now(UTC))
        read_consent_once(store, cast(Any, spec), "mc", cast(Any, ReadBack(read)), report)
        return report.consent_read

    # p0 was already opted out in the store; each other one is new, and known next time
    assert read_back() == {"mc": len(read) - 1}
    assert read_back() == {"mc": 0}
    emails = [u.email for u in read]
    with store.transaction() as conn:
        for start in range(0, len(emails), CONSENT_CHUNK):
            part = emails[start : start + CONSENT_CHUNK]
            assert opted_out(conn, part, ["shop", "mc"]) == set(part)
