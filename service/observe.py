"""Everything that watches ``crmsync serve``, put together for ``scheduler.serve``:

    observe = Observe()
    scheduler.serve(path, observe.observers, observe.started)

``observe.observers`` hands the scheduler's events to the metrics, the alerts and the
readiness check; ``observe.started(service)``, called once the schedules run, starts the
health and metrics endpoints (``[observe]``), the minute-by-minute check of the alerts
(``[alerts]``) and returns what stops them. Settings come from the configuration of the
first store by name (in a directory of stores, from the base file: only it may set
``[observe]`` and ``[alerts]``), read again at each reload, except the endpoints' host and
port and the log format, which keep the values they started with. A port already taken is
logged as an error and the schedules run on without the endpoints.

Each store's secrets are registered with the log filter as the store loads
(``service.logs.secrets_of``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol

from crmsync.config import Config
from service import logs
from service.alerts import Alerts
from service.events import Event, Observers, StoreLoaded
from service.health import HealthServer, Readiness, start_http
from service.metrics import Metrics

__all__ = ["CHECK_SECONDS", "Observe"]

log = logging.getLogger("crmsync.service")

CHECK_SECONDS = 60.0  # how often a pipeline's time since its last success is checked


class Serving(Protocol):
    """What ``started`` needs of the running service: each store's configuration."""

    @property
    def stores(self) -> Mapping[str, Config]: ...


class Observe:
    def __init__(self, check_seconds: float = CHECK_SECONDS) -> None:
        self.metrics = Metrics()
        self.alerts = Alerts(None)  # configured from the first store that loads
        self.readiness = Readiness()
        self.observers = Observers([self])
        self._parts = (self.metrics, self.alerts, self.readiness)
        self._service: Serving | None = None
        self._check_seconds = check_seconds
        self._stop = threading.Event()

    def notify(self, event: Event) -> None:
        if isinstance(event, StoreLoaded):
            event = self._with_config(event)
            if event.config is not None:
                logs.register_secrets(logs.secrets_of(event.config))
                first = self._first()
                self.alerts.configure((first or event.config).settings.alerts)
        for part in self._parts:
            try:
                part.notify(event)
            except Exception:
                log.exception("%s failed on %s", type(part).__name__, type(event).__name__)

    def _first(self) -> Config | None:
        """The configuration the service-wide settings are read from: the first store's
        by name (in a directory of stores, they come from its base file)."""
        if self._service is None:
            return None
        stores = dict(self._service.stores)
        return stores[min(stores)] if stores else None

    def _with_config(self, event: StoreLoaded) -> StoreLoaded:
        """The event with its store's configuration, looked up in the service when the
        scheduler did not give it."""
        if event.config is not None or self._service is None:
            return event
        config = self._service.stores.get(event.store)
        return replace(event, config=config) if config is not None else event

    def started(self, service: Serving) -> Callable[[], None]:
        """Starts the endpoints and the alert checks; returns what stops them."""
        self._service = service
        for name, config in dict(service.stores).items():  # again, with each configuration
            self.notify(StoreLoaded(name, tuple(config.pipelines), config))
        server: HealthServer | None = None
        first = self._first()
        if first is not None:
            logs.prefer(first.settings.observe.log_format)
        if first is not None and first.settings.observe.port:
            observe = first.settings.observe
            try:
                server = start_http(
                    observe.host, observe.port, self.readiness, self.metrics.registry
                )
            except OSError as exc:  # the port is taken: the schedules still run
                log.error(
                    "cannot serve /healthz, /readyz and /metrics on %s:%d (observe.host, "
                    "observe.port): %s",
                    observe.host,
                    observe.port,
                    exc.strerror or exc,
                )
        checker = threading.Thread(target=self._check, name="crmsync-alert-checks", daemon=True)
        checker.start()

        def stopped() -> None:
            self._stop.set()
            checker.join(10)
            if server is not None:
                server.close()
            self.close()

        return stopped

    def _check(self) -> None:
        while not self._stop.wait(self._check_seconds):
            try:
                self.alerts.check()
            except Exception:
                log.exception("checking the alerts failed")

    def close(self) -> None:
        self.alerts.close()
        self.metrics.close()
        self.readiness.close()
