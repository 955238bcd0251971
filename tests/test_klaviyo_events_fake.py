"""The fake Klaviyo's events endpoint is as strict as Klaviyo: the spec, the call's limits,
refusals that point at each wrong entry with nothing recorded, de-duplication by unique id,
and the endpoint's own rate limit with ``Retry-After``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import FakeClock
from tests.fakes.klaviyo import FakeKlaviyo, klaviyo_fake

__all__ = ["klaviyo_fake"]

BULK = "/api/event-bulk-create-jobs"
ENTRIES = "/data/attributes/events-bulk-create/data"


@pytest.fixture
def client(klaviyo_fake: FakeKlaviyo) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=klaviyo_fake.base_url, headers=klaviyo_fake.headers(), timeout=30
    ) as http:
        yield http


def one(unique: str, metric: str = "Placed Order", **attributes: Any) -> dict[str, Any]:
    return {
        "type": "event",
        "attributes": {
            "properties": {"OrderId": unique},
            "time": "2026-11-20T09:30:00Z",
            "unique_id": unique,
            "value": 10.5,
            "value_currency": "TRY",
            "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
            **attributes,
        },
    }


def entry(email: str, *events: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
            "events": {"data": list(events)},
        },
    }


def body(*entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": list(entries)}},
        }
    }


def test_events_are_recorded_once_per_profile_metric_and_unique_id(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    answer = client.post(BULK, json=body(entry("a@example.com", one("1"), one("2", backfill=True))))
    assert (answer.status_code, answer.content) == (202, b"")
    profile = klaviyo_fake.profile("a@example.com")
    assert profile is not None
    assert profile.email_marketing.consent == "NEVER_SUBSCRIBED"
    first, second = klaviyo_fake.events_named("Placed Order")
    assert (first.unique_id, first.value, first.backfill) == ("1", 10.5, False)
    assert second.backfill is True
    # the same unique id again, for the same profile and metric: dropped, the call accepted
    again = client.post(BULK, json=body(entry("A@example.com", one("1"), one("1", "Other"))))
    assert again.status_code == 202
    assert len(klaviyo_fake.events_named("Placed Order")) == 2
    assert [e.unique_id for e in klaviyo_fake.events_named("Other")] == ["1"]
    assert klaviyo_fake.duplicate_events == 1


def test_a_unique_id_repeated_within_a_call_refuses_the_call(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    answer = client.post(BULK, json=body(entry("a@example.com", one("1"), one("1"))))
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert (
        error["source"]["pointer"] == f"{ENTRIES}/0/attributes/events/data/1/attributes/unique_id"
    )
    assert klaviyo_fake.event_count() == 0


def test_wrong_entries_are_each_pointed_at_and_nothing_is_recorded(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    answer = client.post(
        BULK,
        json=body(
            entry("good@example.com", one("1")),
            entry("bad@example", one("2")),
            entry("ok@example.com", one("3"), one("4", time="1985-01-01T00:00:00Z")),
        ),
    )
    assert answer.status_code == 400
    pointers = [e["source"]["pointer"] for e in answer.json()["errors"]]
    assert pointers == [
        f"{ENTRIES}/1/attributes/profile/data/attributes/email",
        f"{ENTRIES}/2/attributes/events/data/1/attributes/time",
    ]
    assert klaviyo_fake.event_count() == 0
    assert klaviyo_fake.profile("good@example.com") is None


def test_a_call_takes_at_most_1000_events(klaviyo_fake: FakeKlaviyo, client: httpx.Client) -> None:
    events = [one(str(i)) for i in range(1_001)]
    answer = client.post(BULK, json=body(entry("a@example.com", *events)))
    assert answer.status_code == 400
    assert "1000" in answer.json()["errors"][0]["detail"]
    assert klaviyo_fake.event_count() == 0


def test_a_call_over_5_mb_is_refused(klaviyo_fake: FakeKlaviyo, client: httpx.Client) -> None:
    note = "x" * 90_000
    events = [one(str(i), properties={"note": note}) for i in range(60)]
    answer = client.post(BULK, json=body(entry("a@example.com", *events)))
    assert answer.status_code == 413
    assert klaviyo_fake.event_count() == 0


def test_an_unknown_field_breaks_the_spec(klaviyo_fake: FakeKlaviyo, client: httpx.Client) -> None:
    answer = client.post(BULK, json=body(entry("a@example.com", one("1", subscribe=True))))
    assert answer.status_code == 400
    assert len(klaviyo_fake.violations) == 1 and BULK in klaviyo_fake.violations[0]
    klaviyo_fake.violations.clear()
    assert klaviyo_fake.event_count() == 0


def test_the_endpoint_has_klaviyos_rate_limit_with_retry_after() -> None:
    clock = FakeClock(start=1200.0)
    fake = FakeKlaviyo(clock=clock).start()
    try:
        with httpx.Client(base_url=fake.base_url, headers=fake.headers()) as http:
            answers = [
                http.post(BULK, json=body(entry("a@example.com", one(str(i))))) for i in range(11)
            ]
            assert [a.status_code for a in answers] == [202] * 10 + [429]
            assert answers[0].headers["RateLimit-Limit"] == "150, 10;w=1, 150;w=60"
            assert answers[-1].headers["Retry-After"] == "1"
            clock.advance(1.0)
            retried = http.post(BULK, json=body(entry("a@example.com", one("10"))))
            assert retried.status_code == 202
        assert fake.event_count() == 11 and fake.violations == []
    finally:
        fake.stop()
