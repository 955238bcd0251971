"""Every auth kind the seam offers, including the OAuth2 client-credentials refresh paths."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from connectors.http import (
    ApiKeyAuth,
    BearerAuth,
    BudgetRegistry,
    HttpClient,
    HttpSettings,
    OAuth2ClientCredentials,
)
from crmsync.errors import AuthError
from tests.fakes import FakeClock

BASE = "https://api.example.test"
TOKEN_URL = f"{BASE}/oauth/token"


def client_with(auth: httpx.Auth, clock: FakeClock | None = None) -> HttpClient:
    clock = clock or FakeClock()
    return HttpClient(
        HttpSettings(base_url=BASE),
        account="auth-tests",
        auth=auth,
        sleep=clock.sleep,
        budgets=BudgetRegistry(clock=clock, sleep=clock.sleep),
    )


def test_api_key_in_a_header_with_prefix() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/x").respond(200)
        client_with(ApiKeyAuth("k-1", header="Authorization", prefix="Token ")).get("/x")
    assert route.calls.last.request.headers["Authorization"] == "Token k-1"


def test_api_key_in_the_query_string() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/x").respond(200)
        client_with(ApiKeyAuth("k-2", query="api_key")).get("/x", params={"page": 3})
    params = route.calls.last.request.url.params
    assert params["api_key"] == "k-2"
    assert params["page"] == "3"


def test_bearer_token() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/x").respond(200)
        client_with(BearerAuth("tok-3")).get("/x")
    assert route.calls.last.request.headers["Authorization"] == "Bearer tok-3"


def test_basic_auth() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/x").respond(200)
        client_with(httpx.BasicAuth("ck_user", "cs_pass")).get("/x")
    expected = base64.b64encode(b"ck_user:cs_pass").decode()
    assert route.calls.last.request.headers["Authorization"] == f"Basic {expected}"


def _token(value: str, expires_in: int | None = 3600) -> httpx.Response:
    body: dict[str, object] = {"access_token": value, "token_type": "bearer"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return httpx.Response(200, json=body)


def test_oauth2_fetches_one_token_and_reuses_it() -> None:
    auth = OAuth2ClientCredentials(TOKEN_URL, "cid", "csecret", scope="read")
    with respx.mock(base_url=BASE) as mock:
        token = mock.post("/oauth/token").mock(side_effect=[_token("t1")])
        api = mock.get("/x").respond(200)
        client = client_with(auth)
        client.get("/x")
        client.get("/x")
    assert token.call_count == 1
    form = parse_qs(token.calls.last.request.content.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "scope": ["read"],
        "client_id": ["cid"],
        "client_secret": ["csecret"],
    }
    assert [c.request.headers["Authorization"] for c in api.calls] == ["Bearer t1", "Bearer t1"]


def test_oauth2_can_send_client_credentials_as_basic_auth() -> None:
    auth = OAuth2ClientCredentials(TOKEN_URL, "cid", "csecret", credentials_in_body=False)
    with respx.mock(base_url=BASE) as mock:
        token = mock.post("/oauth/token").mock(side_effect=[_token("t1")])
        mock.get("/x").respond(200)
        client_with(auth).get("/x")
    request = token.calls.last.request
    assert request.headers["Authorization"].startswith("Basic ")
    assert "client_secret" not in request.content.decode()


def test_oauth2_refreshes_a_token_about_to_expire() -> None:
    clock = FakeClock()
    auth = OAuth2ClientCredentials(TOKEN_URL, "cid", "csecret", leeway=30, clock=clock)
    with respx.mock(base_url=BASE) as mock:
        token = mock.post("/oauth/token").mock(side_effect=[_token("t1", 600), _token("t2", 600)])
        api = mock.get("/x").respond(200)
        client = client_with(auth, clock)
        client.get("/x")
        clock.advance(500)  # still 100 s left: reused
        client.get("/x")
        clock.advance(80)  # 20 s left, inside the leeway: refreshed
        client.get("/x")
    assert token.call_count == 2
    headers = [c.request.headers["Authorization"] for c in api.calls]
    assert headers == ["Bearer t1", "Bearer t1", "Bearer t2"]


def test_oauth2_refreshes_once_when_the_api_says_401() -> None:
    auth = OAuth2ClientCredentials(TOKEN_URL, "cid", "csecret")
    with respx.mock(base_url=BASE) as mock:
        token = mock.post("/oauth/token").mock(side_effect=[_token("old"), _token("new")])
        api = mock.get("/x").mock(side_effect=[httpx.Response(401), httpx.Response(200)])
        response = client_with(auth).get("/x")
    assert response.status_code == 200
    assert token.call_count == 2
    headers = [c.request.headers["Authorization"] for c in api.calls]
    assert headers == ["Bearer old", "Bearer new"]


def test_oauth2_still_401_after_refresh_is_an_auth_error() -> None:
    auth = OAuth2ClientCredentials(TOKEN_URL, "cid", "csecret")
    with respx.mock(base_url=BASE) as mock:
        mock.post("/oauth/token").mock(side_effect=[_token("a"), _token("b")])
        api = mock.get("/x").respond(401)
        with pytest.raises(AuthError, match="credentials"):
            client_with(auth).get("/x")
    assert api.call_count == 2


def test_oauth2_rejected_client_credentials_is_an_auth_error() -> None:
    auth = OAuth2ClientCredentials(TOKEN_URL, "cid", "wrong")
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.post("/oauth/token").respond(401, json={"error": "invalid_client"})
        api = mock.get("/x").respond(200)
        with pytest.raises(AuthError, match="client_id, client_secret"):
            client_with(auth).get("/x")
    assert not api.called


def test_oauth2_busy_token_endpoint_is_retried() -> None:
    clock = FakeClock()
    auth = OAuth2ClientCredentials(TOKEN_URL, "cid", "csecret")
    with respx.mock(base_url=BASE) as mock:
        token = mock.post("/oauth/token").mock(
            side_effect=[httpx.Response(503, headers={"Retry-After": "3"}), _token("t")]
        )
        mock.get("/x").respond(200)
        assert client_with(auth, clock).get("/x").status_code == 200
    assert token.call_count == 2
    assert clock.sleeps == [3.0]
