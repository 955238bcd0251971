"""HttpClient acts on each classification: returns, retries under the policy, or raises."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from connectors.http import (
    BudgetRegistry,
    Classification,
    Decision,
    HttpClient,
    HttpSettings,
    RetrySettings,
    classify_with,
)
from crmsync.errors import AuthError, ConfigError, TransientError
from tests.fakes import FakeClock

BASE = "https://api.example.test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE) as router:
        yield router


def make_client(clock: FakeClock, **retry: Any) -> HttpClient:
    settings = HttpSettings(base_url=BASE, retry=RetrySettings(**retry))
    return HttpClient(
        settings,
        account="test-account",
        sleep=clock.sleep,
        budgets=BudgetRegistry(clock=clock, sleep=clock.sleep),
        rng=random.Random(7),
    )


def test_success_is_returned_without_retry(clock: FakeClock, mock: respx.MockRouter) -> None:
    route = mock.get("/ping").respond(200, json={"ok": True})
    response = make_client(clock).get("/ping")
    assert response.json() == {"ok": True}
    assert route.call_count == 1
    assert clock.sleeps == []


def test_server_errors_are_retried_with_jittered_exponential_backoff(
    clock: FakeClock, mock: respx.MockRouter
) -> None:
    route = mock.get("/ping").mock(
        side_effect=[
            httpx.Response(500),
            httpx.Response(502),
            httpx.Response(503),
            httpx.Response(200),
        ]
    )
    response = make_client(clock, backoff_initial=1.0, backoff_max=3.0).get("/ping")
    assert response.status_code == 200
    assert route.call_count == 4
    assert len(clock.sleeps) == 3
    for attempt, slept in enumerate(clock.sleeps, start=1):
        assert 0.0 <= slept <= min(3.0, 1.0 * 2 ** (attempt - 1))


def test_retry_after_seconds_is_honoured(clock: FakeClock, mock: respx.MockRouter) -> None:
    mock.get("/ping").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200)]
    )
    assert make_client(clock).get("/ping").status_code == 200
    assert clock.sleeps == [7.0]


def test_retry_after_http_date_is_honoured(clock: FakeClock, mock: respx.MockRouter) -> None:
    limited = httpx.Response(
        503,
        headers={
            "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
            "Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT",
        },
    )
    mock.get("/ping").mock(side_effect=[limited, httpx.Response(200)])
    assert make_client(clock).get("/ping").status_code == 200
    assert clock.sleeps == [30.0]


def test_timeouts_and_resets_are_retried(clock: FakeClock, mock: respx.MockRouter) -> None:
    route = mock.get("/ping").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.ReadError("reset"), httpx.Response(200)]
    )
    assert make_client(clock).get("/ping").status_code == 200
    assert route.call_count == 3


def test_giving_up_raises_transient_error_with_the_last_retry_after(
    clock: FakeClock, mock: respx.MockRouter
) -> None:
    route = mock.get("/ping").respond(429, headers={"Retry-After": "2"})
    with pytest.raises(TransientError) as raised:
        make_client(clock, attempts=3).get("/ping")
    assert route.call_count == 3
    assert raised.value.retry_after == 2.0
    assert "429" in str(raised.value)


def test_a_retry_after_beyond_the_cap_fails_at_once(
    clock: FakeClock, mock: respx.MockRouter
) -> None:
    route = mock.get("/ping").respond(429, headers={"Retry-After": "3600"})
    with pytest.raises(TransientError) as raised:
        make_client(clock, max_retry_after=60).get("/ping")
    assert route.call_count == 1
    assert raised.value.retry_after == 3600.0
    assert clock.sleeps == []


def test_the_elapsed_time_cap_stops_retrying(clock: FakeClock, mock: respx.MockRouter) -> None:
    route = mock.get("/ping").respond(503, headers={"Retry-After": "40"})
    with pytest.raises(TransientError):
        make_client(clock, attempts=10, max_elapsed=100).get("/ping")
    assert route.call_count == 3  # slept 40 + 40; a third wait would pass 100 s
    assert clock.sleeps == [40.0, 40.0]


def test_401_raises_auth_error_without_retrying(clock: FakeClock, mock: respx.MockRouter) -> None:
    route = mock.get("/ping").respond(401)
    with pytest.raises(AuthError, match="check the API key/credentials"):
        make_client(clock).get("/ping")
    assert route.call_count == 1


def test_403_raises_auth_error_saying_permission_is_missing(
    clock: FakeClock, mock: respx.MockRouter
) -> None:
    mock.get("/ping").respond(403)
    with pytest.raises(AuthError, match="lack permission"):
        make_client(clock).get("/ping")


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_record_failures_are_returned_for_the_caller_to_read(
    clock: FakeClock, mock: respx.MockRouter, status: int
) -> None:
    route = mock.post("/members").respond(status, json={"detail": "bad email"})
    response = make_client(clock).request("POST", "/members", json={"email": "x"})
    assert response.status_code == status
    assert route.call_count == 1


def test_a_classifier_override_makes_404_a_config_error(
    clock: FakeClock, mock: respx.MockRouter
) -> None:
    mock.get("/").respond(404)
    override = classify_with(
        {404: Classification(Decision.CONFIG_FAILURE, "nothing at the base URL; check base_url")}
    )
    with pytest.raises(ConfigError, match="check base_url") as raised:
        make_client(clock).get("/", classifier=override)
    assert raised.value.issues[0].key == "base_url"


def test_dns_failure_raises_config_error_without_retrying(clock: FakeClock) -> None:
    calls: list[httpx.Request] = []

    def unresolvable(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError("connection failed", request=request) from exc

    client = HttpClient(
        HttpSettings(base_url=BASE),
        account="dns-test",
        transport=httpx.MockTransport(unresolvable),
        sleep=clock.sleep,
    )
    with pytest.raises(ConfigError, match="check the base_url host"):
        client.get("/ping")
    assert len(calls) == 1
    assert clock.sleeps == []


def test_params_and_base_url_make_the_request_url(clock: FakeClock, mock: respx.MockRouter) -> None:
    route = mock.get("/v1/items", params={"page": "2"}).respond(200, json=[])
    make_client(clock).get("/v1/items", params={"page": 2})
    assert route.called
    assert str(route.calls.last.request.url) == f"{BASE}/v1/items?page=2"
