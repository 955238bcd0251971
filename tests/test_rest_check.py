"""``check()`` calls each stream once and words every failure for the operator."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import respx

from connectors.rest import RestSource
from crmsync.contract import Check, ConnectorContext

BASE = "https://shop.example.test"
CONTEXT = ConnectorContext("shop", Path("."))
STREAM = {
    "path": "/v1/customers",
    "records_path": "data",
    "page_size_param": "limit",
    "params": {"status": "any"},
    "fields": {"external_id": "id"},
}


def source(transport: httpx.BaseTransport | None = None) -> RestSource:
    config = {
        "kind": "rest",
        "base_url": BASE,
        "auth": {"type": "bearer", "token": "tok_secret_987654"},
        "streams": {"customers": STREAM},
    }
    return RestSource(config, CONTEXT, transport=transport)


def check_with(response: Any) -> Check:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").mock(side_effect=[response])
        [result] = source().check()
    return result


def failing_with(cause: BaseException) -> Check:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise cause
        except type(cause) as exc:
            raise httpx.ConnectError("connection failed", request=request) from exc

    [result] = source(httpx.MockTransport(handler)).check()
    return result


def test_a_healthy_stream_is_checked_with_one_record_per_page() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/v1/customers").respond(200, json={"data": [{"id": 1}]})
        [result] = source().check()
    assert result.ok
    assert "/v1/customers" in result.what
    params = route.calls.last.request.url.params
    assert params["limit"] == "1" and params["status"] == "any" and params["page"] == "1"


def test_dns_failure_says_to_check_the_host() -> None:
    result = failing_with(socket.gaierror(-2, "Name or service not known"))
    assert not result.ok
    assert "check the base_url host" in result.detail


def test_tls_failure_says_to_check_tls_settings() -> None:
    result = failing_with(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    assert not result.ok
    assert "TLS" in result.detail and "verify_tls" in result.detail


def test_timeout_says_the_server_did_not_answer_and_is_not_retried_for_long() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/v1/customers").mock(side_effect=httpx.ReadTimeout("timed out"))
        [result] = source().check()
    assert not result.ok
    assert "timed out" in result.detail and "reachable" in result.detail
    assert route.call_count == 1


def test_401_says_to_check_the_credentials() -> None:
    result = check_with(httpx.Response(401))
    assert not result.ok
    assert "check the API key/credentials" in result.detail


def test_403_says_the_credentials_lack_permission() -> None:
    result = check_with(httpx.Response(403))
    assert not result.ok
    assert "lack permission" in result.detail


def test_404_says_to_check_base_url_and_the_stream_path() -> None:
    result = check_with(httpx.Response(404))
    assert not result.ok
    assert (
        "check base_url" in result.detail and "sources.shop.streams.customers.path" in result.detail
    )


def test_an_unexpected_body_says_which_key_to_fix() -> None:
    result = check_with(httpx.Response(200, json={"items": []}))
    assert not result.ok
    assert "records_path" in result.detail


def test_no_check_message_contains_the_secret() -> None:
    details = [check_with(httpx.Response(status)).detail for status in (401, 403, 404, 500)]
    assert all("tok_secret_987654" not in detail for detail in details)
