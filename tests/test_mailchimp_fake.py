"""The fake Mailchimp is strict: it refuses what the spec or Mailchimp refuses.

A fake that accepted anything would let the destination drift from the real API, so these
tests prove that malformed requests are caught (the spec check really looks at bodies),
and that the fake enforces Mailchimp's limits and consent rules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake, subscriber_hash

__all__ = ["mailchimp_fake"]


@pytest.fixture
def client(mailchimp_fake: FakeMailchimp) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=mailchimp_fake.base_url, auth=("anyone", mailchimp_fake.api_key), timeout=10
    ) as http:
        yield http


def batch(
    client: httpx.Client, list_id: str, members: list[dict[str, Any]], **kw: Any
) -> httpx.Response:
    return client.post(
        f"/lists/{list_id}", json={"members": members, "update_existing": True, **kw}
    )


def test_a_valid_batch_subscribe_passes_the_spec_check(
    mailchimp_fake: FakeMailchimp, client: httpx.Client
) -> None:
    mailchimp_fake.expect_consented(["a@shop.example"])
    answer = batch(
        client,
        mailchimp_fake.list_id,
        [
            {
                "email_address": "a@shop.example",
                "status_if_new": "subscribed",
                "merge_fields": {"FNAME": "A"},
            }
        ],
    )
    assert answer.status_code == 200 and answer.json()["total_created"] == 1
    assert mailchimp_fake.violations == []


@pytest.mark.parametrize(
    "body",
    [
        {"members": "not a list"},
        {"members": [{"email_address": 42}]},
        {"members": [{"email_address": "a@b.example", "merge_fields": {"FNAME": ["x"]}}]},
        {"members": [{"email_address": "a@b.example", "status": "maybe"}]},
        {"members": [], "update_existing": "yes"},
        {"update_existing": True},
    ],
)
def test_a_malformed_body_is_rejected_and_recorded(
    mailchimp_fake: FakeMailchimp, client: httpx.Client, body: dict[str, Any]
) -> None:
    answer = client.post(f"/lists/{mailchimp_fake.list_id}", json=body)
    assert answer.status_code == 400
    assert (
        len(mailchimp_fake.violations) == 1 and "InvalidRequestBody" in mailchimp_fake.violations[0]
    )
    assert mailchimp_fake.audience.members == {}  # nothing applied
    mailchimp_fake.violations.clear()


def test_bad_query_parameters_and_unknown_paths_are_violations(
    mailchimp_fake: FakeMailchimp, client: httpx.Client
) -> None:
    assert (
        client.get(
            f"/lists/{mailchimp_fake.list_id}/members", params={"status": "bogus"}
        ).status_code
        == 400
    )
    assert client.get(f"/lists/{mailchimp_fake.list_id}/nothing-here").status_code == 400
    assert client.put(f"/lists/{mailchimp_fake.list_id}/segments").status_code == 400
    kinds = [v.split(": ")[1].split(" ")[0] for v in mailchimp_fake.violations]
    assert kinds == ["InvalidParameter", "PathNotFound", "OperationNotFound"]
    mailchimp_fake.violations.clear()


def test_more_than_500_members_per_call_is_refused(
    mailchimp_fake: FakeMailchimp, client: httpx.Client
) -> None:
    members = [
        {"email_address": f"p{i}@shop.example", "status_if_new": "transactional"}
        for i in range(501)
    ]
    answer = batch(client, mailchimp_fake.list_id, members)
    assert answer.status_code == 400 and "500" in answer.json()["detail"]
    assert mailchimp_fake.audience.members == {}


def test_any_user_name_with_the_key_is_accepted_and_a_wrong_key_is_401(
    mailchimp_fake: FakeMailchimp,
) -> None:
    with httpx.Client(base_url=mailchimp_fake.base_url) as http:
        assert http.get("/ping", auth=("whoever", mailchimp_fake.api_key)).status_code == 200
        assert http.get("/ping", auth=("whoever", "0" * 32 + "-us7")).status_code == 401


def test_more_than_10_simultaneous_requests_get_429(mailchimp_fake: FakeMailchimp) -> None:
    mailchimp_fake.gate = threading.Event()
    statuses: list[int] = []
    waits: list[str | None] = []  # asserted after join: a failing assert in a thread is lost

    def ping() -> None:
        with httpx.Client(
            base_url=mailchimp_fake.base_url, auth=("u", mailchimp_fake.api_key)
        ) as http:
            answer = http.get("/ping")
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                waits.append(answer.headers.get("Retry-After"))

    threads = [threading.Thread(target=ping) for _ in range(12)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while (
        mailchimp_fake.in_flight < 10 or mailchimp_fake.concurrency_rejections < 2
    ) and time.monotonic() < deadline:
        time.sleep(0.01)
    mailchimp_fake.gate.set()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 10 + [429] * 2
    assert waits == ["0", "0"]
    assert mailchimp_fake.max_in_flight == 10


def test_existing_opted_out_members_are_never_raised(
    mailchimp_fake: FakeMailchimp, client: httpx.Client
) -> None:
    mailchimp_fake.expect_consented([])
    mailchimp_fake.add_member("gone@shop.example", "unsubscribed")
    mailchimp_fake.add_member("bounced@shop.example", "cleaned")
    answer = batch(
        client,
        mailchimp_fake.list_id,
        [
            {"email_address": "gone@shop.example", "status_if_new": "subscribed"},
            {
                "email_address": "bounced@shop.example",
                "status_if_new": "subscribed",
                "status": "unsubscribed",
            },
        ],
    ).json()
    assert answer["total_updated"] == 2
    forced = batch(
        client,
        mailchimp_fake.list_id,
        [{"email_address": "gone@shop.example", "status": "subscribed"}],
    )
    assert "compliance state" in forced.json()["errors"][0]["error"]
    assert mailchimp_fake.statuses() == {
        "gone@shop.example": "unsubscribed",
        "bounced@shop.example": "cleaned",
    }


def test_compliance_and_forgotten_addresses_get_per_member_errors(
    mailchimp_fake: FakeMailchimp, client: httpx.Client
) -> None:
    mailchimp_fake.compliance_emails.add("held@shop.example")
    mailchimp_fake.forgotten.add(subscriber_hash("forgot@shop.example"))
    answer = batch(
        client,
        mailchimp_fake.list_id,
        [
            {"email_address": "held@shop.example", "status_if_new": "transactional"},
            {"email_address": "forgot@shop.example", "status_if_new": "transactional"},
            {"email_address": "not-an-address", "status_if_new": "transactional"},
        ],
    ).json()
    errors = {e["email_address"]: e["error"] for e in answer["errors"]}
    assert errors["held@shop.example"].startswith("Member In Compliance State")
    assert errors["forgot@shop.example"].startswith("Forgotten Email Not Subscribed")
    assert "looks fake or invalid" in errors["not-an-address"]
    assert mailchimp_fake.audience.members == {}


def test_injected_faults_answer_before_or_after_applying(
    mailchimp_fake: FakeMailchimp, client: httpx.Client
) -> None:
    mailchimp_fake.inject(503)
    mailchimp_fake.inject(500, after=True)
    member = [{"email_address": "a@shop.example", "status_if_new": "transactional"}]
    assert batch(client, mailchimp_fake.list_id, member).status_code == 503
    assert mailchimp_fake.audience.members == {}
    assert batch(client, mailchimp_fake.list_id, member).status_code == 500
    assert mailchimp_fake.statuses() == {"a@shop.example": "transactional"}  # applied, answer lost
    assert (
        mailchimp_fake.calls[("POST", "/lists/{list_id}")] == 2 and mailchimp_fake.write_calls == 2
    )


def test_consent_problems_flag_resubscribed_and_unconsented_members() -> None:
    fake = FakeMailchimp()
    fake.add_member("back@shop.example", "unsubscribed")
    fake.set_status("back@shop.example", "subscribed")
    fake.add_member("never@shop.example", "subscribed")
    fake.expect_consented(["back@shop.example"])
    problems = fake.consent_problems()
    assert problems == [
        "back@shop.example is subscribed after being unsubscribed or cleaned",
        "never@shop.example is subscribed without recorded consent",
    ]
