"""The service's HTTP endpoints: ``/healthz``, ``/readyz`` and ``/metrics``.

A standard-library threaded server (a scrape or a probe never waits for another), bound
to the configured host and port (``[observe]``): ``/healthz`` answers 200 while the
process serves at all; ``/readyz`` 200 when the configuration is loaded and every loaded
store's state database answers, 503 with the reason otherwise; ``/metrics`` the
Prometheus text (or OpenMetrics, when the scraper asks for it) of a registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from service.events import Event, StoreBroken, StoreLoaded
from service.state_reads import StateReads

__all__ = ["HealthServer", "Readiness", "start_http"]

log = logging.getLogger("crmsync.service.http")

Ready = Callable[[], tuple[bool, str]]


class HealthServer:
    """The running server; ``close`` stops it and frees the port."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def start_http(host: str, port: int, ready: Ready, registry: CollectorRegistry) -> HealthServer:
    """Serves the three endpoints in a background thread; ``port`` 0 takes a free one."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "crmsync"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._answer(200, b"ok\n")
            elif path == "/readyz":
                try:
                    ok, why = ready()
                except Exception as exc:  # a readiness check that breaks is "not ready"
                    ok, why = False, f"readiness check failed: {type(exc).__name__}"
                self._answer(200 if ok else 503, f"{why}\n".encode())
            elif path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._answer(200, encoder(registry), content_type)
            else:
                self._answer(404, b"not found: /healthz, /readyz, /metrics\n")

        def _answer(
            self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="crmsync-http", daemon=True)
    thread.start()
    found = HealthServer(server, thread)
    log.info("health and metrics on %s (/healthz, /readyz, /metrics)", found.url)
    return found


class Readiness:
    """An ``Observer`` that knows which stores are loaded, and a ``ready`` callable for
    ``start_http``: ready when at least one store's configuration is loaded and the state
    database of each loaded store answers. A broken store does not make the service
    unready (the others keep syncing); it is named in the answer."""

    def __init__(self, reads: StateReads | None = None) -> None:
        self._reads = reads if reads is not None else StateReads()
        self._lock = threading.Lock()
        self._urls: dict[str, str | None] = {}
        self._broken: set[str] = set()

    def notify(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, StoreLoaded):
                self._urls[event.store] = event.config.state_url if event.config else None
                self._broken.discard(event.store)
            elif isinstance(event, StoreBroken):
                self._broken.add(event.store)

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            urls, broken = dict(self._urls), sorted(self._broken)
        if not urls:
            return False, "no configuration loaded yet"
        for url in sorted({u for u in urls.values() if u is not None}):
            ok, why = self._reads.reachable(url)
            if not ok:
                return False, f"state database unreachable: {why}"
        text = f"ready: {len(urls)} store(s) loaded"
        if broken:
            text += f"; broken: {', '.join(repr(b) for b in broken)}"
        return True, text

    def close(self) -> None:
        self._reads.close()
