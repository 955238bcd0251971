"""Every HttpClient of a process connects with one shared TLS context per ``verify_tls``,
and that context still verifies (or, turned off, does not) against a real HTTPS server.

The server's certificate in tests/data/tls is self-signed for localhost and 127.0.0.1,
made for these tests only (its key protects nothing).
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.http import BudgetRegistry, HttpClient, HttpSettings, RetrySettings
from connectors.http.tls import tls_context
from crmsync.errors import ConfigError
from tests.fakes import FakeClock

CERTS = Path(__file__).parent / "data" / "tls"


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def https_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERTS / "localhost.crt", CERTS / "localhost.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _client(url: str, *, verify: bool) -> HttpClient:
    clock = FakeClock()
    settings = HttpSettings(base_url=url, verify_tls=verify, retry=RetrySettings(attempts=1))
    return HttpClient(
        settings,
        account=f"tls-{verify}",
        sleep=clock.sleep,
        budgets=BudgetRegistry(clock=clock, sleep=clock.sleep),
    )


def test_one_context_per_setting_is_built_and_shared() -> None:
    verifying, lenient = tls_context(True), tls_context(False)
    assert tls_context(True) is verifying and tls_context(False) is lenient
    assert verifying.verify_mode is ssl.CERT_REQUIRED and verifying.check_hostname
    assert verifying.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded
    assert lenient.verify_mode is ssl.CERT_NONE and not lenient.check_hostname


def test_a_verifying_client_refuses_a_certificate_no_authority_signed(https_url: str) -> None:
    with pytest.raises(ConfigError) as caught:  # a setting to fix, not tried again
        _client(https_url, verify=True).get("/ping")
    assert "certificate verification failed" in str(caught.value)
    assert "verify_tls" in str(caught.value)


def test_a_client_with_verification_off_talks_to_the_same_server(https_url: str) -> None:
    first, second = _client(https_url, verify=False), _client(https_url, verify=False)
    assert first.get("/ping").json() == {"ok": True}
    assert second.get("/ping").json() == {"ok": True}
