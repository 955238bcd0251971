"""Alerts: a message when something needs an operator, and one when it no longer does.

Conditions, each per store and pipeline (and destination, for the share):

- ``run_failed``: a run ended ``failed``; clears when a run goes through (``succeeded`` or
  ``partial``). An interrupted run (SIGTERM) changes nothing.
- ``failed_share``: more than ``failed_share`` of the changes a run sent to a destination
  failed or were rejected (once it sent at least ``failed_min_people``); clears when a
  run's share is back under it (a run that sends nothing has a share of 0).
- ``not_succeeded``: a scheduled pipeline (``NextRun`` with a time) had no run go
  through for ``not_succeeded_hours``, checked by ``check(now)`` (``service.observe``
  calls it every minute); counted from the last success in the state database, or from
  when the store was loaded if there was none; clears on the next success, or when the
  pipeline is no longer scheduled.
- ``store_broken``: a store's configuration cannot be loaded; clears when it loads.

One alert per condition until it clears, then one "resolved". Which conditions are active
is kept in memory: after a restart, a condition still true alerts once more (a failed run,
a stale pipeline: at the next run or check), and one that cleared while the service was
down sends no "resolved". That keeps alerting free of a schema change and of writes
from every ``serve`` process; the price is at most one repeated alert per restart.

Delivery (a JSON POST to a webhook, an e-mail through SMTP) happens on one background
thread, so a slow receiver never holds a run; a delivery that fails is logged (without
the webhook's URL, itself a secret) and not retried.
"""

from __future__ import annotations

import logging
import queue
import smtplib
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from crmsync.config import AlertSettings, SmtpSettings
from crmsync.personal import mask_text
from service.events import Event, NextRun, RunFinished, StoreBroken, StoreLoaded
from service.logs import mask_secrets, register_secrets
from service.state_reads import SUCCESS, StateReads

__all__ = ["FIRING", "RESOLVED", "Alert", "Alerts", "Email", "Webhook", "notifiers_from"]

log = logging.getLogger("crmsync.service.alerts")

FIRING, RESOLVED = "firing", "resolved"


@dataclass(frozen=True)
class Alert:
    condition: str  # run_failed | failed_share | not_succeeded | store_broken
    status: str  # firing | resolved
    store: str
    pipeline: str | None
    destination: str | None
    summary: str
    details: str
    at: datetime

    @property
    def key(self) -> str:
        return ":".join([self.condition, self.store, self.pipeline or "", self.destination or ""])

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["at"] = self.at.isoformat()
        body["key"] = self.key
        word = "FIRING" if self.status == FIRING else "RESOLVED"
        body["text"] = f"[crmsync {word}] {self.summary}"  # what Slack and most tools show
        return body


class Notifier(Protocol):
    def send(self, alert: Alert) -> None:
        """Delivers one alert; raises when it could not."""


class Webhook:
    """POSTs each alert as JSON (``Alert.as_json``) to a URL; any 2xx is delivered."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url, self._timeout = url, timeout
        register_secrets([url])  # never in a log line, an error or another alert

    def send(self, alert: Alert) -> None:
        response = httpx.post(self._url, json=alert.as_json(), timeout=self._timeout)
        if not response.is_success:
            raise RuntimeError(f"the webhook answered {response.status_code}")

    def __repr__(self) -> str:
        return "Webhook(***)"  # the URL of an incoming webhook is its credential


class Email:
    """Sends each alert as a plain-text e-mail through SMTP."""

    def __init__(self, settings: SmtpSettings, timeout: float = 10.0) -> None:
        self._settings, self._timeout = settings, timeout

    def __repr__(self) -> str:
        return f"Email({self._settings.host}:{self._settings.port})"

    def send(self, alert: Alert) -> None:
        s = self._settings
        message = EmailMessage()
        word = "FIRING" if alert.status == FIRING else "RESOLVED"
        message["Subject"] = f"[crmsync {word}] {alert.summary}"
        message["From"] = s.sender
        message["To"] = ", ".join(s.to)
        lines = [
            alert.summary,
            "",
            alert.details,
            "",
            f"condition: {alert.condition} ({alert.status})",
            f"store: {alert.store or '-'}",
            f"pipeline: {alert.pipeline or '-'}",
        ]
        if alert.destination:
            lines.append(f"destination: {alert.destination}")
        lines.append(f"at: {alert.at.isoformat()}")
        message.set_content("\n".join(lines) + "\n")
        smtp: smtplib.SMTP
        if s.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                s.host, s.port, timeout=self._timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=self._timeout)
        with smtp:
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if s.username and s.password is not None:
                smtp.login(s.username, s.password.get_secret_value())
            smtp.send_message(message)


def notifiers_from(settings: AlertSettings) -> list[Notifier]:
    found: list[Notifier] = []
    if settings.webhook_url is not None:
        found.append(Webhook(settings.webhook_url.get_secret_value(), settings.timeout_seconds))
    if settings.smtp is not None:
        found.append(Email(settings.smtp, settings.timeout_seconds))
    return found


@dataclass
class _Pipeline:
    loaded_at: datetime
    last_success: datetime | None = None
    scheduled: bool = False  # only a scheduled pipeline is expected to succeed


@dataclass
class _Limits:
    failed_share: float
    failed_min_people: int
    not_succeeded: timedelta | None


_STOP = object()


class Alerts:
    """An ``Observer`` of the scheduler's events that raises and clears alerts; ``check``
    looks for pipelines that have not succeeded for too long. Thread-safe."""

    def __init__(
        self,
        settings: AlertSettings | None,
        notifiers: Sequence[Notifier] | None = None,
        *,
        reads: StateReads | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``settings`` None: not configured yet; alerts raised until ``configure`` is
        called wait for it (the service knows its settings once a store has loaded)."""
        self._lock = threading.Lock()
        self._limits = _Limits(0.05, 10, None)
        self._notifiers: list[Notifier] = []
        self._settings: AlertSettings | None = None
        self._configured = threading.Event()
        if settings is not None:
            self.configure(settings, notifiers)
        self._reads = reads if reads is not None else StateReads()
        self._clock = clock
        self._active: dict[str, Alert] = {}
        self._pipelines: dict[tuple[str, str], _Pipeline] = {}
        self._outbox: queue.Queue[object] = queue.Queue()
        self._sender = threading.Thread(target=self._deliver, name="crmsync-alerts", daemon=True)
        self._sender.start()

    def configure(
        self, settings: AlertSettings, notifiers: Sequence[Notifier] | None = None
    ) -> None:
        """Sets (or, on a reload, changes) the limits and where alerts go; the conditions
        already active stay so."""
        if settings == self._settings and notifiers is None:
            return
        hours = settings.not_succeeded_hours
        limits = _Limits(
            settings.failed_share,
            settings.failed_min_people,
            timedelta(hours=hours) if hours else None,
        )
        found = list(notifiers) if notifiers is not None else notifiers_from(settings)
        with self._lock:
            self._limits, self._notifiers, self._settings = limits, found, settings
        self._configured.set()

    # -- conditions ---------------------------------------------------------------------

    def notify(self, event: Event) -> None:
        if isinstance(event, StoreLoaded):
            self._loaded(event)
        elif isinstance(event, StoreBroken):
            text = "\n".join(event.issues)
            kept = " (it keeps running its last good configuration)" if event.kept_previous else ""
            self._raise("store_broken", event.store, None, None,
                        f"store {event.store or '(default)'}: configuration refused{kept}",
                        text)  # fmt: skip
        elif isinstance(event, RunFinished):
            self._finished(event)
        elif isinstance(event, NextRun):
            self._next_run(event)

    def check(self, now: datetime | None = None) -> None:
        """Raises ``not_succeeded`` for each pipeline without a success for longer than
        the limit (and clears it where one came since)."""
        limit = self._limits.not_succeeded
        if limit is None:
            return
        now = now if now is not None else self._clock()
        with self._lock:
            known = list(self._pipelines.items())
        for (store, pipeline), state in known:
            if not state.scheduled:
                continue
            since = state.last_success or state.loaded_at
            if now - since > limit:
                what = "never succeeded" if state.last_success is None else "not succeeded"
                self._raise(
                    "not_succeeded", store, pipeline, None,
                    f"pipeline {_name(store, pipeline)} has {what} for "
                    f"{_duration(now - since)} (limit {_duration(limit)})",
                    f"last success: {state.last_success or 'none'}",
                )  # fmt: skip
            else:
                self._clear("not_succeeded", store, pipeline, None, "it succeeded since")

    def active(self) -> list[Alert]:
        with self._lock:
            return sorted(self._active.values(), key=lambda a: a.key)

    def _loaded(self, event: StoreLoaded) -> None:
        now = self._clock()
        found: dict[str, datetime] = {}
        if event.config is not None:
            try:
                found = self._reads.last_successes(event.config.state_url, event.pipelines)
            except Exception as exc:
                log.warning("cannot read the last runs of store %r: %s", event.store, exc)
        with self._lock:
            for pipeline in event.pipelines:
                state = self._pipelines.setdefault((event.store, pipeline), _Pipeline(now))
                if pipeline in found and (
                    state.last_success is None or found[pipeline] > state.last_success
                ):
                    state.last_success = found[pipeline]
            gone = [
                k for k in self._pipelines if k[0] == event.store and k[1] not in event.pipelines
            ]
            for key in gone:
                del self._pipelines[key]
        self._clear("store_broken", event.store, None, None, "its configuration loads again")

    def _next_run(self, event: NextRun) -> None:
        """A pipeline is scheduled (``at``) or not any more (None: its schedule or its
        store was removed): only a scheduled one can be late."""
        with self._lock:
            state = self._pipelines.setdefault(
                (event.store, event.pipeline), _Pipeline(self._clock())
            )
            state.scheduled = event.at is not None
        if event.at is None:
            self._clear(
                "not_succeeded", event.store, event.pipeline, None, "not scheduled any more"
            )

    def _finished(self, event: RunFinished) -> None:
        report, store, pipeline = event.report, event.store, event.pipeline
        if report.status in SUCCESS:
            with self._lock:
                state = self._pipelines.setdefault((store, pipeline), _Pipeline(event.at))
                state.last_success = event.at
            self._clear("run_failed", store, pipeline, None, f"run {report.run_id} went through")
            self._clear("not_succeeded", store, pipeline, None, f"run {report.run_id} went through")
        elif report.status == "failed":
            self._raise(
                "run_failed", store, pipeline, None,
                f"pipeline {_name(store, pipeline)}: run {report.run_id or '-'} failed",
                report.error or "no reason recorded",
            )  # fmt: skip
        if report.status not in (*SUCCESS, "failed"):
            return
        for name, destination in report.destinations.items():
            counts = destination.counts
            sent = sum(
                counts.get(k, 0) for k in ("ok", "pending", "failed", "rejected", "compliance")
            )
            bad = counts.get("failed", 0) + counts.get("rejected", 0)
            share = bad / sent if sent else 0.0
            if share > self._limits.failed_share and sent >= self._limits.failed_min_people:
                self._raise(
                    "failed_share", store, pipeline, name,
                    f"pipeline {_name(store, pipeline)} -> {name}: {bad} of {sent} changes "
                    f"failed or were rejected ({share:.0%} > {self._limits.failed_share:.0%})",
                    f"failed {counts.get('failed', 0)}, rejected {counts.get('rejected', 0)}; "
                    "`crmsync status` lists them with the destination's reasons",
                )  # fmt: skip
            elif share <= self._limits.failed_share:
                self._clear(
                    "failed_share", store, pipeline, name,
                    f"run {report.run_id}: {bad} of {sent} changes failed or were rejected",
                )  # fmt: skip

    # -- one alert per condition --------------------------------------------------------

    def _raise(
        self,
        condition: str,
        store: str,
        pipeline: str | None,
        destination: str | None,
        summary: str,
        details: str,
    ) -> None:
        alert = Alert(condition, FIRING, store, pipeline, destination,
                      _clean(summary), _clean(details), self._clock())  # fmt: skip
        with self._lock:
            if alert.key in self._active:
                return
            self._active[alert.key] = alert
        log.warning("alert: %s", alert.summary)
        self._outbox.put(alert)

    def _clear(
        self, condition: str, store: str, pipeline: str | None, destination: str | None, why: str
    ) -> None:
        key = ":".join([condition, store, pipeline or "", destination or ""])
        with self._lock:
            was = self._active.pop(key, None)
        if was is None:
            return
        alert = Alert(condition, RESOLVED, store, pipeline, destination,
                      f"resolved: {was.summary}", _clean(why), self._clock())  # fmt: skip
        log.warning("alert %s", alert.summary)
        self._outbox.put(alert)

    # -- delivery -----------------------------------------------------------------------

    def _deliver(self) -> None:
        while True:
            item = self._outbox.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, Alert)
                self._configured.wait()
                with self._lock:
                    notifiers = list(self._notifiers)
                for notifier in notifiers:
                    try:
                        notifier.send(item)
                    except Exception as exc:
                        why = _clean(f"{type(exc).__name__}: {exc}")
                        log.error("alert %r not sent by %s: %s", item.key, notifier, why)
            finally:
                self._outbox.task_done()

    def flush(self) -> None:
        """Waits until every alert raised so far was handed to the notifiers."""
        self._outbox.join()

    def close(self) -> None:
        self._configured.set()  # nothing configured: what waits is dropped
        self._outbox.put(_STOP)
        self._sender.join(30)
        self._reads.close()


def _clean(text: str) -> str:
    """No secret and no person in an alert: it goes to another system's storage."""
    return mask_secrets(mask_text(text))


def _name(store: str, pipeline: str) -> str:
    return f"{store}/{pipeline}" if store else pipeline


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"
