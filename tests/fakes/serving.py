"""The HTTP side of every fake vendor, written once: a threaded server on a free port of
127.0.0.1 that hands each request to the fake and writes its answer back.

A fake answers with (status, headers, body), or None to drop the connection without a
status line (how a vendor's front end fails mid-request). An exception in the fake is a
bug in the test's vendor: it is recorded as a violation, so the test fails, and answered
500, so the client under test sees what a broken server gives, not a hang.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol

Answer = tuple[int, dict[str, str], bytes]
DROP: Literal["drop"] = "drop"  # a fault that closes the connection without an answer


@dataclass
class Fault:
    status: int | Literal["drop"]
    times: int = 1
    method: str | None = None
    path: str | None = None  # an fnmatch pattern over the path (or its route template)
    after: bool = False  # apply the request, then fail (the answer is "lost")
    retry_after: str | None = "0"

    def wants(self, method: str, *paths: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or any(fnmatch.fnmatchcase(p, self.path) for p in paths)


class Faults:
    """The faults a test injected, each answering its next ``times`` matching requests;
    the fake turns one into its vendor's own error answer."""

    def __init__(self) -> None:
        self.pending: list[Fault] = []
        self._lock = threading.Lock()

    def inject(
        self,
        status: int | Literal["drop"],
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        after: bool = False,
        retry_after: str | None = "0",
    ) -> None:
        """The next ``times`` requests matching ``method`` and ``path`` (an fnmatch pattern
        over the path or its template) get ``status``, or "drop": the socket is closed
        without an answer. ``after``: the request is applied first, and the answer lost."""
        with self._lock:
            self.pending.append(Fault(status, times, method, path, after, retry_after))

    def take(self, method: str, *paths: str) -> Fault | None:
        """The first fault that wants this request, counted down."""
        with self._lock:
            for position, fault in enumerate(self.pending):
                if fault.wants(method, *paths):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.pending.pop(position)
                    return fault
            return None


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
        if len(body) < length:  # the client went away mid-body (killed): nothing to answer
            self.close_connection = True
            return
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
