"""End to end: ``crmsync serve`` as a real process, syncing the files source into the fake
Mailchimp every few seconds, watched from outside as an operator would: the health and
readiness probes, the Prometheus figures (checked against what the fake received), the
JSON log lines, and an alert webhook that gets exactly one alert when the API key is
refused and one "resolved" when it is accepted again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import consented, make_site
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake
from tests.test_alerts_service import Receiver, receiver

__all__ = ["mailchimp_fake", "receiver"]

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def total(figures: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    """The sum of ``name``'s samples that have these labels (and any others)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in figures.items() if n == name and wanted <= found)


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 120.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_is_healthy_measured_and_alerts_once_per_condition(
    tmp_path: Path, mailchimp_fake: FakeMailchimp, receiver: Receiver
) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=60)
    mailchimp_fake.expect_consented(consented(site.data))
    site.send_to(
        "mc",
        f'kind = "mailchimp"\napi_key = "${{CRMSYNC_TEST_MAILCHIMP_KEY}}"\n'
        f'list_id = "{mailchimp_fake.list_id}"\nbase_url = "{mailchimp_fake.base_url}"\n'
        "[destinations.mc.http.retry]\nattempts = 2\nbackoff_initial = 0.01\n",
    )
    port = free_port()
    text = site.config.read_text(encoding="utf-8")
    text = text.replace('destinations = ["mc"]', 'destinations = ["mc"]\nevery = "3s"')
    text += f'\n[observe]\nport = {port}\n\n[alerts]\nwebhook_url = "{receiver.url}"\n'
    site.config.write_text(text, encoding="utf-8")
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"

    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--config", str(site.config)],
            cwd=ROOT,
            env={**os.environ, "CRMSYNC_TEST_MAILCHIMP_KEY": mailchimp_fake.api_key},
            stdout=subprocess.DEVNULL,
            stderr=log_file,  # not a terminal: JSON lines
        )
        try:
            assert eventually("/healthz", lambda: get(f"{base}/healthz")[0] == 200 or None)
            status, ready = eventually("/readyz", lambda: _answered(get(f"{base}/readyz")))
            assert (status, ready) == (200, "ready: 1 store(s) loaded\n")

            # after a successful run, while none is under way: the figures match the fake's
            def consistent() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
                figures = samples(get(f"{base}/metrics")[1])
                calls = sum(mailchimp_fake.calls.values())
                done = total(figures, "crmsync_runs_total", pipeline="main", outcome="succeeded")
                running = total(figures, "crmsync_runs_running")
                api = total(figures, "crmsync_api_calls_total", vendor="mailchimp")
                return figures if done >= 1 and running == 0 and api == calls else None

            figures = eventually("a run's figures", consistent)
            members = len(mailchimp_fake.audience.members)
            assert members > 0
            people = {"store": "", "destination": "mc"}
            assert total(figures, "crmsync_people_total", **people, decision="create") == members
            assert total(figures, "crmsync_pushed_total", **people, result="ok") == members
            assert total(figures, "crmsync_pushed_total", **people, result="failed") == 0
            rows = len((site.data / "customers.csv").read_text(encoding="utf-8").splitlines()) - 1
            pulled = {"source": "shop", "stream": "customers", "outcome": "pulled"}
            assert total(figures, "crmsync_records_total", **pulled) >= rows
            assert total(figures, "crmsync_api_calls_total", status="200") > 0
            age = total(figures, "crmsync_seconds_since_last_success", pipeline="main")
            assert 0 <= age < 120
            assert total(figures, "crmsync_failure_backlog") == 0
            assert ("crmsync_pending_jobs", frozenset(people.items())) in figures
            assert receiver.bodies == []

            # the key is refused: runs fail, and the webhook hears of it once
            right_key = mailchimp_fake.api_key
            mailchimp_fake.api_key = "0" * 32 + "-us7"
            eventually("two failed runs", lambda: _runs(base, "failed") >= 2 or None)
            assert receiver.seen() == [("run_failed", "firing")]
            assert receiver.bodies[0]["pipeline"] == "main"
            assert "401" in receiver.bodies[0]["details"] or "API Key" in str(receiver.bodies[0])

            # accepted again: one "resolved", and nothing more while it stays fine
            succeeded = _runs(base, "succeeded")
            mailchimp_fake.api_key = right_key
            eventually("a run going through", lambda: _runs(base, "succeeded") > succeeded or None)
            eventually("the resolved alert", lambda: len(receiver.bodies) == 2 or None, 30)
            later = _runs(base, "succeeded")
            eventually("another run", lambda: _runs(base, "succeeded") > later or None)
            assert receiver.seen() == [("run_failed", "firing"), ("run_failed", "resolved")]
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert code == 0
    lines = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    in_runs = [line for line in lines if line.get("run_id") is not None]
    assert in_runs, lines[:5]
    assert all(line.get("pipeline") == "main" for line in in_runs)
    assert mailchimp_fake.api_key not in log_path.read_text(encoding="utf-8")
    assert receiver.url not in log_path.read_text(encoding="utf-8")


def _answered(answer: tuple[int, str]) -> tuple[int, str] | None:
    return answer if answer[0] == 200 else None


def _runs(base: str, outcome: str) -> float:
    figures = samples(get(f"{base}/metrics")[1])
    return total(figures, "crmsync_runs_total", pipeline="main", outcome=outcome)
