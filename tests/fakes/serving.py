"""The HTTP side of every fake vendor, written once: a threaded server on a free port of
127.0.0.1 that hands each request to the fake and writes its answer back.

A fake answers with (status, headers, body), or None to drop the connection without a
status line (how a vendor's front end fails mid-request). An exception in the fake is a
bug in the test's vendor: it is recorded as a violation, so the test fails, and answered
500, so the client under test sees what a broken server gives, not a hang.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

Answer = tuple[int, dict[str, str], bytes]


class Vendor(Protocol):
    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Answer | None: ...

    def _violation(self, message: str) -> None: ...


class Served:
    """One fake's server; ``failure`` is its answer when the fake itself fails."""

    def __init__(self, fake: Vendor, failure: Answer) -> None:
        self.fake, self.failure = fake, failure
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"fake": self.fake, "failure": self.failure})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the vendors' front ends do
    disable_nagle_algorithm = True
    timeout = 30
    fake: Vendor
    failure: Answer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer: Answer | None
        try:
            answer = self.fake.handle(self.command, self.path, headers, body)
        except Exception as exc:  # a bug in the fake must fail the test, not be retried away
            self.fake._violation(f"the fake failed on {self.command} {self.path}: {exc!r}")
            answer = self.failure
        if answer is None:  # a dropped connection: no status line at all
            self.close_connection = True
            return
        status, head, data = answer
        self.send_response(status)
        for name, value in head.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
