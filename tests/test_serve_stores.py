"""``crmsync serve`` on a directory of 50 generated store files, as a real process: store
files are changed, broken, fixed, removed and added while it serves, and exactly the
right stores sync (each with the right configuration) while the broken ones are reported.

What a reload (SIGHUP) does with a store (``service.daemon``): a store that loads runs
with its new file from its next run; a store that stops loading keeps the configuration
it had and says so; a store that never loaded never runs; a removed store stops.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.stores_dir import StoresDir, make_stores_dir, store_text

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EVERY = "4s"
SEGMENT = '\n[segments.reloaded]\nrule = "orders_count >= 0"\n'

WAIT = 60.0  # seconds any one condition may take on a busy machine


def runs(url: str) -> list[tuple[int, str, str]]:
    """(id, store, status) of every run so far (none before the table exists)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, pipeline, status FROM runs ORDER BY id"))
            return [(int(i), str(p).split(".")[0], str(s)) for i, p, s in rows]
    except sa.exc.DBAPIError:
        return []
    finally:
        engine.dispose()


def ran_since(url: str, after: int) -> set[str]:
    """The stores with a run started after run ``after`` that succeeded."""
    return {store for i, store, status in runs(url) if i > after and status == "succeeded"}


def last_id(url: str) -> int:
    found = runs(url)
    return found[-1][0] if found else 0


def wait_for(what: str, done: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        assert process.poll() is None, f"serve ended (code {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def log_lines(path: Path) -> list[dict[str, object]]:
    """The service's JSON log lines so far (stderr is a file, not a terminal)."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                continue
    return out


def logged(path: Path, *words: str) -> bool:
    return any(all(w in str(line.get("message", "")) for w in words) for line in log_lines(path))


@dataclass
class Hook:
    """A webhook receiver: every alert posted to it, in order."""

    port: int
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def broken(self) -> list[tuple[str, str]]:
        """(store, firing|resolved) of each store_broken alert received."""
        return [(a["store"], a["status"]) for a in self.alerts if a["condition"] == "store_broken"]


@pytest.fixture
def hook() -> Iterator[Hook]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Hook(server.server_address[1], received)
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broken_gauge(port: int) -> dict[str, float]:
    """crmsync_store_broken per store, from the service's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        sample.labels["store"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "crmsync_store_broken"
        for sample in family.samples
    }


def ran_by_metrics(port: int) -> set[str]:
    """The stores with a succeeded run in crmsync_runs_total."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        sample.labels["store"]
        for family in text_string_to_metric_families(text)
        if family.name == "crmsync_runs"
        for sample in family.samples
        if sample.name == "crmsync_runs_total" and sample.labels["outcome"] == "succeeded"
        and sample.value > 0
    }  # fmt: skip


@dataclass
class Serving:
    site: StoresDir
    url: str
    log: Path
    port: int  # of /metrics
    started: list[subprocess.Popen[str]]


@pytest.fixture
def serving(tmp_path: Path, hook: Hook) -> Iterator[Serving]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_stores_dir(tmp_path, url)
    base = site.directory / "_base.toml"
    text = base.read_text(encoding="utf-8").replace(
        'schedule = "*/5 * * * *"', f'every = "{EVERY}"'
    )
    port = free_port()
    shared = f"""
[serve]
max_parallel = 4

[observe]
host = "127.0.0.1"
port = {port}

[alerts]
webhook_url = "http://127.0.0.1:{hook.port}/alerts"
"""
    base.write_text(text + shared, "utf-8")
    started: list[subprocess.Popen[str]] = []
    yield Serving(site, url, tmp_path / "serve.log", port, started)
    for process in started:  # a test that failed half-way leaves no process behind
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def start(site: StoresDir, log: Path) -> subprocess.Popen[str]:
    handle = open(log, "w", encoding="utf-8")  # noqa: SIM115 (the process writes it)
    return subprocess.Popen(
        [sys.executable, "-c", "from cli import main; main()", "serve",
         "--config", str(site.directory)],
        stdout=handle, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip


def test_fifty_stores_changed_broken_fixed_removed_and_added_while_serving(
    serving: Serving, hook: Hook
) -> None:
    site, url, log, started = serving.site, serving.url, serving.log, serving.started
    names = [f"s{i:02d}" for i in range(50)]
    for i, name in enumerate(names):
        site.add(name, customers=2, seed=i + 1)
    broken_from_start = names[:5]
    for name in broken_from_start:
        site.add(name, extra="max_attempt = 3\n")  # a misspelt key: never loads
    good = [n for n in names if n not in broken_from_start]

    process = start(site, log)
    started.append(process)
    wait_for(
        "every good store's first sync",
        lambda: all(site.sent(n) >= site.emails(n) for n in good),
        process,
    )
    for name in broken_from_start:
        assert logged(log, f"store {name} does not load", "it does not sync")
    assert {store for _, store, _ in runs(url)} == set(good)
    wait_for("the first alerts", lambda: len(hook.alerts) >= 5, process)
    assert sorted(hook.broken()) == [(n, "firing") for n in broken_from_start]
    assert {s for s, v in broken_gauge(serving.port).items() if v} == set(broken_from_start)

    # while serving: change, break, fix, remove and add store files, then SIGHUP
    changed, newly_broken = good[:5], good[5:10]
    removed, fixed, added = good[10:12], broken_from_start[:2], ["t00", "t01"]
    untouched = good[12:]
    for name in changed + newly_broken:  # a segment everyone is in: a membership for all
        extra = "max_attempt = 3\n" if name in newly_broken else ""
        text = store_text(site.data / name, extra) + SEGMENT
        site.file(name).write_text(text, "utf-8")
    for name in removed:
        site.file(name).unlink()
    for name in fixed:
        site.add(name)
    for i, name in enumerate(added):
        site.add(name, customers=2, seed=200 + i)
    os.kill(process.pid, signal.SIGHUP)
    wait_for("the reload", lambda: all(logged(log, f"store {n} removed") for n in removed), process)
    for name in newly_broken:
        assert logged(log, f"store {name} does not load", "previous configuration stays")

    # two full rounds after the reload: a run that was starting as it came is long over
    running = set(untouched + changed + newly_broken + fixed + added)
    reloaded = last_id(url)
    wait_for("a round after the reload", lambda: ran_since(url, reloaded) >= running, process)
    settled = last_id(url)
    wait_for("a second round", lambda: ran_since(url, settled) >= running, process)

    assert {store for i, store, _ in runs(url) if i > settled} == running
    for name in changed:  # the new file's segment reached the store's destination
        assert "crm-reloaded" in site.memberships(name), name
    for name in newly_broken:  # still the old file's: the new segment never went out
        assert "crm-reloaded" not in site.memberships(name), name
    assert not any("crm-reloaded" in site.memberships(n) for n in untouched)
    for name in fixed + added:
        assert site.sent(name) >= site.emails(name), name
    never = set(broken_from_start) - set(fixed)
    assert not never & {store for _, store, _ in runs(url)}
    assert not any(logged(log, f"store {n} does not load") for n in untouched + changed + added)

    # reported: one alert per store that broke, one "resolved" per store fixed, no repeats
    still = never | set(newly_broken)
    wait_for("the reload's alerts", lambda: len(hook.alerts) >= 5 + 2 + 5, process)
    assert sorted(hook.broken()) == sorted(
        [(n, "firing") for n in broken_from_start + newly_broken] + [(n, "resolved") for n in fixed]
    )
    assert len(hook.alerts) == len(hook.broken())  # nothing else went wrong
    gauge = broken_gauge(serving.port)
    assert {s for s, v in gauge.items() if v} == still
    assert all(gauge[n] == 0 for n in fixed)
    assert ran_by_metrics(serving.port) == running | set(removed)

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    assert process.returncode in (0, 143), log.read_text()[-3000:]
    statuses = {status for _, _, status in runs(url)}
    assert "running" not in statuses and "failed" not in statuses
