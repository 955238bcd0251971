"""The Klaviyo destination over ``httpx.MockTransport``: what goes on the wire, and how
throttling, outages, refusals and job states are answered. No time passes: the retry
policy's and the rate budget's sleeps are recorded instead."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.http import BudgetRegistry
from connectors.klaviyo import KlaviyoConfig, KlaviyoDestination
from connectors.klaviyo.client import KlaviyoApi
from crmsync.contract import Action, Change, ConnectorContext, ConsentIntent, Outcome
from crmsync.errors import AuthError, TransientError

KEY = "pk_" + "a1b2c3d4" * 4
MEDIA = "application/vnd.api+json"
NONE = ConsentIntent.LEAVE
SUPPRESS = "/api/profile-suppression-bulk-create-jobs"
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


class Klaviyo:
    """Scripted answers per (method, path), in order; every request is kept."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], deque[Answer]] = {}
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.now = 0.0

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self.script.setdefault((method, path), deque()).extend(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.script.get((request.method, request.url.path))
        if not queue:
            raise AssertionError(f"unexpected {request.method} {request.url}")
        answer = queue[0] if len(queue) == 1 else queue.popleft()
        return answer(request) if callable(answer) else answer

    def sent(self, method: str, path: str) -> list[dict[str, Any]]:
        return [
            json.loads(r.content)
            for r in self.requests
            if r.method == method and r.url.path == path and r.content
        ]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def doc(status: int, body: Any = None, **headers: str) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers={"Content-Type": MEDIA, **headers})


def refusal(status: int, code: str, detail: str, pointer: str = "/data/") -> httpx.Response:
    error = {
        "id": "e",
        "code": code,
        "title": code,
        "detail": detail,
        "source": {"pointer": pointer},
    }
    return doc(status, {"errors": [error]})


def imported(request: httpx.Request) -> httpx.Response:
    email = json.loads(request.content)["data"]["attributes"]["email"]
    never = {"marketing": {"consent": "NEVER_SUBSCRIBED"}}
    attributes = {"email": email, "subscriptions": {"email": never, "sms": never}}
    return doc(201, {"data": {"type": "profile", "id": f"P-{email}", "attributes": attributes}})


def person(email: str, **kw: Any) -> Change:
    values: dict[str, Any] = {
        "person_key": f"e:{email}",
        "action": Action.UPSERT,
        "is_new": False,
        "email": email,
        "phone": None,
        "fields": {"first_name": "Ayşe"},
        "memberships_add": (),
        "memberships_remove": (),
        "email_intent": NONE,
        "sms_intent": NONE,
        "payload_hash": "h",
    }
    values.update(kw)
    return Change(**values)


@pytest.fixture
def klaviyo() -> Klaviyo:
    return Klaviyo()


@pytest.fixture
def make(klaviyo: Klaviyo) -> Iterator[Callable[..., KlaviyoDestination]]:
    made: list[KlaviyoDestination] = []

    def build(**overrides: Any) -> KlaviyoDestination:
        config = KlaviyoConfig.model_validate({"kind": "klaviyo", "api_key": KEY, **overrides})
        destination = KlaviyoDestination(
            config,
            ConnectorContext("k", Path(".")),
            transport=httpx.MockTransport(klaviyo),
            sleep=klaviyo.sleep,
            budgets=BudgetRegistry(clock=lambda: klaviyo.now, sleep=klaviyo.sleep),
        )
        made.append(destination)
        return destination

    yield build
    for destination in made:
        destination.close()


def test_every_request_carries_the_key_revision_and_json_api_types(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    klaviyo.on("POST", "/api/profile-import", imported)
    [result] = make(revision="2026-07-15").push([person("a@example.com")])
    assert result.outcome is Outcome.OK and result.remote_id == "P-a@example.com"
    [request] = klaviyo.requests
    assert request.headers["Authorization"] == f"Klaviyo-API-Key {KEY}"
    assert request.headers["revision"] == "2026-07-15"
    assert request.headers["Content-Type"] == MEDIA and request.headers["Accept"] == MEDIA
    assert request.url.params["additional-fields[profile]"] == "subscriptions"


def test_jobs_are_cut_by_count_and_by_bytes(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    """The push's last job, part-filled, is held for the next push; collecting the hold
    at the end of the run sends it."""
    jobs = iter(range(100))
    klaviyo.on(
        "POST",
        "/api/profile-bulk-import-jobs",
        lambda _: doc(202, {"data": {"type": "profile-bulk-import-job", "id": f"J{next(jobs)}"}}),
    )
    by_count = make(jobs={"profiles_per_job": 10})
    people = [person(f"p{i}@example.com") for i in range(25)]
    results = by_count.push(people)
    sent = klaviyo.sent("POST", "/api/profile-bulk-import-jobs")
    assert sorted(len(b["data"]["attributes"]["profiles"]["data"]) for b in sent) == [10, 10]
    assert {r.outcome for r in results} == {Outcome.PENDING}
    assert len({r.job for r in results}) == 3
    [hold] = {r.job for r in results[20:]}
    assert hold is not None and hold.startswith("imports:")
    handed = by_count.collect(hold, people[20:])
    assert handed is not None and {(r.outcome, r.job) for r in handed} == {(Outcome.PENDING, "J2")}
    sent = klaviyo.sent("POST", "/api/profile-bulk-import-jobs")
    assert sorted(len(b["data"]["attributes"]["profiles"]["data"]) for b in sent) == [5, 10, 10]
    klaviyo.requests.clear()
    by_bytes = make(jobs={"bytes_per_job": 4096})
    big = [person(f"q{i}@example.com", fields={"note": "x" * 900}) for i in range(12)]
    answers = by_bytes.push(big)
    [hold] = {r.job for r in answers if r.job and r.job.startswith("imports:")}
    by_bytes.collect(hold, [c for c, r in zip(big, answers, strict=True) if r.job == hold])
    sizes = [len(r.content) for r in klaviyo.requests]
    assert len(sizes) == 4 and max(sizes) <= 4096  # 3 profiles of ~950 bytes per job


def test_a_profile_over_the_size_limit_is_rejected_without_a_call(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    [result] = make().push([person("big@example.com", fields={"note": "x" * 110_000})])
    assert result.outcome is Outcome.REJECTED
    assert "Klaviyo accepts at most 102,400" in result.message
    assert klaviyo.requests == []


def test_a_429_waits_what_retry_after_says_then_succeeds(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    klaviyo.on(
        "POST",
        "/api/profile-import",
        refusal(429, "throttled", "Request was throttled.")
        if False
        else doc(429, {"errors": []}, **{"Retry-After": "7"}),
        imported,
    )
    [result] = make().push([person("a@example.com")])
    assert result.outcome is Outcome.OK
    assert 7.0 in klaviyo.sleeps  # the retry waited exactly what Klaviyo asked
    assert len(klaviyo.requests) == 2


def test_server_errors_and_dropped_connections_are_retried(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected", request=request)

    ok = doc(202, {"data": {"type": "profile-bulk-import-job", "id": "J1"}})
    klaviyo.on("POST", "/api/profile-bulk-import-jobs", doc(503), dropped, doc(502), ok)
    results = make().push([person(f"p{i}@example.com") for i in range(12)])
    assert {(r.outcome, r.job) for r in results} == {(Outcome.PENDING, "J1")}
    assert len(klaviyo.requests) == 4


def test_when_nothing_gets_through_the_push_raises_instead_of_failing_everyone(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    klaviyo.on("POST", "/api/profile-import", doc(503))
    with pytest.raises(TransientError):
        make(http={"retry": {"attempts": 2}}).push(
            [person("a@example.com"), person("b@example.com")]
        )


def test_a_job_refused_for_one_profile_rejects_it_and_sends_the_rest_again(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    pointer = "/data/attributes/profiles/data/3/attributes/properties"
    ok = doc(202, {"data": {"type": "profile-bulk-import-job", "id": "J2"}})
    klaviyo.on(
        "POST", "/api/profile-bulk-import-jobs", refusal(400, "invalid", "bad value", pointer), ok
    )
    people = [person(f"p{i}@example.com") for i in range(12)]
    results = {r.person_key: r for r in make().push(people)}
    assert results["e:p3@example.com"].outcome is Outcome.REJECTED
    assert "bad value" in results["e:p3@example.com"].message
    assert sum(r.outcome is Outcome.PENDING for r in results.values()) == 11
    second = klaviyo.sent("POST", "/api/profile-bulk-import-jobs")[1]
    assert len(second["data"]["attributes"]["profiles"]["data"]) == 11


def test_collect_waits_while_queued_and_fails_a_cancelled_or_forgotten_job(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    dest = make()
    people = [person("a@example.com")]

    def job(status: str) -> httpx.Response:
        return doc(
            200,
            {
                "data": {
                    "type": "profile-bulk-import-job",
                    "id": "J",
                    "attributes": {"status": status},
                }
            },
        )

    klaviyo.on(
        "GET", "/api/profile-bulk-import-jobs/J", job("queued"), job("processing"), job("cancelled")
    )
    assert dest.collect("J", people) is None
    assert dest.collect("J", people) is None
    [cancelled] = dest.collect("J", people) or []
    assert cancelled.outcome is Outcome.FAILED and "cancelled" in cancelled.message
    klaviyo.on("GET", "/api/profile-bulk-import-jobs/GONE", refusal(404, "not_found", "no job"))
    [gone] = dest.collect("GONE", people) or []
    assert gone.outcome is Outcome.FAILED


def test_an_exhausted_rate_window_pauses_only_its_own_endpoint_group(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    """RateLimit-Remaining: 0 with a reset pauses that group's budget before Klaviyo says 429."""
    exhausted = {"RateLimit-Limit": "75", "RateLimit-Remaining": "0", "RateLimit-Reset": "5"}

    def spent(request: httpx.Request) -> httpx.Response:
        answer = imported(request)
        answer.headers.update(exhausted)
        return answer

    klaviyo.on("POST", "/api/profile-import", spent)
    queued = {"type": "profile-bulk-import-job", "id": "J", "attributes": {"status": "queued"}}
    klaviyo.on("GET", "/api/profile-bulk-import-jobs/J", doc(200, {"data": queued}))
    dest = make()
    dest.push([person("a@example.com")])
    assert klaviyo.sleeps == []
    assert dest.collect("J", [person("a@example.com")]) is None  # another group: no wait
    assert klaviyo.sleeps == []
    dest.push([person("b@example.com")])
    assert klaviyo.sleeps == [5.0]


def test_check_names_the_key_setting_on_401_and_the_scope_on_403(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    klaviyo.on("GET", "/api/lists", refusal(401, "not_authenticated", "Incorrect authentication"))
    [check] = make().check()
    assert not check.ok and "api_key" in check.detail and "KLAVIYO_API_KEY" in check.detail
    assert KEY not in check.detail
    klaviyo.script.clear()
    klaviyo.on("GET", "/api/lists", doc(200, {"data": [], "links": {"self": "x"}}))
    missing = "This API key is missing required scopes: profiles:read."
    klaviyo.on("GET", "/api/profiles", refusal(403, "permission_denied", missing))
    klaviyo.on("GET", SUPPRESS, doc(200, {"data": [], "links": {"self": "x"}}))
    checks = {c.what: c for c in make().check()}
    assert checks["API key"].ok and checks["scope lists:read"].ok
    assert not checks["scope profiles:read"].ok
    assert "profiles:read" in checks["scope profiles:read"].detail
    assert checks["scope subscriptions:read"].ok
    [probe] = [r for r in klaviyo.requests if r.url.path == SUPPRESS]
    assert probe.method == "GET"  # a read: the check never writes


def test_a_missing_write_scope_stops_the_push_naming_it(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    missing = "This API key is missing required scopes: profiles:write."
    klaviyo.on("POST", "/api/profile-import", refusal(403, "permission_denied", missing))
    with pytest.raises(AuthError, match="profiles:write"):
        make().push([person("a@example.com")])


def test_pages_follow_the_cursor_on_the_configured_host_and_stop_on_a_loop(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    def page(cursor: str | None, email: str) -> httpx.Response:
        profile = {
            "type": "profile",
            "id": email,
            "attributes": {
                "email": email,
                "subscriptions": {
                    "email": {
                        "marketing": {
                            "suppression": [
                                {"reason": "UNSUBSCRIBE", "timestamp": "2030-01-01T00:00:00Z"}
                            ]
                        }
                    }
                },
            },
        }
        links = {"self": "x"}
        if cursor:
            links["next"] = f"https://elsewhere.example/api/profiles?page%5Bcursor%5D={cursor}"
        return doc(200, {"data": [profile], "links": links})

    klaviyo.on(
        "GET",
        "/api/profiles",
        page("c1", "a@example.com"),
        page("c2", "b@example.com"),
        page(None, "c@example.com"),
    )
    dest = make(base_url="https://proxy.example")
    assert [u.email for u in dest.read_consent(None)] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert {r.url.host for r in klaviyo.requests} == {"proxy.example"}
    assert [r.url.params.get("page[cursor]") for r in klaviyo.requests] == [None, "c1", "c2"]
    klaviyo.script.clear()
    klaviyo.on("GET", "/api/profiles", page("same", "a@example.com"))
    with pytest.raises(Exception, match="same next page twice"):
        list(dest.read_consent(None))


def test_a_list_call_refused_for_one_stale_profile_fails_only_that_person(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    def members(request: httpx.Request) -> httpx.Response:
        ids = [ref["id"] for ref in json.loads(request.content)["data"]]
        if "P-c@example.com" in ids:
            return refusal(400, "invalid", "Invalid profile ids: P-c@example.com.", "/data")
        return doc(204)

    lists = {"data": [{"type": "list", "id": "L1", "attributes": {"name": "crm-vip"}}]}
    klaviyo.on("GET", "/api/lists", doc(200, {**lists, "links": {"self": "x"}}))
    klaviyo.on("POST", "/api/profile-import", imported)
    klaviyo.on("POST", "/api/lists/L1/relationships/profiles", members)
    people = [person(f"{n}@example.com", memberships_add=("crm-vip",)) for n in "abcde"]
    dest = make()
    pushed = dest.push(people)  # the moves are held for the end of the run
    assert {r.outcome for r in pushed} == {Outcome.PENDING}
    [job] = {r.job for r in pushed}
    assert job is not None
    waiting = [replace(c, remote_id=r.remote_id) for c, r in zip(people, pushed, strict=True)]
    settled = dest.collect(job, waiting)
    assert settled is not None
    results = {r.person_key: r for r in settled}
    assert results.pop("e:c@example.com").outcome is Outcome.FAILED
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    moved = [len(b["data"]) for b in klaviyo.sent("POST", "/api/lists/L1/relationships/profiles")]
    assert moved[0] == 5 and sum(n for n in moved if n == 1) >= 1  # halved down to the culprit


def complete_job(klaviyo: Klaviyo, people: list[Change], *, created: str) -> None:
    """Scripts a bulk import job J that is complete and imported everyone."""
    job = {"type": "profile-bulk-import-job", "id": "J"}
    klaviyo.on("POST", "/api/profile-bulk-import-jobs", doc(202, {"data": job}))
    attributes = {
        "status": "complete",
        "created_at": "2026-01-01T00:00:00+00:00",
        "failed_count": 0,
    }
    klaviyo.on(
        "GET",
        "/api/profile-bulk-import-jobs/J",
        doc(200, {"data": {**job, "attributes": attributes}}),
    )
    never = {
        "email": {"marketing": {"consent": "NEVER_SUBSCRIBED"}},
        "sms": {"marketing": {"consent": "NEVER_SUBSCRIBED"}},
    }
    profiles = {
        str(c.email): {
            "type": "profile",
            "id": f"P{i}",
            "attributes": {"email": c.email, "created": created, "subscriptions": never},
        }
        for i, c in enumerate(people)
    }

    def looked_up(request: httpx.Request) -> httpx.Response:
        """The profiles an ``any(email,[...])`` lookup names, at most 100 a call."""
        text = request.url.params["filter"]
        assert text.startswith("any(email,[") and text.endswith("])")
        wanted = re.findall(r'"([^"]*)"', text)
        assert 0 < len(wanted) <= 100
        found = [profiles[email] for email in wanted if email in profiles]
        return doc(200, {"data": found, "links": {"self": "x"}})

    klaviyo.on("GET", "/api/profiles", looked_up)


def test_consent_jobs_hold_at_most_1000_subscribes_and_100_unsubscribes(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    joining = [
        person(f"s{i}@example.com", is_new=True, email_intent=ConsentIntent.SUBSCRIBE_IF_NEW)
        for i in range(1200)
    ]
    leaving = [
        person(f"u{i}@example.com", email_intent=ConsentIntent.UNSUBSCRIBE) for i in range(150)
    ]
    people = joining + leaving
    complete_job(klaviyo, people, created="2026-01-01T00:00:01+00:00")  # all made by the job
    klaviyo.on("POST", "/api/profile-subscription-bulk-create-jobs", doc(202))
    klaviyo.on("POST", "/api/profile-subscription-bulk-delete-jobs", doc(202))
    dest = make()
    [job] = {r.job for r in dest.push(people)}
    assert job == "J"
    results = dest.collect("J", people) or []
    assert {r.outcome for r in results} == {Outcome.OK}
    subscribed = klaviyo.sent("POST", "/api/profile-subscription-bulk-create-jobs")
    assert sorted(len(b["data"]["attributes"]["profiles"]["data"]) for b in subscribed) == [
        200,
        1000,
    ]
    left = klaviyo.sent("POST", "/api/profile-subscription-bulk-delete-jobs")
    assert sorted(len(b["data"]["attributes"]["profiles"]["data"]) for b in left) == [50, 100]


def test_a_consent_job_refused_for_one_person_rejects_only_that_person(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    def subscribe(request: httpx.Request) -> httpx.Response:
        entries = json.loads(request.content)["data"]["attributes"]["profiles"]["data"]
        if any(e["attributes"].get("phone_number") == "+15005550000" for e in entries):
            return refusal(400, "invalid", "SMS is not available for this number")
        return doc(202)

    klaviyo.on("POST", "/api/profile-import", imported)
    klaviyo.on("POST", "/api/profile-subscription-bulk-create-jobs", subscribe)
    sub = ConsentIntent.SUBSCRIBE_IF_NEW
    people = [
        person(f"{n}@example.com", is_new=True, email_intent=sub, sms_intent=sub, phone=phone)
        for n, phone in (("a", "+905321234567"), ("b", "+15005550000"), ("c", None))
    ]
    results = {r.person_key: r for r in make(sms=True).push(people)}
    assert results["e:b@example.com"].outcome is Outcome.REJECTED
    assert "SMS is not available" in results["e:b@example.com"].message
    assert results["e:a@example.com"].outcome is Outcome.OK
    assert results["e:c@example.com"].outcome is Outcome.OK


def test_a_job_whose_subscribe_call_is_down_stays_pending_and_still_subscribes_later(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    """Failing the person instead would lose the opt-in: re-sent, their profile would
    already exist in Klaviyo and they would no longer count as new."""
    sub = ConsentIntent.SUBSCRIBE_IF_NEW
    people = [person(f"n{i}@example.com", is_new=True, email_intent=sub) for i in range(12)]
    complete_job(klaviyo, people, created="2026-01-01T00:00:01+00:00")
    klaviyo.on("POST", "/api/profile-subscription-bulk-create-jobs", doc(503), doc(503), doc(202))
    dest = make(http={"retry": {"attempts": 2}})
    dest.push(people)
    with pytest.raises(TransientError):
        dest.collect("J", people)
    results = dest.collect("J", people) or []
    assert {r.outcome for r in results} == {Outcome.OK}
    [body] = [b for b in klaviyo.sent("POST", "/api/profile-subscription-bulk-create-jobs")][-1:]
    assert len(body["data"]["attributes"]["profiles"]["data"]) == 12


def test_side_by_side_reads_run_at_most_two_calls_per_connection_ahead(klaviyo: Klaviyo) -> None:
    """A complete job's 10,000 people are 100 lookups: submitted all at once, their
    decoded pages were held together (50 MB). The caller still gets every read's items,
    first pages in order, then the pages that follow."""
    config = KlaviyoConfig.model_validate({"kind": "klaviyo", "api_key": KEY})
    window = 2 * config.http_settings("profiles").rate.max_concurrency

    def page(request: httpx.Request) -> httpx.Response:
        name, cursor = request.url.params["filter"], request.url.params.get("page[cursor]")
        more = name == "f3" and cursor is None  # one read of two pages
        following = "https://a.klaviyo.com/api/profiles?page[cursor]=c2" if more else None
        ident = f"{name}+" if cursor else name
        return doc(200, {"data": [{"type": "profile", "id": ident}], "links": {"next": following}})

    klaviyo.on("GET", "/api/profiles", page)
    queries = [{"filter": f"f{i}"} for i in range(100)]

    def api() -> KlaviyoApi:
        return KlaviyoApi(
            config,
            transport=httpx.MockTransport(klaviyo),
            sleep=klaviyo.sleep,
            budgets=BudgetRegistry(clock=lambda: klaviyo.now, sleep=klaviyo.sleep),
        )

    pool = ThreadPoolExecutor(max_workers=4)
    first = next(api().pages_side_by_side("profiles", "/api/profiles", queries, pool))
    pool.shutdown(wait=True)  # every call submitted so far has been answered
    assert first["id"] == "f0"
    assert 4 <= window < 100 and len(klaviyo.requests) == window

    with ThreadPoolExecutor(max_workers=4) as pool:
        found = [
            p["id"] for p in api().pages_side_by_side("profiles", "/api/profiles", queries, pool)
        ]
    assert found == [f"f{i}" for i in range(100)] + ["f3+"]


# -- deletions: suppression jobs --------------------------------------------------------------


def found(request: httpx.Request, suppressed: frozenset[str] = frozenset()) -> httpx.Response:
    """GET /api/profiles for an ``any(email,[...])`` filter: each address has a profile,
    suppressed by crmsync when it is in ``suppressed``."""
    emails = json.loads(request.url.params["filter"][len("any(email,") : -1])
    data = []
    for email in emails:
        reasons = [{"reason": "USER_SUPPRESSED"}] if email in suppressed else []
        marketing = {"consent": "NEVER_SUBSCRIBED", "suppression": reasons}
        attributes = {"email": email, "subscriptions": {"email": {"marketing": marketing}}}
        data.append({"type": "profile", "id": f"P-{email}", "attributes": attributes})
    return doc(200, {"data": data, "links": {"self": "x"}})


def gone(email: str) -> Change:
    return person(email, action=Action.DELETE, fields={})


def suppression_job(status: str, **counts: int) -> httpx.Response:
    attributes = {"status": status, "created_at": "2026-01-01T00:00:00+00:00", **counts}
    job = {"type": "profile-suppression-bulk-create-job", "id": "S", "attributes": attributes}
    return doc(200, {"data": job})


def test_a_deletion_is_pending_on_its_suppression_job_until_klaviyo_completes_it(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    klaviyo.on("GET", "/api/profiles", found)
    started = {"type": "profile-suppression-bulk-create-job", "id": "S"}
    klaviyo.on("POST", SUPPRESS, doc(202, {"data": started}))
    people = [gone("a@example.com"), gone("b@example.com")]
    dest = make()
    assert {(r.outcome, r.job) for r in dest.push(people)} == {(Outcome.PENDING, "suppression:S")}
    [body] = klaviyo.sent("POST", SUPPRESS)
    assert [e["attributes"] for e in body["data"]["attributes"]["profiles"]["data"]] == [
        {"email": "a@example.com"},
        {"email": "b@example.com"},
    ]
    klaviyo.on(
        "GET",
        f"{SUPPRESS}/S",
        suppression_job("queued"),
        suppression_job("processing"),
        suppression_job("complete", total_count=2, completed_count=2, skipped_count=0),
    )
    assert dest.collect("suppression:S", people) is None
    assert dest.collect("suppression:S", people) is None
    reads = len(klaviyo.requests)
    done = dest.collect("suppression:S", people) or []
    assert [r.outcome for r in done] == [Outcome.OK, Outcome.OK]
    assert len(klaviyo.requests) == reads + 1  # nothing skipped: no profile read


def test_a_suppression_job_that_skipped_someone_is_checked_on_the_profiles(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    klaviyo.on("GET", "/api/profiles", lambda r: found(r, frozenset({"a@example.com"})))
    people = [gone("a@example.com"), gone("b@example.com")]
    dest = make()
    klaviyo.on(
        "GET",
        f"{SUPPRESS}/S",
        suppression_job("complete", total_count=2, completed_count=1, skipped_count=1),
    )
    results = {r.person_key: r for r in dest.collect("suppression:S", people) or []}
    assert results["e:a@example.com"].outcome is Outcome.OK
    assert results["e:a@example.com"].remote_id == "P-a@example.com"
    skipped = results["e:b@example.com"]
    assert skipped.outcome is Outcome.FAILED and "skipped b@example.com" in skipped.message
    klaviyo.on("GET", f"{SUPPRESS}/C", suppression_job("cancelled"))
    klaviyo.on("GET", f"{SUPPRESS}/GONE", refusal(404, "not_found", "no job"))
    for job in ("suppression:C", "suppression:GONE"):
        assert {r.outcome for r in dest.collect(job, people) or []} == {Outcome.FAILED}


def test_a_suppression_refused_for_one_address_rejects_only_that_person(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    def suppress(request: httpx.Request) -> httpx.Response:
        entries = json.loads(request.content)["data"]["attributes"]["profiles"]["data"]
        if any(e["attributes"]["email"] == "b@example.com" for e in entries):
            return refusal(400, "invalid", "Invalid email address")
        started = {"type": "profile-suppression-bulk-create-job", "id": f"S{len(entries)}"}
        return doc(202, {"data": started})

    klaviyo.on("GET", "/api/profiles", found)
    klaviyo.on("POST", SUPPRESS, suppress)
    people = [gone(f"{n}@example.com") for n in "abc"]
    results = {r.person_key: r for r in make().push(people)}
    assert results["e:b@example.com"].outcome is Outcome.REJECTED
    assert "Invalid email address" in results["e:b@example.com"].message
    assert results["e:a@example.com"].outcome is Outcome.PENDING
    assert results["e:c@example.com"].outcome is Outcome.PENDING


def test_when_no_suppression_gets_through_the_push_raises_instead_of_failing_everyone(
    klaviyo: Klaviyo, make: Callable[..., KlaviyoDestination]
) -> None:
    klaviyo.on("GET", "/api/profiles", found)
    klaviyo.on("POST", SUPPRESS, doc(503))
    with pytest.raises(TransientError):
        make(http={"retry": {"attempts": 2}}).push([gone("a@example.com")])
