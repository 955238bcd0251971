"""The Celery application, configured from the ``[celery]`` table, and the worker.

Every task is acknowledged late (``acks_late``: only once it ended, so a worker killed
mid-task leaves its message to be delivered again), is given back when its worker
process dies (``task_reject_on_worker_lost``), and a worker reserves one message at a
time (prefetch 1: a long task does not hold others back on its worker). On Redis, a
message taken and not acknowledged within ``visibility_timeout_seconds`` is delivered
again: that covers a worker that vanished with it. Messages are JSON and carry no
secret (``distributed.work``); results meet in the state database, so no result backend
is needed.

``crmsync worker --config FILE`` starts a worker; ``celery -A distributed.app worker``
does too, reading the file that ``CRMSYNC_CONFIG`` names (and ``CRMSYNC_STORE``, a store
of a directory).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from celery import Celery, signals
from kombu.utils.url import maybe_sanitize_url

from connectors.http import BUDGETS
from crmsync.config import CelerySettings, Config
from crmsync.errors import ConfigError
from crmsync.log_setup import PersonalData

CONFIG_VARIABLE, STORE_VARIABLE = "CRMSYNC_CONFIG", "CRMSYNC_STORE"


def broker_url(settings: CelerySettings) -> str:
    if settings.broker_url is None:
        raise ConfigError(
            "runs on Celery workers need a message broker",
            key="celery.broker_url",
            hint='set [celery] broker_url = "amqp://user:${RABBITMQ_PASSWORD}@host:5672//" '
            'or "redis://host:6379/0"',
        )
    return settings.broker_url.get_secret_value()


def shown(url: str) -> str:
    """A broker URL fit for a log line (its password masked)."""
    return str(maybe_sanitize_url(url))


def require_workers(config: Config) -> CelerySettings:
    """The ``[celery]`` settings, when this configuration can run on workers: a broker,
    and a state database that every worker reaches (PostgreSQL)."""
    settings = config.settings.celery
    broker_url(settings)
    if not config.state_url.startswith("postgresql"):
        raise ConfigError(
            "runs on Celery workers keep their state in PostgreSQL, where every worker meets",
            key="state.url",
            hint="set [state] url = postgresql://user@host:5432/db (crmsync migrate creates "
            "the tables), or run without --workers celery",
        )
    return settings


def make_app(settings: CelerySettings) -> Celery:
    from distributed.tasks import TASKS

    app = Celery("crmsync", set_as_current=False)
    backend = settings.result_backend
    app.conf.update(
        broker_url=broker_url(settings),
        result_backend=backend.get_secret_value() if backend is not None else None,
        task_ignore_result=backend is None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        # the broker lost: its messages go to other workers, so this one stops their tasks
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    for name, function in TASKS.items():
        app.task(name=name, acks_late=True, reject_on_worker_lost=True)(function)
    return app


def share_budgets(settings: CelerySettings) -> None:
    """Every vendor account this process talks to draws on the budget in ``[celery]
    shared_budget`` (Redis), with every worker's and the coordinator's: a vendor limits
    the account, not a process. Budgets already handed out keep their place; a
    destination's own ``http.rate.shared`` wins."""
    url = settings.shared_budget
    if url is not None:
        BUDGETS.share(url.get_secret_value(), key="celery.shared_budget")


def app_from_environment() -> Celery:
    """The app of the configuration ``CRMSYNC_CONFIG`` names (``celery -A``)."""
    from engine.resolve import load_config

    path = os.environ.get(CONFIG_VARIABLE)
    if not path:
        raise ConfigError(
            f"{CONFIG_VARIABLE} is not set",
            key=CONFIG_VARIABLE,
            hint=f"export {CONFIG_VARIABLE}=/path/to/crmsync.toml, or run `crmsync worker`",
        )
    config = load_config(path, os.environ.get(STORE_VARIABLE) or None)
    share_budgets(config.settings.celery)
    return make_app(config.settings.celery)


def start_worker(
    settings: CelerySettings, *, concurrency: int | None, pool: str, loglevel: str
) -> None:
    """Runs a worker in this process until it is stopped (SIGTERM: a warm shutdown,
    finishing the tasks under way)."""
    share_budgets(settings)  # before the pool's processes fork: theirs too
    app = make_app(settings)
    argv: list[str] = ["worker", "--queues", settings.queue, "--pool", pool]
    # a name of its own on every machine: workers on one host must not share one
    argv += ["--hostname", f"crmsync-{os.getpid()}@%h"]
    argv += ["--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    logging.getLogger("crmsync.distributed").info(
        "worker on %s, queue %s", shown(broker_url(settings)), settings.queue
    )
    app.worker_main(argv)


def __getattr__(name: str) -> Any:
    if name == "app":  # ``celery -A distributed.app``: built when Celery asks for it
        return app_from_environment()
    raise AttributeError(name)


def _mask_handlers(handlers: Sequence[logging.Handler]) -> None:
    for handler in handlers:
        if not any(isinstance(f, PersonalData) for f in handler.filters):
            handler.addFilter(PersonalData())


def _masked(logger: logging.Logger, **_: Any) -> None:
    """E-mail addresses and phone numbers are masked in a worker's log lines too."""
    _mask_handlers(logger.handlers)
    _mask_handlers(logging.getLogger().handlers)


def _closing(**_: Any) -> None:
    from distributed.loaded import close_all

    close_all()


signals.after_setup_logger.connect(_masked, weak=False)
signals.after_setup_task_logger.connect(_masked, weak=False)
signals.worker_process_shutdown.connect(_closing, weak=False)
signals.worker_shutdown.connect(_closing, weak=False)
