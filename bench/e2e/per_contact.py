"""The per-contact method, for comparison: what a naive integration does to build the
same audience, one member PUT and one tags POST per person."""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from bench.e2e.fake import new_fake
from bench.e2e.options import Options
from bench.results import Figure

if TYPE_CHECKING:
    from tests.fakes.mailchimp import FakeMailchimp


def per_contact(
    source: FakeMailchimp, options: Options, validate: bool = False
) -> dict[str, Figure]:
    """The audience ``source`` holds, pushed into a fresh fake one person at a time: a PUT
    of the member and a POST of every owned tag's state, ``connections`` at a time
    (``validate``: the fake checks each request against the spec, as in the tests)."""
    import httpx

    from tests.fakes.mailchimp import subscriber_hash

    with source._lock:
        tagged = {tag: members for tag, members in source.tag_members().items() if members}
        names = sorted(tagged)
        people = [
            (m["email_address"], m["status"], dict(m["merge_fields"]))
            for m in source.audience.members.values()
            if m["status"] != "archived"
        ]
        fields = copy.deepcopy(source.audience.merge_fields)
    fake = new_fake(options, validate=validate).start()
    fake.audience.merge_fields = fields  # set up as crmsync's were: not part of the race
    path = f"/lists/{fake.list_id}/members"
    client = httpx.Client(
        base_url=fake.base_url,
        auth=("bench", fake.api_key),
        limits=httpx.Limits(max_connections=options.connections),
        timeout=60,
    )

    def send(method: str, url: str, body: dict[str, Any]) -> None:
        for _ in range(20):  # a naive client's retry of 429
            response = client.request(method, url, json=body)
            if response.status_code != 429:
                response.raise_for_status()
                return
        raise RuntimeError(f"{method} {url}: still 429 after 20 tries")

    def push(person: tuple[str, str, dict[str, Any]]) -> None:
        email, status, merge_fields = person
        member = f"{path}/{subscriber_hash(email)}"
        body = {"email_address": email, "status_if_new": status, "merge_fields": merge_fields}
        send("PUT", member, body)
        states = [
            {"name": n, "status": "active" if email.lower() in tagged[n] else "inactive"}
            for n in names
        ]
        send("POST", f"{member}/tags", {"tags": states})

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(options.connections) as pool:
            list(pool.map(push, people))
        seconds = time.perf_counter() - started
        pushed = {m["email_address"]: m["merge_fields"] for m in fake.audience.members.values()}
        kept = {e: s for e, s in source.statuses().items() if s != "archived"}
        same = fake.statuses() == kept and fake.tag_members() == tagged  # no empty tags made
        same = same and all(pushed.get(email) == values for email, _, values in people)
    finally:
        client.close()
        fake.stop()
    return {
        "people": len(people),
        "calls": sum(fake.calls.values()),
        "seconds": round(seconds, 3),
        "rejected_429": fake.concurrency_rejections,
        "same_audience": "yes" if same else "NO",
        "spec_violations": len(fake.violations),
    }
