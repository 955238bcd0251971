"""Every row of the classification table in docs/http.md, on bare responses and exceptions."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from connectors.http import Classification, Decision, classify, classify_with, retry_after

REQUEST = httpx.Request("GET", "https://api.example.test/v1/customers")


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=REQUEST)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status: int) -> None:
    assert classify(response(status), None).decision == Decision.SUCCESS


@pytest.mark.parametrize(
    ("status", "decision"),
    [(408, Decision.RETRY), (425, Decision.RETRY), (429, Decision.RATE_LIMITED)],
)
def test_slow_down_statuses_carry_retry_after(status: int, decision: Decision) -> None:
    verdict = classify(response(status, {"Retry-After": "12"}), None)
    assert verdict.decision == decision
    assert verdict.retry_after == 12.0


def test_429_without_any_hint_has_no_retry_after() -> None:
    verdict = classify(response(429), None)
    assert verdict == Classification(Decision.RATE_LIMITED, verdict.reason, None)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 507, 520, 599])
def test_5xx_is_retry(status: int) -> None:
    assert classify(response(status), None).decision == Decision.RETRY


def test_401_is_config_failure_saying_to_check_credentials() -> None:
    verdict = classify(response(401), None)
    assert verdict.decision == Decision.CONFIG_FAILURE
    assert "check the API key/credentials" in verdict.reason


def test_403_is_config_failure_saying_credentials_lack_permission() -> None:
    verdict = classify(response(403), None)
    assert verdict.decision == Decision.CONFIG_FAILURE
    assert "the credentials lack permission" in verdict.reason


def test_404_is_a_record_failure_by_default() -> None:
    assert classify(response(404), None).decision == Decision.RECORD_FAILURE


def test_404_override_turns_it_into_config_failure_and_leaves_the_rest_alone() -> None:
    override = Classification(Decision.CONFIG_FAILURE, "not found; check base_url")
    classifier = classify_with({404: override})
    assert classifier(response(404), None) == override
    assert classifier(response(503), None).decision == Decision.RETRY
    assert classifier(None, httpx.ReadTimeout("slow")).decision == Decision.RETRY


@pytest.mark.parametrize("status", [400, 405, 409, 410, 418, 422, 451])
def test_other_4xx_are_record_failures(status: int) -> None:
    assert classify(response(status), None).decision == Decision.RECORD_FAILURE


def test_unexpected_redirect_is_config_failure_naming_base_url() -> None:
    verdict = classify(response(301, {"Location": "https://elsewhere.test/"}), None)
    assert verdict.decision == Decision.CONFIG_FAILURE
    assert "base_url" in verdict.reason


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.PoolTimeout("pool timed out"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_failures_are_retried(error: Exception) -> None:
    assert classify(None, error).decision == Decision.RETRY


def _wrapped(cause: BaseException, message: str) -> httpx.ConnectError:
    error = httpx.ConnectError(message)
    error.__cause__ = cause
    return error


def test_dns_failure_is_config_failure_pointing_at_the_host() -> None:
    error = _wrapped(socket.gaierror(-2, "Name or service not known"), "resolution failed")
    verdict = classify(None, error)
    assert verdict.decision == Decision.CONFIG_FAILURE
    assert "check the base_url host" in verdict.reason


def test_dns_failure_is_recognised_from_the_message_alone() -> None:
    verdict = classify(None, httpx.ConnectError("[Errno -2] Name or service not known"))
    assert verdict.decision == Decision.CONFIG_FAILURE


def test_tls_certificate_failure_is_config_failure_pointing_at_tls_settings() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    verdict = classify(None, _wrapped(cause, "tls failed"))
    assert verdict.decision == Decision.CONFIG_FAILURE
    assert "TLS" in verdict.reason and "verify_tls" in verdict.reason


def test_unsupported_scheme_is_config_failure() -> None:
    verdict = classify(None, httpx.UnsupportedProtocol("Request URL has an unsupported protocol"))
    assert verdict.decision == Decision.CONFIG_FAILURE


def test_retry_after_in_seconds() -> None:
    assert retry_after(response(429, {"Retry-After": "3"})) == 3.0


def test_retry_after_as_http_date_is_measured_against_the_server_date() -> None:
    headers = {
        "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
        "Retry-After": "Wed, 21 Oct 2015 07:28:45 GMT",
    }
    assert retry_after(response(503, headers)) == 45.0


def test_retry_after_in_the_past_means_no_wait() -> None:
    headers = {
        "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
        "Retry-After": "Wed, 21 Oct 2015 07:00:00 GMT",
    }
    assert retry_after(response(503, headers)) == 0.0


def test_rate_limit_reset_as_delay_seconds() -> None:
    assert retry_after(response(429, {"RateLimit-Reset": "17"})) == 17.0


def test_rate_limit_reset_as_unix_time() -> None:
    headers = {"Date": "Wed, 21 Oct 2015 07:28:00 GMT", "X-RateLimit-Reset": "1445412500"}
    # 2015-10-21T07:28:00Z is 1445412480.
    assert retry_after(response(429, headers)) == 20.0


def test_retry_after_wins_over_rate_limit_reset() -> None:
    headers = {"Retry-After": "2", "X-RateLimit-Reset": "60"}
    assert retry_after(response(429, headers)) == 2.0
