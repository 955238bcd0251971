"""Secrets never reach a log line or an error message, whatever path they travel."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from connectors.http import (
    ApiKeyAuth,
    BudgetRegistry,
    HttpClient,
    HttpSettings,
    OAuth2ClientCredentials,
    Redactor,
    RetrySettings,
)
from crmsync.errors import AuthError, TransientError
from tests.fakes import FakeClock

BASE = "https://api.example.test"
SECRET = "sk_live_5f3c9a77d2b14e0c"
TOKEN = "access-token-7d1e0f9b2c"


def test_redactor_masks_known_secrets_and_secret_named_values() -> None:
    redactor = Redactor([SECRET])
    url = f"https://h.test/p?api_key=abc123&page=2&consumer_secret=zzz&q={SECRET}"
    assert redactor.url(url) == "https://h.test/p?api_key=***&page=2&consumer_secret=***&q=***"
    assert redactor.headers({"Authorization": "Basic Zm9v", "Accept": "x"}) == {
        "Authorization": "***",
        "Accept": "x",
    }
    body = redactor.body('{"access_token": "abc", "name": "Ada", "note": "' + SECRET + '"}')
    assert body == '{"access_token": "***", "name": "Ada", "note": "***"}'


def test_redactor_truncates_long_bodies() -> None:
    text = Redactor().body("x" * 2000, limit=500)
    assert text.startswith("x" * 500)
    assert "2000 characters" in text
    assert len(text) < 600


def test_no_secret_appears_in_debug_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    client = HttpClient(
        HttpSettings(base_url=BASE, retry=RetrySettings(attempts=2)),
        account="redact",
        auth=ApiKeyAuth(SECRET, header="X-Api-Key"),
        headers={"X-Shop-Token": "header-secret-value"},
        secrets=["extra-secret-1234"],
        sleep=clock.sleep,
        budgets=BudgetRegistry(clock=clock, sleep=clock.sleep),
    )
    caplog.set_level(logging.DEBUG)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/echo").respond(200, text=f"you sent {SECRET} and extra-secret-1234")
        mock.get("/down").respond(503, text=f"upstream rejected {SECRET}")
        mock.get("/denied").respond(401, text=f"bad key {SECRET}")
        client.get("/echo", params={"signature": "sig-secret-999", "page": "1"})
        with pytest.raises(TransientError) as transient:
            client.get(f"/down?token={SECRET}")
        with pytest.raises(AuthError) as auth:
            client.get("/denied")
    logged = caplog.text
    assert "/echo" in logged and "***" in logged  # the exchange was logged, masked
    for secret in (SECRET, "extra-secret-1234", "header-secret-value", "sig-secret-999"):
        assert secret not in logged
        assert secret not in str(transient.value)
        assert secret not in str(auth.value)


def test_oauth2_tokens_and_client_secret_stay_out_of_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = OAuth2ClientCredentials(f"{BASE}/oauth/token", "client-1", "client-secret-xyz")
    client = HttpClient(HttpSettings(base_url=BASE), account="redact-oauth", auth=auth)
    caplog.set_level(logging.DEBUG)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/oauth/token").respond(
            200, json={"access_token": TOKEN, "expires_in": 3600, "token_type": "bearer"}
        )
        mock.get("/me").respond(200, json={"echo": f"Bearer {TOKEN}"})
        client.get("/me")
    assert "/me" in caplog.text
    assert TOKEN not in caplog.text
    assert "client-secret-xyz" not in caplog.text


def test_httpx_own_request_log_line_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    client = HttpClient(
        HttpSettings(base_url=BASE),
        account="redact-query",
        auth=ApiKeyAuth("query-key-314159", query="apikey"),
    )
    caplog.set_level(logging.INFO, logger="httpx")
    with respx.mock(base_url=BASE, using="httpx") as mock:
        route = mock.get("/q").respond(200)
        client.get("/q")
    assert route.calls.last.request.url.params["apikey"] == "query-key-314159"
    assert "query-key-314159" not in caplog.text


def test_redacted_transport_error_message(caplog: pytest.LogCaptureFixture) -> None:
    def failing(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused while sending {SECRET}", request=request)

    clock = FakeClock()
    client = HttpClient(
        HttpSettings(base_url=BASE, retry=RetrySettings(attempts=2)),
        account="redact-transport",
        secrets=[SECRET],
        transport=httpx.MockTransport(failing),
        sleep=clock.sleep,
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransientError) as raised:
        client.get("/x")
    assert SECRET not in str(raised.value)
    assert SECRET not in caplog.text
