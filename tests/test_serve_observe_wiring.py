"""``service.observe``: what ``scheduler.serve`` starts beside the schedules, driven with a
stand-in for the running service: the endpoints on the configured port, alerts configured
from the store's ``[alerts]`` and checked periodically, events without a configuration
completed from the service's, and a taken port that does not stop the service."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crmsync.config import Config
from engine.resolve import load_config
from service.events import NextRun, RunFinished, StoreLoaded
from service.observe import Observe
from state.store import Store
from tests.e2e import make_site
from tests.test_alerts_service import Receiver, receiver
from tests.test_metrics_service import T0, a_report
from tests.test_serve_observe import get

__all__ = ["receiver"]


@dataclass
class Running:
    stores: dict[str, Config] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def configured(tmp_path: Path, port: int, receiver: Receiver) -> Config:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=5)
    with site.config.open("a", encoding="utf-8") as handle:
        handle.write(
            f'\n[observe]\nport = {port}\n\n[alerts]\nwebhook_url = "{receiver.url}"\n'
            "not_succeeded_hours = 0.0002\n"  # 0.72 s
        )
    config = load_config(site.config)
    Store(config.state_url).close()  # the schema, as serve makes it before any run
    return config


def test_started_serves_the_endpoints_and_checks_the_alerts(
    tmp_path: Path, receiver: Receiver
) -> None:
    port = free_port()
    config = configured(tmp_path, port, receiver)
    observe = Observe(check_seconds=0.1)
    service = Running({"": config})
    observe.observers.notify(StoreLoaded("", ("main",)))  # before the service is known
    observe.observers.notify(NextRun("", "main", T0))  # scheduled: expected to succeed
    stopped = observe.started(service)
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/healthz") == (200, "ok\n")
        assert get(f"{base}/readyz") == (200, "ready: 1 store(s) loaded\n")
        deadline = time.monotonic() + 30
        while not receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.seen() == [("not_succeeded", "firing")]  # by the periodic check

        # the scheduler's events lack the configuration: it is taken from the service
        observe.observers.notify(StoreLoaded("", ("main",)))
        observe.observers.notify(RunFinished("", "main", a_report(), 1.0, T0))
        metrics = get(f"{base}/metrics")[1]
        assert 'crmsync_pending_jobs{destination="out",store=""} 0.0' in metrics
        assert 'crmsync_runs_total{outcome="succeeded",pipeline="main",store=""} 1.0' in metrics
        observe.alerts.flush()
        assert receiver.seen()[:2] == [("not_succeeded", "firing"), ("not_succeeded", "resolved")]
    finally:
        stopped()
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 0  # no longer listening


def test_a_taken_port_is_logged_and_the_service_goes_on(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        observe = Observe()
        with caplog.at_level(logging.ERROR, "crmsync.service"):
            stopped = observe.started(Running({"": configured(tmp_path, port, receiver)}))
        stopped()
    assert f"cannot serve /healthz, /readyz and /metrics on 127.0.0.1:{port}" in caplog.text
