"""``crmsync serve``: every pipeline on its schedule, as a service, until stopped.

The machinery lives in ``service`` (a layer above the core, the connectors and the state
store): ``service.daemon`` (stores, jobs, reload, stop), ``service.runner`` (one run under
the pipeline's lease), ``service.signals`` (SIGTERM, SIGINT, SIGHUP). This module puts
them together with the observers (metrics, alerts) and the health endpoints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from service.daemon import Service
from service.events import Observers
from service.runner import RunFn
from service.signals import _flush, serve_until_stopped, signals_queued

log = logging.getLogger("crmsync.scheduler")

Started = Callable[[Service], Callable[[], None]]


def serve(
    path: str | Path,
    observers: Observers | None = None,
    started: Started | None = None,
    *,
    run: RunFn | None = None,
) -> int:
    """Serves the stores of ``path`` until SIGTERM or SIGINT; returns the exit code.

    ``started`` is called once the schedules run (to start what watches the service,
    e.g. the health endpoints); what it returns is called when the service has stopped.
    ``run`` runs one pipeline (default: in this process; ``run_on_workers``: its work
    goes to Celery workers while this process coordinates it). Raises ConfigError when
    no store loads."""
    if observers is None and started is None:  # metrics, alerts, health: service.observe
        from service.observe import Observe

        observe = Observe()
        observers, started = observe.observers, observe.started
    observers = observers if observers is not None else Observers()
    with signals_queued() as inbox:  # from the start: a SIGHUP while loading is not lost
        service = Service(path, observers, run=run)
        service.start()
        try:
            stopped = started(service) if started is not None else None
        except BaseException:  # e.g. the health port is taken: no run may go on alone
            service.stop("the service could not start", 1)
            service.wait(_grace(service))
            raise
        code = 1
        try:
            code = serve_until_stopped(service, inbox, lambda: _grace(service))
        finally:
            if stopped is not None:
                stopped()
            if code == 0:  # every run has ended: no connection is held any more
                service.close()
    if code != 0:  # a run did not end in time: its thread would hold the process
        _flush()
        os._exit(code)
    return code


def _grace(service: Service) -> float:
    configs = list(service.stores.values())
    return configs[0].settings.serve.stop_grace_seconds if configs else 60.0
