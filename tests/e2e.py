"""Helpers for end-to-end tests: a sample store on disk, a config for it, CLI runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner, Result

from cli import main
from connectors.outbox import read_outbox
from crmsync import normalize
from crmsync.errors import RecordError
from crmsync.sample import SampleSpec, write_files
from state import schema
from state.store import Store

STORE_NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
AS_OF = "2026-11-01T09:00:00+00:00"


def files_source(data: Path) -> str:
    """The TOML of the files source ``shop`` reading a generated store's exports in ``data``."""
    return f"""[sources.shop]
kind = "files"
[sources.shop.customers]
path = "{data / "customers.csv"}"
[sources.shop.orders]
path = "{data / "orders.jsonl"}"
[sources.shop.carts]
path = "{data / "carts.jsonl"}"
"""


def config_text(
    state_url: str,
    data: Path,
    outbox: Path,
    batch_size: int = 500,
    workers: int | None = None,
    pipeline_tail: str = "",
) -> str:
    """One files source ``shop`` reading ``data``, one outbox ``out``, pipeline ``main``;
    ``pipeline_tail``: TOML after the pipeline's own keys (its profile, segments)."""
    pipeline_workers = f"workers = {workers}\n" if workers is not None else ""
    return f"""
[state]
url = "{state_url}"

{files_source(data)}
[destinations.out]
kind = "outbox"
directory = "{outbox}"
batch_size = {batch_size}

[pipelines.main]
sources = ["shop"]
destinations = ["out"]
{pipeline_workers}{pipeline_tail}"""


@dataclass
class Site:
    root: Path
    config: Path
    data: Path
    outbox_root: Path

    @property
    def outbox(self) -> Path:
        return self.outbox_root / "out"

    def records(self) -> list[dict[str, Any]]:
        return read_outbox(self.outbox) if self.outbox.exists() else []

    def record_hashes(self) -> list[tuple[str, str]]:
        """(person key, payload hash) of every outbox record, sorted: nobody twice or missing."""
        return sorted((str(r["person_key"]), str(r["payload_hash"])) for r in self.records())

    def records_in(self, names: set[str]) -> list[dict[str, Any]]:
        """The records of these batch files (e.g. the ones a run added)."""
        out: list[dict[str, Any]] = []
        for name in sorted(names):
            text = (self.outbox / name).read_text(encoding="utf-8")
            out.extend(json.loads(line) for line in text.splitlines() if line)
        return out

    def batch_files(self) -> set[str]:
        return {p.name for p in self.outbox.glob("*.jsonl")} if self.outbox.exists() else set()

    def cli(self, *args: str) -> Result:
        result = CliRunner().invoke(
            main, [*args, "--config", str(self.config)], catch_exceptions=False
        )
        return result

    def run_json(self, *extra: str) -> dict[str, Any]:
        code, report = self.run_report(*extra)
        assert code in (0, 5), report
        return report

    def send_to(self, name: str, table: str) -> None:
        """Points the pipeline at destination ``name`` instead of the outbox (which stays
        declared), configured by ``table``: the TOML under ``[destinations.<name>]``, and
        its sub-tables named from there (``[destinations.<name>.http.retry]``...)."""
        text = self.config.read_text(encoding="utf-8")
        outbox = '[destinations.out]\nkind = "outbox"'
        text = text.replace(outbox, f"[destinations.{name}]\n{table.strip()}\n\n{outbox}")
        text = text.replace('destinations = ["out"]', f'destinations = ["{name}"]')
        self.config.write_text(text, encoding="utf-8")

    def run_report(self, *extra: str) -> tuple[int, dict[str, Any]]:
        """A run's exit code and its report, whatever its status."""
        result = self.cli("run", "--as-of", AS_OF, "--json", *extra)
        reports: list[dict[str, Any]] = json.loads(result.stdout)
        return result.exit_code, reports[0]


def make_site(
    root: Path,
    state_url: str,
    customers: int = 300,
    dirty_rate: float = 0.0,
    batch_size: int = 500,
    seed: int = 3,
    workers: int | None = None,
) -> Site:
    data = root / "data"
    write_files(
        SampleSpec(customers=customers, seed=seed, now=STORE_NOW, dirty_rate=dirty_rate), data
    )
    config = root / "crmsync.toml"
    outbox = root / "outbox"
    config.write_text(config_text(state_url, data, outbox, batch_size, workers), encoding="utf-8")
    return Site(root, config, data, outbox)


def rename_everyone(site: Site) -> int:
    """Changes every customer's first name (and updated_at); returns how many there are."""
    path = site.data / "customers.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["first_name"] = row["first_name"] + "x"
        row["updated_at"] = "2026-10-31T12:00:00+03:00"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def edit_order(path: Path, order_id: str, **changes: Any) -> dict[str, Any]:
    """Rewrites one order of a JSONL export in place; returns the order as it was."""
    lines = path.read_text(encoding="utf-8").splitlines()
    before: dict[str, Any] = {}
    for i, line in enumerate(lines):
        try:
            order = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(order, dict) and order.get("id") == order_id:
            before = dict(order)
            order.update(changes)
            lines[i] = json.dumps(order, ensure_ascii=False)
    assert before, f"order {order_id} not found"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return before


def ledger_rows(url: str) -> set[tuple[str, str, str, str]]:
    """(person key, payload hash, tags, status) of every ledger row of the state at ``url``."""
    store = Store(url)
    t = schema.ledger
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.person_key, t.c.payload_hash, t.c.memberships, t.c.status)
        )
        out = {(str(a), str(b), str(c), str(d)) for a, b, c, d in rows}
    store.close()
    return out


def consented(data: Path) -> set[str]:
    """E-mails whose latest recorded marketing consent in the export is an opt-in."""
    latest: dict[str, tuple[str, str]] = {}
    with open(data / "customers.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                email = normalize.email(row["email"]) or ""
            except RecordError:
                continue
            state = row["accepts_email_marketing"]
            if not email or state not in ("subscribed", "unsubscribed"):
                continue
            at = row["email_marketing_updated_at"] or ""
            if email not in latest or (at, state == "unsubscribed") > (
                latest[email][0],
                latest[email][1] == "unsubscribed",
            ):
                latest[email] = (at, state)
    return {email for email, (_, state) in latest.items() if state == "subscribed"}


ROOT = Path(__file__).resolve().parent.parent


def start_cli(
    site: Site, *command: str, output: int | None = subprocess.PIPE
) -> subprocess.Popen[str]:
    """A crmsync command on ``site`` in a process of its own (to signal or kill it), as
    of the tests' time, without progress; its output piped (or ``output``)."""
    return subprocess.Popen(
        [sys.executable, "-c", "from cli import main; main()", *command,
         "--config", str(site.config), "--as-of", AS_OF, "--no-progress"],
        stdout=output, stderr=output, text=True, cwd=ROOT,
    )  # fmt: skip


def ledger_count(url: str, where: str = "", **values: Any) -> int:
    """Ledger rows committed so far (``where``: a condition on them, with ``values``),
    0 before the table exists: read while a run in another process is still going."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(f"SELECT count(*) FROM ledger {f'WHERE {where}' if where else ''}")
            return int(conn.execute(query, values).scalar() or 0)
    except sa.exc.DBAPIError:
        return 0
    finally:
        engine.dispose()


def first_read_waits_for(monkeypatch: Any, event: threading.Event) -> list[bool]:
    """Makes the files source's first read of a run wait (at most 10 s) until ``event``
    is set; returns the list where whether it was set in time is noted. A test of what a
    run does beside its pull: done only after the pull, the wait is in vain."""
    from connectors.files import FilesSource

    waited: list[bool] = []
    real_read = FilesSource.read

    def read(self: FilesSource, stream: Any, since: Any, until: datetime) -> Any:
        if not waited:
            waited.append(event.wait(10))
        return real_read(self, stream, since, until)

    monkeypatch.setattr(FilesSource, "read", read)
    return waited


def set_once_returned(monkeypatch: Any, owner: Any, name: str) -> threading.Event:
    """An event set each time the function ``owner.<name>`` has returned (it is patched
    to set it): a test of what a run does beside another step holds that step until the
    event is set."""
    done = threading.Event()
    real = getattr(owner, name)

    def call_and_tell(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        done.set()
        return result

    monkeypatch.setattr(owner, name, call_and_tell)
    return done


def break_plan_statistics(monkeypatch: Any, reason: str) -> None:
    """Makes gathering the plan tables' statistics fail with ``reason`` (a StateError),
    in this process (a run's own, or a coordinator's); the staging tables' still work."""
    from crmsync.errors import StateError

    real = Store.refresh_statistics

    def broken(self: Store, written: str, *, changed: int) -> Any:
        if written == "plans":
            raise StateError(reason)
        return real(self, written, changed=changed)

    monkeypatch.setattr(Store, "refresh_statistics", broken)


def assert_failed_keeping_pushes(url: str, result: Result, reason: str) -> None:
    """The run ``result`` failed with ``reason``, which its run row keeps too, and the
    ledger still holds what it pushed (destination ``out``, pipeline ``main``)."""
    assert result.exit_code != 0 and reason in result.output
    store = Store(url)
    try:
        [run] = store.runs("main")
        assert run.status == "failed" and reason in (run.error or "")
        assert store.ledger_counts(["out"])["out"]["synced"] > 0  # pushed and collected
    finally:
        store.close()
