"""The fake Klaviyo is strict: it refuses what the spec or Klaviyo refuses.

A fake that accepted anything would let the destination drift from the real API, so these
tests prove that malformed requests are caught (the spec check really looks at bodies, in
spite of the spec's bare ``nullable``), and that the fake enforces Klaviyo's asynchronous
jobs, limits, rate limits and consent rules.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_spec_validator import validate

from tests.fakes import FakeClock, klaviyo
from tests.fakes.klaviyo import (
    MEDIA_TYPE,
    REVISION,
    SPEC_NAMES,
    FakeKlaviyo,
    SpecRequest,
    klaviyo_fake,
    original,
    rewritten,
)

__all__ = ["klaviyo_fake"]

JOBS = "/api/profile-bulk-import-jobs"
SUBSCRIBE = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"
SUPPRESS = "/api/profile-suppression-bulk-create-jobs"
SUPPRESSED_SINCE = "greater-than(subscriptions.email.marketing.suppression.timestamp,{})"


@pytest.fixture
def client(klaviyo_fake: FakeKlaviyo) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=klaviyo_fake.base_url, headers=klaviyo_fake.headers(), timeout=10
    ) as http:
        yield http


def profile(email: str | None = None, **attributes: Any) -> dict[str, Any]:
    if email is not None:
        attributes["email"] = email
    return {"type": "profile", "attributes": attributes}


def import_job(profiles: list[dict[str, Any]], list_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": profiles}},
    }
    if list_id is not None:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return {"data": data}


def consent_job(
    kind: str,
    emails: list[str],
    consent: str,
    list_id: str | None = None,
    **marketing: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": f"profile-subscription-bulk-{kind}-job",
        "attributes": {
            "profiles": {
                "data": [
                    profile(
                        email,
                        subscriptions={"email": {"marketing": {"consent": consent, **marketing}}},
                    )
                    for email in emails
                ]
            }
        },
    }
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def subscribe(emails: list[str], list_id: str | None = None, **kw: Any) -> dict[str, Any]:
    return consent_job("create", emails, "SUBSCRIBED", list_id, **kw)


def suppression(emails: list[str], kind: str = "create") -> dict[str, Any]:
    return {
        "data": {
            "type": f"profile-suppression-bulk-{kind}-job",
            "attributes": {"profiles": {"data": [profile(email) for email in emails]}},
        }
    }


def run_job(client: httpx.Client, body: dict[str, Any]) -> str:
    """Posts a bulk import and polls it until complete; returns the job id."""
    answer = client.post(JOBS, json=body)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["data"]["id"]
    for _ in range(10):
        status = client.get(f"{JOBS}/{job_id}").json()["data"]["attributes"]["status"]
        if status == "complete":
            return job_id
    raise AssertionError("the job never completed")


def errors_of(answer: httpx.Response) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = answer.json()["errors"]
    return errors


# -- the spec check -------------------------------------------------------------------------


def test_the_rewritten_specs_are_valid_openapi_31() -> None:
    for name in SPEC_NAMES:
        validate(rewritten(name))


def test_the_rewrite_is_what_lets_documented_nulls_through() -> None:
    """openapi-core reads the 3.0 file's ``{"$ref": ..., "nullable": true}`` as "not
    nullable" (a $ref hides its siblings): a documented ``"location": null`` is refused."""
    body = {"data": {**profile("a@shop.example", location=None), "meta": None}}
    request = SpecRequest(
        "post",
        "/api/profile-import",
        [],
        {"revision": REVISION, "authorization": "Klaviyo-API-Key pk"},
        json.dumps(body).encode(),
        MEDIA_TYPE,
    )
    config = Config(spec_validator_cls=None)
    with pytest.raises(OpenAPIError, match="Request body validation error"):
        OpenAPI.from_dict(original("profiles"), config=config).validate_request(request)
    OpenAPI.from_dict(rewritten("profiles"), config=config).validate_request(request)


def test_a_missing_spec_fails_the_start_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(klaviyo, "SPEC_DIR", tmp_path)
    for cached in (klaviyo._documents, klaviyo.operations, klaviyo.specs):
        monkeypatch.setattr(klaviyo, cached.__name__, cache(cached.__wrapped__))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "profiles.json")):
        FakeKlaviyo().start()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()
_FIRST = "data.attributes.profiles.data.0"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_set("data.type", "profile-import-job"), "'profile-import-job' is not one of"),
        (_set("data.attributes.profiles", _DELETE), "'profiles' is a required property"),
        (_set("data.attributes.profiles.data", {"type": "profile"}), "is not of type 'array'"),
        (_set(f"{_FIRST}.type", "person"), "'person' is not one of"),
        (_set(f"{_FIRST}.attributes.email", 42), "42 is not of type"),
        (_set(f"{_FIRST}.attributes.properties", ["a"]), "is not of type 'object', 'null'"),
        (_set(f"{_FIRST}.attributes.phone", "+15005550006"), "'phone' was unexpected"),
        (_set(f"{_FIRST}.attributes.location", {"city": 7}), "7 is not of type"),
        (_set(f"{_FIRST}.attributes.location", "Paris"), "'Paris' is not of type 'object'"),
        (_set(f"{_FIRST}.meta", {"patch_properties": {"unset": 5}}), "5 is not"),
    ],
)
def test_a_malformed_bulk_import_is_rejected_and_recorded(
    klaviyo_fake: FakeKlaviyo,
    client: httpx.Client,
    change: Callable[[dict[str, Any]], None],
    why: str,
) -> None:
    body = import_job([profile("a@shop.example", first_name="A", properties={"tier": "gold"})])
    change(body)
    answer = client.post(JOBS, json=body)
    assert answer.status_code == 400
    assert errors_of(answer)[0]["code"] == "invalid"
    assert len(klaviyo_fake.violations) == 1
    assert "InvalidRequestBody" in klaviyo_fake.violations[0]
    assert why in klaviyo_fake.violations[0]
    assert klaviyo_fake.jobs == {}  # nothing queued
    klaviyo_fake.violations.clear()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (SUBSCRIBE, subscribe(["a@shop.example"], consented_at="last tuesday")),
        (SUBSCRIBE, consent_job("create", ["a@shop.example"], "YES")),
        (UNSUBSCRIBE, consent_job("delete", ["a@shop.example"], "SUBSCRIBED")),
        ("/api/profile-import", {"data": profile("a@shop.example", first_name=["A"])}),
        ("/api/lists", {"data": {"type": "list", "attributes": {"title": "VIP"}}}),
    ],
)
def test_other_malformed_bodies_are_rejected_and_recorded(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 400
    assert [v.split(":")[0] for v in klaviyo_fake.violations] == [f"POST {path}"]
    assert klaviyo_fake.profiles == {} and klaviyo_fake.lists == {}
    klaviyo_fake.violations.clear()


def test_the_nulls_the_spec_documents_are_accepted(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.add_profile("a@shop.example", properties={"tier": "gold", "city": "Lyon"})
    body = profile(
        "a@shop.example",
        first_name=None,
        location={"latitude": None, "city": "Paris"},
        properties={"tier": None},
    )
    body["meta"] = None
    answer = client.post("/api/profile-import", json={"data": body})
    assert answer.status_code == 200, answer.text
    assert klaviyo_fake.properties("a@shop.example") == {"city": "Lyon"}
    assert klaviyo_fake.violations == []


def test_requests_need_the_key_the_revision_and_the_scopes(klaviyo_fake: FakeKlaviyo) -> None:
    url = f"{klaviyo_fake.base_url}/api/lists"
    headers = klaviyo_fake.headers()
    wrong = httpx.get(url, headers={**headers, "Authorization": "Klaviyo-API-Key pk_nope"})
    assert wrong.status_code == 401 and errors_of(wrong)[0]["code"] == "authentication_failed"
    assert httpx.get(url, headers={"revision": "2026-07-15"}).status_code == 401
    no_revision = httpx.get(url, headers={k: v for k, v in headers.items() if k != "revision"})
    assert no_revision.status_code == 400
    assert errors_of(no_revision)[0]["source"] == {"parameter": "revision"}
    assert klaviyo_fake.violations == ["GET /api/lists: revision None"]
    klaviyo_fake.violations.clear()

    reader = FakeKlaviyo(scopes={"profiles:read", "lists:read"}).start()
    try:
        with httpx.Client(base_url=reader.base_url, headers=reader.headers()) as http:
            assert http.get("/api/lists").status_code == 200
            denied = http.post("/api/profile-import", json={"data": profile("a@shop.example")})
        assert denied.status_code == 403
        assert "profiles:write" in errors_of(denied)[0]["detail"]
        assert reader.violations == [] and reader.profiles == {}
    finally:
        reader.stop()


def test_both_json_media_types_are_accepted(klaviyo_fake: FakeKlaviyo) -> None:
    url = f"{klaviyo_fake.base_url}/api/lists"
    body = b'{"data": {"type": "list", "attributes": {"name": "News"}}}'
    statuses = [
        httpx.post(
            url, content=body, headers={**klaviyo_fake.headers(), "Content-Type": media}
        ).status_code
        for media in ("application/json", "application/vnd.api+json", "text/plain")
    ]
    assert statuses == [201, 201, 415]
    assert klaviyo_fake.violations == ["POST /api/lists: a body of type text/plain"]
    klaviyo_fake.violations.clear()


def test_a_filter_the_spec_does_not_allow_is_refused(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    answer = client.get("/api/profiles", params={"filter": 'equals(first_name,"Ann")'})
    assert answer.status_code == 400
    assert errors_of(answer)[0]["source"] == {"parameter": "filter"}
    assert "first_name" in klaviyo_fake.violations[0]
    klaviyo_fake.violations.clear()


def test_a_filters_pages_are_what_it_matched_at_its_first_page_and_lookups_use_indexes(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    for number in range(250):
        klaviyo_fake.add_profile(f"p{number:03d}@example.com")
    wanted = {"filter": "greater-than(created,2000-01-01T00:00:00+00:00)", "page[size]": "100"}

    def read(params: dict[str, str]) -> list[str]:
        emails: list[str] = []
        while True:
            answer = client.get("/api/profiles", params=params).json()
            emails += [p["attributes"]["email"] for p in answer["data"]]
            following = answer["links"].get("next")
            if not following:
                return emails
            params = dict(httpx.URL(following).params)

    first = client.get("/api/profiles", params=wanted).json()
    klaviyo_fake.add_profile("late@example.com")  # between a read's pages
    rest = read(dict(httpx.URL(first["links"]["next"]).params))
    emails = [p["attributes"]["email"] for p in first["data"]] + rest
    assert len(emails) == len(set(emails)) == 250 and "late@example.com" not in emails
    assert len(read(wanted)) == 251  # a read begun afterwards sees it
    # an any() lookup names its profiles from the indexes, in id order as a scan would
    names = ",".join(f'"P{n:03d}@Example.com"' for n in (7, 3, 249)) + ',"nobody@example.com"'
    found = read({"filter": f"any(email,[{names}])", "page[size]": "100"})
    assert found == ["p003@example.com", "p007@example.com", "p249@example.com"]


# -- bulk import jobs -------------------------------------------------------------------------


def test_a_bulk_import_applies_only_once_complete(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.add_profile("old@shop.example", properties={"tier": "gold", "keep": 1})
    newsletter = klaviyo_fake.add_list("Newsletter")
    body = import_job(
        [
            profile("old@shop.example", properties={"tier": None, "orders": 3}),
            profile("new@shop.example", first_name="Nina", phone_number="+33612345678"),
        ],
        list_id=newsletter.id,
    )
    created = client.post(JOBS, json=body)
    assert created.status_code == 202
    job = created.json()["data"]
    assert job["attributes"]["status"] == "queued"
    assert job["attributes"]["total_count"] == 2

    seen = []
    for _ in range(klaviyo_fake.job_polls_until_complete or 0):
        assert klaviyo_fake.profile("new@shop.example") is None or seen[-1] == "complete"
        attributes = client.get(f"{JOBS}/{job['id']}").json()["data"]["attributes"]
        seen.append(attributes["status"])
    assert seen == ["processing", "complete"]
    assert attributes["completed_count"] == 2 and attributes["failed_count"] == 0

    assert klaviyo_fake.properties("old@shop.example") == {"keep": 1, "orders": 3}
    nina = klaviyo_fake.profile("new@shop.example")
    assert nina is not None and nina.first_name == "Nina" and len(nina.id) == 26
    assert klaviyo_fake.members("Newsletter") == {"old@shop.example", "new@shop.example"}
    ids = client.get(f"{JOBS}/{job['id']}/relationships/profiles").json()["data"]
    assert {i["id"] for i in ids} == {nina.id, klaviyo_fake._by_email["old@shop.example"]}


def test_finish_jobs_completes_a_job_nobody_polls(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.job_polls_until_complete = None
    job_id = client.post(JOBS, json=import_job([profile("a@shop.example")])).json()["data"]["id"]
    for _ in range(3):
        assert client.get(f"{JOBS}/{job_id}").json()["data"]["attributes"]["status"] == (
            "processing"
        )
    assert klaviyo_fake.profiles == {}
    klaviyo_fake.finish_jobs()
    assert client.get(f"{JOBS}/{job_id}").json()["data"]["attributes"]["status"] == "complete"
    assert klaviyo_fake.profile("a@shop.example") is not None


def test_a_job_can_complete_after_some_seconds_instead() -> None:
    clock = FakeClock()
    fake = FakeKlaviyo(clock=clock, job_polls_until_complete=None, job_seconds_until_complete=30)
    fake.start()
    try:
        with httpx.Client(base_url=fake.base_url, headers=fake.headers()) as http:
            created = http.post(JOBS, json=import_job([profile("a@shop.example")]))
            url = f"{JOBS}/{created.json()['data']['id']}"
            statuses = [http.get(url).json()["data"]["attributes"]["status"] for _ in range(3)]
            clock.advance(30)
            statuses.append(http.get(url).json()["data"]["attributes"]["status"])
        assert statuses == ["processing"] * 3 + ["complete"]
        assert fake.profile("a@shop.example") is not None and fake.violations == []
    finally:
        fake.stop()


def test_invalid_profiles_become_import_errors_a_client_can_map(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    email_owner = klaviyo_fake.add_profile("taken@shop.example")
    phone_owner = klaviyo_fake.add_profile("other@shop.example", "+14155550100")
    job_id = run_job(
        client,
        import_job(
            [
                profile("good@shop.example"),
                profile("not-an-address", first_name="Bad"),
                profile("phone@shop.example", phone_number="0612345678"),
                profile("taken@shop.example", phone_number="+14155550100"),
            ]
        ),
    )
    attributes = client.get(f"{JOBS}/{job_id}").json()["data"]["attributes"]
    assert (attributes["completed_count"], attributes["failed_count"]) == (1, 3)

    page = client.get(f"{JOBS}/{job_id}/import-errors", params={"page[size]": 2})
    errors = page.json()["data"]
    errors += client.get(page.json()["links"]["next"]).json()["data"]
    by_email = {e["attributes"]["original_payload"]["email"]: e["attributes"] for e in errors}
    assert set(by_email) == {"not-an-address", "phone@shop.example", "taken@shop.example"}
    assert by_email["not-an-address"]["source"]["pointer"].endswith("/1/attributes/email")
    assert by_email["phone@shop.example"]["source"]["pointer"].endswith(
        "/2/attributes/phone_number"
    )
    assert by_email["taken@shop.example"]["code"] == "duplicate_profile"
    assert klaviyo_fake.profile("not-an-address") is None
    assert email_owner.phone_number is None and phone_owner.email == "other@shop.example"


def test_a_conflicting_single_profile_import_answers_409(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.add_profile("ann@shop.example")
    phone_owner = klaviyo_fake.add_profile("bob@shop.example", "+14155550100")
    created = client.post("/api/profile-import", json={"data": profile("cy@shop.example")})
    assert created.status_code == 201
    updated = client.post(
        "/api/profile-import", json={"data": profile("cy@shop.example", last_name="Young")}
    )
    assert updated.status_code == 200
    assert updated.json()["data"]["id"] == created.json()["data"]["id"]

    clash = profile("ann@shop.example", phone_number="+14155550100")
    answer = client.post("/api/profile-import", json={"data": clash})
    assert answer.status_code == 409
    error = errors_of(answer)[0]
    assert error["code"] == "duplicate_profile"
    assert error["meta"] == {"duplicate_profile_id": phone_owner.id}
    ann = klaviyo_fake.profile("ann@shop.example")
    assert ann is not None and ann.phone_number is None  # nothing applied


def test_bulk_import_limits(klaviyo_fake: FakeKlaviyo, client: httpx.Client) -> None:
    crowd = [profile(f"p{i}@shop.example") for i in range(10_001)]
    answer = client.post(JOBS, json=import_job(crowd))
    assert answer.status_code == 400
    assert "10,000" in errors_of(answer)[0]["detail"]

    heavy = profile("big@shop.example", properties={"notes": "x" * 101 * 1024})
    assert client.post(JOBS, json=import_job([heavy])).status_code == 413
    bulky = [profile(f"p{i}@shop.example", properties={"n": "x" * 60_000}) for i in range(90)]
    assert client.post(JOBS, json=import_job(bulky)).status_code == 413
    assert klaviyo_fake.jobs == {} and klaviyo_fake.violations == []


# -- lists ------------------------------------------------------------------------------------


def test_list_relationships_add_and_remove(klaviyo_fake: FakeKlaviyo, client: httpx.Client) -> None:
    vip = client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "VIP"}}})
    assert vip.status_code == 201
    list_id = vip.json()["data"]["id"]
    people = [klaviyo_fake.add_profile(f"p{i}@shop.example") for i in range(3)]
    refs = [{"type": "profile", "id": p.id} for p in people]
    path = f"/api/lists/{list_id}/relationships/profiles"

    assert client.post(path, json={"data": refs}).status_code == 204
    assert client.request("DELETE", path, json={"data": refs[:1]}).status_code == 204
    assert klaviyo_fake.members("VIP") == {"p1@shop.example", "p2@shop.example"}
    assert klaviyo_fake.lists_of("p0@shop.example") == set()

    first = client.get(path, params={"page[size]": 1}).json()
    second = client.get(first["links"]["next"]).json()
    assert [r["id"] for r in first["data"] + second["data"]] == [people[1].id, people[2].id]
    assert "next" not in second["links"]

    found = client.get("/api/lists", params={"filter": 'equals(name,"VIP")'}).json()["data"]
    assert [x["id"] for x in found] == [list_id]

    unknown = client.post(path, json={"data": [*refs, {"type": "profile", "id": "01NOSUCH"}]})
    assert unknown.status_code == 400 and "01NOSUCH" in errors_of(unknown)[0]["detail"]
    assert len(klaviyo_fake.lists[list_id].members) == 2  # refused as a whole

    too_many = [{"type": "profile", "id": people[0].id}] * 1_001
    assert client.post(path, json={"data": too_many}).status_code == 400
    assert client.request("DELETE", path, json={"data": too_many}).status_code == 400


def test_a_list_can_be_renamed_counted_and_deleted(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    news = klaviyo_fake.add_list("News")
    news.members[klaviyo_fake.add_profile("a@shop.example").id] = datetime.now(UTC)
    rename = {"data": {"type": "list", "id": news.id, "attributes": {"name": "Weekly"}}}
    assert client.patch(f"/api/lists/{news.id}", json=rename).status_code == 200
    counted = client.get(
        f"/api/lists/{news.id}", params={"additional-fields[list]": "profile_count"}
    ).json()["data"]["attributes"]
    assert (counted["name"], counted["profile_count"]) == ("Weekly", 1)
    assert client.delete(f"/api/lists/{news.id}").status_code == 204
    gone = client.get(f"/api/lists/{news.id}")
    assert gone.status_code == 404 and errors_of(gone)[0]["code"] == "not_found"


def test_list_creation_has_a_daily_cap(klaviyo_fake: FakeKlaviyo, client: httpx.Client) -> None:
    assert klaviyo_fake.limits[("POST", "/api/lists")] == {
        "burst": 10,
        "steady": 150,
        "daily": 150,
    }
    klaviyo_fake.set_rate_limit("POST", "/api/lists", daily=2)
    answers = [
        client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": f"L{i}"}}})
        for i in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert errors_of(answers[2])[0]["code"] == "throttled"
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 86_400
    assert len(klaviyo_fake.lists) == 2


# -- rate limits and faults ---------------------------------------------------------------------


def test_a_tight_rate_limit_answers_429_with_retry_after() -> None:
    clock = FakeClock(start=1200.0)  # Klaviyo's windows are fixed: minute 20 starts here
    fake = FakeKlaviyo(clock=clock).start()
    try:
        fake.set_rate_limit("GET", "/api/lists", burst=2, steady=3)
        with httpx.Client(base_url=fake.base_url, headers=fake.headers()) as http:
            first, second, third = (http.get("/api/lists") for _ in range(3))
            assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
            # the steady minute's state, as Klaviyo documents its headers
            assert first.headers["RateLimit-Limit"] == "3, 2;w=1, 3;w=60"
            remaining = [a.headers["RateLimit-Remaining"] for a in (first, second)]
            assert remaining == ["2", "1"]
            assert first.headers["RateLimit-Reset"] == "60"
            assert third.headers["Retry-After"] == "1"
            assert "RateLimit-Limit" not in third.headers  # Klaviyo omits them on a 429

            clock.advance(1.0)
            assert http.get("/api/lists").status_code == 200  # a new second, the last of 3/min
            steady = http.get("/api/lists")
            clock.advance(1.0)
            assert steady.status_code == 429 and steady.headers["Retry-After"] == "59"
            assert http.get("/api/lists").status_code == 429
            clock.advance(60.0)
            assert http.get("/api/lists").status_code == 200
        assert fake.rate_limited == 3 and fake.violations == []
    finally:
        fake.stop()


def test_injected_faults_hit_the_matching_calls_only(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.inject(503, times=2, method="POST", path="/api/profile-import")
    body = {"data": profile("a@shop.example")}
    assert client.get("/api/lists").status_code == 200  # another route: untouched
    assert [client.post("/api/profile-import", json=body).status_code for _ in range(3)] == [
        503,
        503,
        201,
    ]

    klaviyo_fake.inject("drop", path="/api/lists*")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/api/lists")
    assert client.get("/api/lists").status_code == 200

    klaviyo_fake.inject("drop", method="POST", path="/api/lists", after=True)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "Lost"}}})
    assert [x.name for x in klaviyo_fake.lists.values()] == ["Lost"]  # applied, answer lost
    assert klaviyo_fake.calls[("POST", "/api/profile-import")] == 3
    assert klaviyo_fake.writes() == 4


def test_a_storm_fails_a_share_of_calls(klaviyo_fake: FakeKlaviyo, client: httpx.Client) -> None:
    klaviyo_fake.storm(0.5, statuses=(500, 503), seed=3)
    statuses = [client.get("/api/lists").status_code for _ in range(40)]
    assert 8 <= statuses.count(200) <= 32
    assert set(statuses) <= {200, 500, 503}
    klaviyo_fake.storm(0.0)
    klaviyo_fake.reset_counters()
    assert client.get("/api/lists").status_code == 200
    assert klaviyo_fake.calls == {("GET", "/api/lists"): 1}


# -- subscriptions and consent ------------------------------------------------------------------


def test_unsubscribed_and_suppressed_profiles_can_be_read_back_since_a_time(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    since = datetime(2026, 3, 1, tzinfo=UTC)
    for name in ("early", "left", "bounced", "stays"):
        klaviyo_fake.add_profile(f"{name}@shop.example", at=since - timedelta(days=30))
    klaviyo_fake.unsubscribe("early@shop.example", at=since - timedelta(days=1))
    klaviyo_fake.unsubscribe("left@shop.example", at=since + timedelta(hours=2))
    klaviyo_fake.suppress("bounced@shop.example", "HARD_BOUNCE", at=since + timedelta(hours=5))

    stamp = since.isoformat().replace("+00:00", "Z")
    answer = client.get(
        "/api/profiles",
        params={
            "filter": f"greater-than(subscriptions.email.marketing.suppression.timestamp,{stamp})",
            "additional-fields[profile]": "subscriptions",
            "sort": "-subscriptions.email.marketing.suppression.timestamp",
        },
    )
    assert answer.status_code == 200, answer.text
    found = [
        (p["attributes"]["email"], p["attributes"]["subscriptions"]["email"]["marketing"])
        for p in answer.json()["data"]
    ]
    assert [email for email, _ in found] == ["bounced@shop.example", "left@shop.example"]
    assert [m["suppression"][0]["reason"] for _, m in found] == ["HARD_BOUNCE", "UNSUBSCRIBE"]
    assert found[1][1]["consent"] == "UNSUBSCRIBED"
    assert not any(m["can_receive_email_marketing"] for _, m in found)

    by_reason = client.get(
        "/api/profiles",
        params={
            "filter": "equals(subscriptions.email.marketing.suppression.reason,'UNSUBSCRIBE'),"
            f"greater-than(updated,{stamp})"
        },
    )
    assert [p["attributes"]["email"] for p in by_reason.json()["data"]] == ["left@shop.example"]


def test_a_filter_on_suppression_times_sees_every_suppression_made_or_gone_since(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    """Such a filter is answered from the suppressions in time order (not a scan of every
    profile), which are found again after each change: the answers stay those of a scan."""
    since = datetime(2026, 3, 1, tzinfo=UTC)
    stamp = since.isoformat().replace("+00:00", "Z")
    until = (since + timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    field = "subscriptions.email.marketing.suppression.timestamp"
    wanted = {"filter": f"greater-than({field},{stamp}),less-or-equal({field},{until})"}

    def emails() -> list[str]:
        answer = client.get("/api/profiles", params=wanted)
        assert answer.status_code == 200, answer.text
        return sorted(p["attributes"]["email"] for p in answer.json()["data"])

    for name in ("a", "b", "c", "d"):
        klaviyo_fake.add_profile(f"{name}@shop.example")
    klaviyo_fake.unsubscribe("a@shop.example", at=since + timedelta(hours=1))
    klaviyo_fake.unsubscribe("b@shop.example", at=since + timedelta(hours=4))  # after
    assert emails() == ["a@shop.example"]
    klaviyo_fake.suppress("c@shop.example", "HARD_BOUNCE", at=since + timedelta(hours=3))
    assert emails() == ["a@shop.example", "c@shop.example"]  # on the bound: in
    klaviyo_fake.delete_profile("a@shop.example")
    assert emails() == ["c@shop.example"]


def test_subscribe_and_unsubscribe_jobs_follow_klaviyos_consent_rules(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.expect_consented(["new@shop.example", "old@shop.example"])
    news = klaviyo_fake.add_list("News")
    past = "2025-05-01T10:00:00+00:00"

    refused = client.post(SUBSCRIBE, json=subscribe(["old@shop.example"], consented_at=past))
    assert refused.status_code == 400  # consented_at only with historical_import
    historical = subscribe(["old@shop.example"], news.id, consented_at=past)
    historical["data"]["attributes"]["historical_import"] = True
    assert client.post(SUBSCRIBE, json=historical).status_code == 202
    assert client.post(SUBSCRIBE, json=subscribe(["new@shop.example"])).status_code == 202

    old = klaviyo_fake.profile("old@shop.example")
    assert old is not None and old.email_marketing.consent_timestamp == datetime.fromisoformat(past)
    assert klaviyo_fake.subscriptions("email") == {
        "old@shop.example": "SUBSCRIBED",
        "new@shop.example": "SUBSCRIBED",
    }
    assert klaviyo_fake.members("News") == {"old@shop.example"}

    assert (
        client.post(
            UNSUBSCRIBE, json=consent_job("delete", ["new@shop.example"], "UNSUBSCRIBED")
        ).status_code
        == 202
    )
    assert klaviyo_fake.subscriptions("email")["new@shop.example"] == "UNSUBSCRIBED"
    assert klaviyo_fake.suppressions("new@shop.example") == ["UNSUBSCRIBE"]

    crowd = [f"p{i}@shop.example" for i in range(1_001)]
    assert client.post(SUBSCRIBE, json=subscribe(crowd)).status_code == 400
    unsub = consent_job("delete", crowd[:101], "UNSUBSCRIBED")
    assert client.post(UNSUBSCRIBE, json=unsub).status_code == 400
    assert klaviyo_fake.consent_problems() == []


def test_sms_consent_is_kept_per_phone_number(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.expect_consented([], phones=["+14155550100"])
    sms = {"sms": {"marketing": {"consent": "SUBSCRIBED"}}}
    body = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {"data": [profile(phone_number="+14155550100", subscriptions=sms)]}
            },
        }
    }
    assert client.post(SUBSCRIBE, json=body).status_code == 202
    assert klaviyo_fake.subscriptions("sms") == {"+14155550100": "SUBSCRIBED"}
    assert klaviyo_fake.subscriptions("email") == {"+14155550100": "NEVER_SUBSCRIBED"}
    bad = copy.deepcopy(body)
    bad["data"]["attributes"]["profiles"]["data"][0]["attributes"]["phone_number"] = "4155550100"
    assert client.post(SUBSCRIBE, json=bad).status_code == 400  # not E.164
    assert klaviyo_fake.consent_problems() == []


def test_double_opt_in_lists_wait_for_the_confirmation(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.expect_consented(["a@shop.example"])
    doi = klaviyo_fake.add_list("Confirmed", opt_in_process="double_opt_in")
    assert client.post(SUBSCRIBE, json=subscribe(["a@shop.example"], doi.id)).status_code == 202
    assert klaviyo_fake.subscriptions("email") == {"a@shop.example": "NEVER_SUBSCRIBED"}
    assert klaviyo_fake.confirmations_sent == {"a@shop.example": doi.id}
    klaviyo_fake.confirm("a@shop.example")
    assert klaviyo_fake.subscriptions("email") == {"a@shop.example": "SUBSCRIBED"}
    assert klaviyo_fake.members("Confirmed") == {"a@shop.example"}


def test_deferred_subscription_jobs_apply_when_finished(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.expect_consented(["a@shop.example"])
    klaviyo_fake.defer_subscription_jobs = True
    assert client.post(SUBSCRIBE, json=subscribe(["a@shop.example"])).status_code == 202
    assert klaviyo_fake.profiles == {}
    klaviyo_fake.finish_jobs()
    assert klaviyo_fake.subscriptions("email") == {"a@shop.example": "SUBSCRIBED"}


def test_the_consent_invariant_reports_resubscriptions_and_undeclared_consent(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.add_profile("gone@shop.example", email_consent="SUBSCRIBED")
    klaviyo_fake.unsubscribe("gone@shop.example")
    klaviyo_fake.expect_consented(["gone@shop.example"])  # consent once given is not enough
    assert client.post(SUBSCRIBE, json=subscribe(["gone@shop.example"])).status_code == 202
    assert client.post(SUBSCRIBE, json=subscribe(["stranger@shop.example"])).status_code == 202

    problems = klaviyo_fake.consent_problems()
    assert problems == [
        "gone@shop.example was subscribed to email again after unsubscribing or being suppressed",
        "stranger@shop.example is subscribed to email without consent",
    ]
    # Klaviyo itself lifts the UNSUBSCRIBE suppression on a subscribe call: the fake does too.
    assert klaviyo_fake.suppressions("gone@shop.example") == []
    klaviyo_fake.resubscriptions.clear()
    klaviyo_fake.expect_consented(["gone@shop.example", "stranger@shop.example"])


# -- suppressions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_set("data.type", "profile-suppression-bulk-delete-job"), "is not one of"),
        (_set("data.attributes", _DELETE), "'attributes' is a required property"),
        (_set(f"{_FIRST}.attributes.email", _DELETE), "'email' is a required property"),
        (_set(f"{_FIRST}.attributes.phone_number", "+15005550006"), "'phone_number' was unexp"),
        (_set(f"{_FIRST}.attributes.email", ["a@shop.example"]), "is not of type 'string'"),
        (_set("data.relationships", {"list": {"data": {"id": "Y6nRLr"}}}), "'type' is a requ"),
    ],
)
def test_a_malformed_suppression_job_is_rejected_and_recorded(
    klaviyo_fake: FakeKlaviyo,
    client: httpx.Client,
    change: Callable[[dict[str, Any]], None],
    why: str,
) -> None:
    body = suppression(["a@shop.example"])
    change(body)
    answer = client.post(SUPPRESS, json=body)
    assert answer.status_code == 400
    assert errors_of(answer)[0]["code"] == "invalid"
    assert len(klaviyo_fake.violations) == 1
    assert "InvalidRequestBody" in klaviyo_fake.violations[0]
    assert why in klaviyo_fake.violations[0]
    assert klaviyo_fake.suppression_jobs == {} and klaviyo_fake.profiles == {}
    klaviyo_fake.violations.clear()


def test_suppression_jobs_take_at_most_100_addresses_and_one_target(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    crowd = [f"p{i}@shop.example" for i in range(101)]
    too_many = client.post(SUPPRESS, json=suppression(crowd))
    assert too_many.status_code == 400 and "100" in errors_of(too_many)[0]["detail"]
    assert client.post(SUPPRESS, json=suppression(crowd[:100])).status_code == 202
    assert client.post(SUPPRESS, json=suppression([])).status_code == 400
    bad = client.post(SUPPRESS, json=suppression(["a@shop.example", "not-an-address"]))
    assert bad.status_code == 400
    assert errors_of(bad)[0]["source"]["pointer"].endswith("/data/1/attributes/email")
    news = klaviyo_fake.add_list("News")
    both = suppression(["a@shop.example"])
    both["data"]["relationships"] = {"list": {"data": {"type": "list", "id": news.id}}}
    assert client.post(SUPPRESS, json=both).status_code == 400
    assert len(klaviyo_fake.suppression_jobs) == 1 and klaviyo_fake.profiles == {}
    assert klaviyo_fake.violations == []  # Klaviyo's own rules, not the spec's


def test_a_suppression_job_applies_once_complete_and_shows_in_consent_reads(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    klaviyo_fake.add_profile("fan@shop.example", email_consent="SUBSCRIBED")
    klaviyo_fake.add_profile("other@shop.example", email_consent="SUBSCRIBED")
    klaviyo_fake.expect_consented(["fan@shop.example", "other@shop.example"])
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    created = client.post(SUPPRESS, json=suppression(["Fan@shop.example", "new@shop.example"]))
    assert created.status_code == 202, created.text
    job = created.json()["data"]
    assert (job["type"], job["attributes"]["status"]) == (
        "profile-suppression-bulk-create-job",
        "queued",
    )
    assert job["attributes"]["total_count"] == 2
    assert klaviyo_fake.suppressions("fan@shop.example") == []  # not before it is complete

    def status() -> dict[str, Any]:
        answer = client.get(f"{SUPPRESS}/{job['id']}")
        assert answer.status_code == 200, answer.text
        attributes: dict[str, Any] = answer.json()["data"]["attributes"]
        return attributes

    assert status()["status"] == "processing"
    done = status()
    assert (done["status"], done["completed_count"], done["skipped_count"]) == ("complete", 2, 0)
    for email in ("fan@shop.example", "new@shop.example"):  # a missing profile is made
        assert klaviyo_fake.suppressions(email) == ["USER_SUPPRESSED"]
    assert klaviyo_fake.subscriptions() == {
        "fan@shop.example": "UNSUBSCRIBED",
        "other@shop.example": "SUBSCRIBED",
        "new@shop.example": "UNSUBSCRIBED",
    }
    read = client.get(
        "/api/profiles",
        params={
            "filter": SUPPRESSED_SINCE.format(since),
            "additional-fields[profile]": "subscriptions",
        },
    )
    marketing = {
        p["attributes"]["email"]: p["attributes"]["subscriptions"]["email"]["marketing"]
        for p in read.json()["data"]
    }
    assert set(marketing) == {"fan@shop.example", "new@shop.example"}
    fan = marketing["fan@shop.example"]
    assert [s["reason"] for s in fan["suppression"]] == ["USER_SUPPRESSED"]
    assert fan["consent"] == "UNSUBSCRIBED" and not fan["can_receive_email_marketing"]

    again = client.post(SUPPRESS, json=suppression(["fan@shop.example"])).json()["data"]
    klaviyo_fake.finish_jobs()
    repeat = client.get(f"{SUPPRESS}/{again['id']}").json()["data"]["attributes"]
    assert (repeat["completed_count"], repeat["skipped_count"]) == (0, 1)
    assert klaviyo_fake.suppressions("fan@shop.example") == ["USER_SUPPRESSED"]
    complete = {"filter": "equals(status,'complete')", "sort": "-created"}
    listed = client.get(SUPPRESS, params=complete)
    assert [j["id"] for j in listed.json()["data"]] == [again["id"], job["id"]]
    fan_profile = klaviyo_fake.profile("fan@shop.example")
    assert fan_profile is not None and "email" in fan_profile.opted_out  # a subscribe would
    # lift the suppression, and the fake's teardown would report it as a re-subscription
    assert klaviyo_fake.violations == []


def test_suppression_jobs_need_the_subscriptions_scopes_and_are_never_undone(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    reader = FakeKlaviyo(scopes={"profiles:write", "lists:read"}).start()
    try:
        with httpx.Client(base_url=reader.base_url, headers=reader.headers()) as http:
            denied = http.post(SUPPRESS, json=suppression(["a@shop.example"]))
            listed = http.get(SUPPRESS)
        assert denied.status_code == listed.status_code == 403
        assert "subscriptions:write" in errors_of(denied)[0]["detail"]
        assert "subscriptions:read" in errors_of(listed)[0]["detail"]
    finally:
        reader.stop()
    assert client.get(SUPPRESS).json()["data"] == []  # subscriptions:write grants the read
    assert client.get(f"{SUPPRESS}/01NOSUCHJOB").status_code == 404
    undo = client.post(
        "/api/profile-suppression-bulk-delete-jobs", json=suppression(["a@shop.example"], "delete")
    )
    assert undo.status_code == 404  # crmsync never unsuppresses: the fake does not serve it
    assert klaviyo_fake.violations == [
        "POST /api/profile-suppression-bulk-delete-jobs: not implemented by the fake"
    ]
    klaviyo_fake.violations.clear()


# -- reading --------------------------------------------------------------------------------


def test_profiles_page_with_cursors(klaviyo_fake: FakeKlaviyo, client: httpx.Client) -> None:
    emails = [f"p{i:02}@shop.example" for i in range(45)]
    for email in emails:
        klaviyo_fake.add_profile(email)
    seen: list[str] = []
    url: str | None = "/api/profiles"
    params: dict[str, Any] | None = {"page[size]": 20, "fields[profile]": "email"}
    pages = 0
    while url:
        body = client.get(url, params=params).json()
        seen += [p["attributes"]["email"] for p in body["data"]]
        assert set(body["data"][0]["attributes"]) == {"email"}
        url, params, pages = body["links"].get("next"), None, pages + 1
    assert (pages, seen) == (3, emails)

    some = client.get("/api/profiles", params={"filter": f"any(email,{emails[3:5]!r})"})
    assert [p["attributes"]["email"] for p in some.json()["data"]] == emails[3:5]
    bad = client.get("/api/profiles", params={"page[cursor]": "garbage!"})
    assert bad.status_code == 400
    assert klaviyo_fake.violations == []


def test_the_fake_refuses_routes_the_spec_does_not_have(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client
) -> None:
    assert client.get("/api/profiles/").status_code == 404  # no trailing slash in the spec
    assert client.delete("/api/profiles/01ABC").status_code == 405
    assert len(klaviyo_fake.violations) == 2
    klaviyo_fake.violations.clear()


def test_responses_are_checked_against_the_spec_too(
    klaviyo_fake: FakeKlaviyo, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    render = FakeKlaviyo.render_list

    def drifted(self: FakeKlaviyo, *args: Any, **kw: Any) -> dict[str, Any]:
        shape = copy.deepcopy(render(self, *args, **kw))
        shape["attributes"]["opt_in_process"] = "triple_opt_in"
        return shape

    monkeypatch.setattr(FakeKlaviyo, "render_list", drifted)
    client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "X"}}})
    assert len(klaviyo_fake.violations) == 1
    assert "response to POST /api/lists" in klaviyo_fake.violations[0]
    assert "triple_opt_in" in klaviyo_fake.violations[0]
    klaviyo_fake.violations.clear()
