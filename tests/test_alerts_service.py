"""``service.alerts``: one alert per condition until it clears, then one "resolved", to a
webhook (a local receiver thread) and by e-mail (a minimal local SMTP server)."""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from crmsync.config import AlertSettings, SmtpSettings
from crmsync.runs import DestinationReport, RunReport
from service.alerts import Alert, Alerts, Email, Webhook
from service.events import NextRun, RunFinished, StoreBroken, StoreLoaded

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@dataclass
class Receiver:
    """A webhook receiver on a free local port, keeping every JSON body it was sent."""

    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN-Sapphire-71"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers["Content-Length"])
                owner.bodies.append(json.loads(self.rfile.read(size)))
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def seen(self) -> list[tuple[str, str]]:
        return [(b["condition"], b["status"]) for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    try:
        yield found
    finally:
        found.stop()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_alerts(receiver: Receiver, clock: Clock | None = None, **settings: Any) -> Alerts:
    return Alerts(
        AlertSettings(webhook_url=SecretStr(receiver.url), **settings),
        clock=clock or Clock(),
    )


def report(status: str, run_id: int = 1, **results: int) -> RunReport:
    found = RunReport("main", run_id, "scheduled", False, T0, status=status)
    if status == "failed":
        found.error = "mc: GET /ping: 401 API Key Invalid (ask jane.doe@example.com)"
    if results:
        d = DestinationReport("mc", "mailchimp")
        d.counts = Counter(results)
        found.destinations = {"mc": d}
    return found


def finished(status: str, run_id: int = 1, store: str = "", **results: int) -> RunFinished:
    return RunFinished(store, "main", report(status, run_id, **results), 1.0, T0)


def test_a_failing_pipeline_alerts_once_and_resolves_once(receiver: Receiver) -> None:
    alerts = make_alerts(receiver)
    try:
        alerts.notify(StoreLoaded("", ("main",)))
        for run_id in (1, 2, 3):
            alerts.notify(finished("failed", run_id))
        alerts.notify(finished("interrupted", 4))  # SIGTERM: says nothing either way
        alerts.flush()
        assert receiver.seen() == [("run_failed", "firing")]
        first = receiver.bodies[0]
        assert first["pipeline"] == "main" and first["text"].startswith("[crmsync FIRING]")
        assert "run 1 failed" in first["summary"] and "401 API Key Invalid" in first["details"]
        assert "jane.doe@example.com" not in json.dumps(first)  # people are masked

        alerts.notify(finished("succeeded", 5))
        alerts.notify(finished("succeeded", 6))
        alerts.flush()
        assert receiver.seen() == [("run_failed", "firing"), ("run_failed", "resolved")]
        assert receiver.bodies[1]["summary"].startswith("resolved: ")
        assert alerts.active() == []

        alerts.notify(finished("failed", 7))  # a new failure after it cleared: a new alert
        alerts.flush()
        assert receiver.seen()[-1] == ("run_failed", "firing")
    finally:
        alerts.close()


def test_the_share_of_failed_or_rejected_people_alerts_above_the_threshold(
    receiver: Receiver,
) -> None:
    alerts = make_alerts(receiver, failed_share=0.1, failed_min_people=20)
    try:
        alerts.notify(finished("partial", 1, ok=5, failed=5))  # 50 %, but only 10 sent
        alerts.notify(finished("partial", 2, ok=90, failed=10))  # 10 %: not above
        alerts.flush()
        assert receiver.bodies == []
        alerts.notify(finished("partial", 3, ok=80, failed=8, rejected=4, compliance=8))  # 12 %
        alerts.notify(finished("partial", 4, ok=50, rejected=50))
        alerts.flush()
        assert receiver.seen() == [("failed_share", "firing")]
        assert receiver.bodies[0]["destination"] == "mc"
        assert (
            "12 of 100 changes failed or were rejected (12% > 10%)"
            in (receiver.bodies[0]["summary"])
        )
        alerts.notify(finished("succeeded", 5, ok=0))  # nothing sent: nothing failed
        alerts.flush()
        assert receiver.seen() == [("failed_share", "firing"), ("failed_share", "resolved")]
    finally:
        alerts.close()


def test_a_pipeline_that_has_not_succeeded_for_too_long_alerts_when_checked(
    receiver: Receiver,
) -> None:
    clock = Clock()
    alerts = make_alerts(receiver, clock, not_succeeded_hours=2)
    try:
        alerts.notify(StoreLoaded("acme", ("main", "by_hand")))  # never succeeded: from now
        alerts.notify(NextRun("acme", "main", T0 + timedelta(minutes=15)))  # by_hand: none
        alerts.check(T0 + timedelta(hours=1))
        alerts.flush()
        assert receiver.bodies == []
        alerts.notify(RunFinished("acme", "main", report("failed"), 1.0, T0 + timedelta(hours=1)))
        for minutes in (121, 122, 180):
            alerts.check(T0 + timedelta(minutes=minutes))
        alerts.flush()
        assert receiver.seen() == [("run_failed", "firing"), ("not_succeeded", "firing")]
        stale = receiver.bodies[1]
        assert stale["store"] == "acme"
        assert stale["summary"] == (
            "pipeline acme/main has never succeeded for 2h01m (limit 2h00m)"
        )
        clock.now = T0 + timedelta(hours=3)
        alerts.notify(RunFinished("acme", "main", report("succeeded"), 1.0, clock.now))
        alerts.check(T0 + timedelta(hours=4))  # 1 h after the success: fine
        alerts.flush()
        assert sorted(receiver.seen()[2:]) == [
            ("not_succeeded", "resolved"),
            ("run_failed", "resolved"),
        ]
        alerts.check(T0 + timedelta(hours=5, minutes=1))  # 2h01m after it: stale again
        alerts.flush()
        assert receiver.seen()[-1] == ("not_succeeded", "firing")
        assert [a.pipeline for a in alerts.active()] == ["main"]  # by_hand is never late
        alerts.notify(NextRun("acme", "main", None))  # its schedule was removed
        alerts.check(T0 + timedelta(hours=9))
        alerts.flush()
        assert receiver.seen()[-1] == ("not_succeeded", "resolved")
        assert receiver.bodies[-1]["details"] == "not scheduled any more"
        assert alerts.active() == []
    finally:
        alerts.close()


def test_a_broken_store_alerts_until_its_configuration_loads(receiver: Receiver) -> None:
    alerts = make_alerts(receiver)
    try:
        issues = ("destinations.mc.api_key: environment variable MC_KEY is not set",)
        alerts.notify(StoreBroken("beta", issues, kept_previous=True))
        alerts.notify(StoreBroken("beta", issues, kept_previous=True))
        alerts.notify(StoreLoaded("alpha", ("main",)))  # another store: no change for beta
        alerts.notify(StoreLoaded("beta", ("main",)))
        alerts.flush()
        assert receiver.seen() == [("store_broken", "firing"), ("store_broken", "resolved")]
        assert receiver.bodies[0]["store"] == "beta"
        assert "MC_KEY is not set" in receiver.bodies[0]["details"]
        assert "keeps running its last good configuration" in receiver.bodies[0]["summary"]
    finally:
        alerts.close()


def test_conditions_of_different_pipelines_and_stores_are_apart(receiver: Receiver) -> None:
    alerts = make_alerts(receiver)
    try:
        alerts.notify(finished("failed", store="a"))
        alerts.notify(finished("failed", store="b"))
        alerts.notify(finished("succeeded", store="a"))
        alerts.flush()
        assert [(b["store"], b["status"]) for b in receiver.bodies] == [
            ("a", "firing"),
            ("b", "firing"),
            ("a", "resolved"),
        ]
        assert [a.store for a in alerts.active()] == ["b"]
    finally:
        alerts.close()


def test_a_receiver_that_fails_is_logged_without_its_url_and_holds_nothing_up(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    alerts = make_alerts(receiver)
    try:
        with caplog.at_level(logging.ERROR, "crmsync.service.alerts"):
            alerts.notify(finished("failed"))
            alerts.flush()
        assert len(receiver.bodies) == 1
        assert "not sent by Webhook(***): RuntimeError: the webhook answered 500" in caplog.text
        assert "Sapphire" not in caplog.text
    finally:
        alerts.close()


class SmtpStub(socketserver.ThreadingTCPServer):
    """Just enough SMTP to take messages: greets, says OK to each command and keeps the
    DATA of each mail (``smtplib`` is the client under test)."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        self.mails: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        super().__init__(("127.0.0.1", 0), _SmtpSession)


class _SmtpSession(socketserver.StreamRequestHandler):
    server: SmtpStub

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 stub ESMTP")
        sender, recipients = "", []
        while True:
            line = self.rfile.readline().decode().rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if not line or verb == "QUIT":
                self.reply("221 bye")
                return
            if verb == "EHLO":
                self.reply("250 stub")
            elif verb == "MAIL":
                sender = line.split(":", 1)[1].strip().strip("<>")
                self.reply("250 ok")
            elif verb == "RCPT":
                recipients.append(line.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                self.server.mails.append(data)
                self.server.envelopes.append((sender, recipients))
                sender, recipients = "", []
                self.reply("250 queued")
            else:
                self.reply("250 ok")


def test_alerts_are_e_mailed_through_smtp() -> None:
    stub = SmtpStub()
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    smtp = SmtpSettings(
        host="127.0.0.1",
        port=stub.server_address[1],
        sender="crmsync@ops.example",
        to=["oncall@ops.example", "shop@ops.example"],
    )
    alerts = Alerts(AlertSettings(smtp=smtp))
    try:
        alerts.notify(finished("failed", store="acme"))
        alerts.notify(finished("failed", 2, store="acme"))
        alerts.notify(finished("succeeded", 3, store="acme"))
        alerts.flush()
    finally:
        alerts.close()
        stub.shutdown()
        stub.server_close()
    assert len(stub.mails) == 2
    assert stub.envelopes[0] == ("crmsync@ops.example", ["oncall@ops.example", "shop@ops.example"])
    first, second = (message_from_bytes(m) for m in stub.mails)
    assert first["Subject"] == "[crmsync FIRING] pipeline acme/main: run 1 failed"
    assert first["To"] == "oncall@ops.example, shop@ops.example"
    body = first.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert b"401 API Key Invalid" in body and b"store: acme" in body
    assert second["Subject"] == "[crmsync RESOLVED] resolved: pipeline acme/main: run 1 failed"


def test_the_webhook_body_is_the_alert_as_json(receiver: Receiver) -> None:
    alert = Alert("run_failed", "firing", "acme", "main", None, "it broke", "why", T0)
    Webhook(receiver.url).send(alert)
    assert receiver.bodies == [
        {
            "condition": "run_failed",
            "status": "firing",
            "store": "acme",
            "pipeline": "main",
            "destination": None,
            "summary": "it broke",
            "details": "why",
            "at": "2026-11-01T09:00:00+00:00",
            "key": "run_failed:acme:main:",
            "text": "[crmsync FIRING] it broke",
        }
    ]
    assert repr(Email(SmtpSettings(host="mx", sender="a@b.c", to=["d@e.f"]))) == "Email(mx:25)"
