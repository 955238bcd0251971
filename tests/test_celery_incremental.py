"""A run on Celery workers plans incrementally, as a run in one process does: after a
first sync, a run with nothing new plans nobody (not one plan task), and a run after a
small change plans only the people whose plan may have changed, in slices of them; both
end exactly where the run in one process ends over the same data, with the same report.
Each plan task is delivered twice, and counts once. The coordinator's scope, cut into
slices, gives each plan task its share of it, and the shares together are exactly the
scope."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from crmsync import incremental
from crmsync.profile_scope import KeyRange
from distributed import dispatch
from distributed.dispatch import Task
from state import schema
from state.planned import SCOPE, create_temporary, drop_temporary
from state.profile_reads import ranges
from state.store import Store
from state.work_queue import fill_slice_scope, keep_scope, planned_scope, scope_boundaries
from tests.celery_workers import broker_or_skip, celery_table, new_queue, workers
from tests.e2e import AS_OF, Site, ledger_rows, make_site

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CUSTOMERS = 600
CHANGED_AT = "2026-11-01T11:30:00+03:00"  # before the runs' as_of (09:00 UTC)
COMPARED = ("profiles", "profiles_kept", "destinations", "segments", "not_synced", "samples")


def celery_run(site: Site) -> dict[str, Any]:
    result = site.cli("run", "--workers", "celery", "--as-of", AS_OF, "--json")
    assert result.exit_code == 0, result.output
    reports: list[dict[str, Any]] = json.loads(result.stdout)
    return reports[0]


def slice_people(site: Site, people: int) -> None:
    """Sets the ``[celery]`` table's ``people_per_slice`` (the coordinator reads it)."""
    text = site.config.read_text(encoding="utf-8")
    start = text.index("people_per_slice = ")
    end = text.index("\n", start)
    site.config.write_text(text[:start] + f"people_per_slice = {people}" + text[end:])


def change_some(data: Path) -> int:
    """Changes 1 % of the customers' records the same way wherever it is called: every
    other one a new first name (the first of them a new e-mail too: the person's key
    changes; the second loses its e-mail and phone: it is named as not synced), the rest
    a new order; returns how many customers were changed."""
    path = data / "customers.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked = [row for row in rows if row["deleted"] == "false" and "@" in row["email"]]
    wanted = max(1, len(rows) // 100)
    picked = picked[:: len(picked) // wanted][:wanted]
    with open(data / "orders.jsonl", encoding="utf-8") as handle:
        template = json.loads(handle.readline())
    orders = []
    for turn, row in enumerate(picked):
        if turn % 2 == 0:
            row["first_name"] += " Yeni"
            if turn == 0:
                row["email"] = "yeni." + row["email"].strip()
            if turn == 2:
                row.update(email="", phone="")
            row["updated_at"] = CHANGED_AT
        else:
            order = dict(template, id=f"9{turn:08d}", customer_id=row["customer_id"])
            order.update(email=row["email"].strip(), created_at=CHANGED_AT, updated_at=CHANGED_AT)
            order["status"] = "fulfilled"
            orders.append(json.dumps(order, ensure_ascii=False))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(data / "orders.jsonl", "a", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in orders))
    return len(picked)


def staged_customers(url: str) -> int:
    store = Store(url)
    with store.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.customers)).scalar()
    store.close()
    return int(count or 0)


def planned_rows(url: str) -> set[tuple[Any, ...]]:
    """Every person's plan the runs kept (``state.planned``), and the planning's totals."""
    store = Store(url)
    p, marks = schema.planned, schema.plannings
    with store.engine.connect() as conn:
        query = sa.select(p.c.person_key, p.c.next_at, p.c.segments, p.c.skips)
        rows = {tuple(r) for r in conn.execute(query)}
        rows |= {tuple(r) for r in conn.execute(sa.select(marks.c.totals, marks.c.profiles))}
    store.close()
    return rows


def assert_alike(report: dict[str, Any], expected: dict[str, Any]) -> None:
    assert report["status"] == expected["status"] == "succeeded"
    assert report["planning"] == expected["planning"] == "incremental"
    for name in COMPARED:
        assert report[name] == expected[name], name


def test_runs_on_workers_plan_incrementally_and_end_as_one_process_does(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = broker_or_skip("amqp")
    one_url = f"sqlite:///{tmp_path / 'one.db'}"
    # a dirty store: records left out to name, and named again as they change
    one = make_site(tmp_path / "one", one_url, customers=CUSTOMERS, batch_size=40, dirty_rate=0.05)
    site = make_site(
        tmp_path / "celery", postgres_url, customers=CUSTOMERS, batch_size=40, dirty_rate=0.05
    )
    queue = new_queue()
    with open(site.config, "a", encoding="utf-8") as handle:
        handle.write(celery_table(broker, queue, people_per_slice=200))

    sent: list[str] = []
    twins: list[str] = []
    once = dispatch.publish

    def noted(app: Celery, task: Task, queue: str) -> None:
        """Notes each task sent, and sends a plan task twice (as a broker may deliver it):
        its twin waits for it and then does nothing."""
        sent.append(task.key)
        once(app, task, queue)
        if task.key.startswith("plan/"):
            twins.append(task.key)
            once(app, task, queue)

    monkeypatch.setattr(dispatch, "publish", noted)
    with workers(site.config, tmp_path / "logs", broker, queue) as running:
        first = celery_run(site)
        assert first["status"] == "succeeded", running.log_text()[-3000:]
        assert first["planning"] == "everyone: no earlier planning"
        assert first["profiles"] == one.run_json()["profiles"] > CUSTOMERS

        # nothing new: nobody planned again, not one plan task
        expected = one.run_json()
        sent.clear()
        report = celery_run(site)
        assert report["status"] == "succeeded", running.log_text()[-3000:]
        assert_alike(report, expected)
        assert report["profiles_kept"] == report["profiles"]
        named_before = report["not_synced"]["total"]
        assert not [key for key in sent if key.startswith("plan/")]
        assert ledger_rows(postgres_url) == ledger_rows(one_url)
        assert planned_rows(postgres_url) == planned_rows(one_url)

        # 1 % changed: only the scope is planned, in slices of it
        assert change_some(one.data) == change_some(site.data) == CUSTOMERS // 100
        slice_people(site, 4)
        expected = one.run_json()
        sent.clear()
        report = celery_run(site)
        assert report["status"] == "succeeded", running.log_text()[-3000:]
        assert_alike(report, expected)
        assert report["not_synced"]["total"] > named_before > 0
        planned_again = report["profiles"] - report["profiles_kept"]
        assert CUSTOMERS // 100 <= planned_again < report["profiles"] // 10
        slices = [key for key in sent if key.startswith("plan/")]
        assert 2 <= len(slices) < CUSTOMERS // 4 // 10  # slices of the scope, not everyone
        assert sum(expected["destinations"]["out"].get(k, 0) for k in ("create", "update")) > 0
        assert site.record_hashes() == one.record_hashes()
        assert ledger_rows(postgres_url) == ledger_rows(one_url)
        assert planned_rows(postgres_url) == planned_rows(one_url)

        # most people changed: the coordinator plans everyone, as one process does (a
        # scope of more than half the people, counted once there are SMALL of them)
        monkeypatch.setattr(incremental, "SMALL", 100)
        assert rename_all(one.data) == rename_all(site.data) >= CUSTOMERS
        slice_people(site, 200)
        expected = one.run_json()
        sent.clear()
        report = celery_run(site)
        assert report["status"] == "succeeded", running.log_text()[-3000:]

    assert running.log_text().count("not run again") >= len(twins) > 0
    assert report["planning"] == expected["planning"] == "everyone: most people to plan again"
    for name in COMPARED:
        assert report[name] == expected[name], name
    slices = [key for key in sent if key.startswith("plan/")]
    assert len(slices) == -(-staged_customers(postgres_url) // 200)  # of every one staged
    assert expected["destinations"]["out"].get("update", 0) > CUSTOMERS // 2
    assert site.record_hashes() == one.record_hashes()
    assert ledger_rows(postgres_url) == ledger_rows(one_url)
    assert planned_rows(postgres_url) == planned_rows(one_url)


def rename_all(data: Path) -> int:
    """A new first name for every customer, stamped before the runs' as_of; returns how
    many customers there are."""
    path = data / "customers.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["first_name"] += " Yeni"
        row["updated_at"] = CHANGED_AT
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


# -- the scope cut into slices ------------------------------------------------------------


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    store = Store(postgres_url)
    yield store
    store.close()


def _scope_of(store: Store, run: int, keys: list[str]) -> None:
    """Fills the coordinator's temporary scope with ``keys`` and keeps it for ``run``."""
    with store.engine.connect() as conn:
        create_temporary(conn, SCOPE)
        if keys:
            conn.execute(sa.insert(SCOPE), [{"person_key": k} for k in keys])
        keep_scope(conn, run)
        drop_temporary(conn, SCOPE)
        conn.commit()


def _share(store: Store, run: int, keys: KeyRange) -> list[str]:
    """What a plan task of ``run`` reads of the scope for its slice ``keys``."""
    with store.engine.connect() as conn:
        fill_slice_scope(conn, run, keys)
        found = [str(k) for (k,) in conn.execute(sa.select(SCOPE.c.person_key))]
        conn.rollback()
    return found


def test_the_scopes_slices_hold_every_person_of_it_once(store: Store) -> None:
    started = datetime(2026, 11, 1, tzinfo=UTC)
    run, other = store.start_run("main", "manual", started), store.start_run("b", "manual", started)
    # keys whose byte order differs from a locale's: case, digits, "p:" phones, non-ASCII
    keys = [f"e:{name}{n}@example.com" for n in range(40) for name in ("ali", "Zeynep", "ömer")]
    keys += [f"p:+90532{n:07d}" for n in range(17)] + ["e:a", "e:Ş@x.tr", "e:_@x"]
    _scope_of(store, run, keys)
    _scope_of(store, other, ["e:only-the-other-run@example.com", "e:ali3@example.com"])

    for parts in (1, 2, 3, 7, 50, len(keys), len(keys) + 5):
        with store.engine.connect() as conn:
            boundaries = scope_boundaries(conn, run, parts)
        assert len(boundaries) == min(parts, len(keys)) - 1
        assert boundaries == sorted(boundaries, key=lambda k: k.encode())
        shares = [_share(store, run, r) for r in ranges(boundaries)]
        assert all(shares)  # every slice holds some of the scope
        assert sorted(k for share in shares for k in share) == sorted(keys)  # each once
        sizes = [len(share) for share in shares]
        assert max(sizes) - min(sizes) <= 1  # about equal

    with store.engine.connect() as conn:
        assert scope_boundaries(conn, store.start_run("c", "manual", started), 4) == []
        count = sa.select(sa.func.count()).where(planned_scope.c.run_id == run)
        assert conn.execute(count).scalar() == len(keys)
