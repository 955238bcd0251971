"""The destination contract test: one set of scenarios every destination passes against its
fake, through the real pipeline (files source -> state -> profiles -> the destination).

A destination's test module subclasses ``DestinationContract`` and provides a
``vendor_factory`` fixture that returns a fresh ``Vendor``: a view of its fake that says
which contacts the destination holds, with which owned memberships and whether they are
subscribed, and how many write calls it took. The scenarios:

- a first sync ends with the destination exactly as the ledger says;
- a second run over unchanged data makes no write call at all;
- one changed person is the only one sent, with their membership moves;
- consent: nobody is subscribed without a recorded opt-in, and an opt-out made in the
  destination stands through later changes to that person;
- a person deleted at the source leaves the destination;
- a run killed (SIGKILL) between the destination's answer and the acknowledgement, then
  a change at the source, then a re-run, ends exactly like one clean run over the final
  data: memberships the killed push added are removed when the person leaves them, and a
  person deleted after the killed push leaves the destination.

Destinations whose vendor refuses single records also include ``RefusalContract``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest
import sqlalchemy as sa

from crmsync import normalize
from crmsync.errors import RecordError
from crmsync.sample import SampleSpec, write_files
from state import schema
from state.store import Store
from tests.e2e import AS_OF, STORE_NOW, consented, files_source

ROOT = Path(__file__).resolve().parents[1]
CUSTOMERS = 160
PREFIX = "crm-"
LAPSING = ("crm-lapsed", "crm-at-risk")  # groups a new order takes a person out of


@dataclass(frozen=True)
class Contact:
    subscribed: bool  # e-mail marketing
    memberships: frozenset[str]  # owned groups only


class Vendor(Protocol):
    """A destination's fake as the contract sees it."""

    def table(self) -> dict[str, Any]:
        """The ``[destinations.dest]`` table pointing at the fake (secrets via ${ENV})."""
        ...

    def contacts(self) -> dict[str, Contact]:
        """Every contact the destination holds (not archived or deleted), by e-mail."""
        ...

    def writes(self) -> int: ...

    def opt_out(self, email: str) -> None:
        """The person unsubscribes in the destination itself."""
        ...

    def expect_consented(self, emails: Iterable[str]) -> None:
        """Who the fake may see subscribed (it fails the test on anyone else)."""
        ...

    def settle(self) -> None:
        """Lets asynchronous work the vendor still holds finish (a no-op for most)."""
        ...


class RefusingVendor(Vendor, Protocol):
    def refuse(self, email: str, phone: str) -> set[str]:
        """The vendor refuses this person's next write with a per-record error; returns the
        contacts it made at the vendor for that (not crmsync's)."""
        ...


VendorFactory = Callable[[], Vendor]


class StrictFake(Protocol):
    """A vendor fake that records spec violations and consent problems."""

    violations: list[str]

    def stop(self) -> None: ...

    def consent_problems(self) -> list[str]: ...


def strict_fakes(make: Callable[[], tuple[StrictFake, Vendor]]) -> Iterator[VendorFactory]:
    """A ``vendor_factory`` fixture body: each call starts a fake and returns its view; at
    teardown every fake stops, and any spec violation or consent problem fails the test."""
    fakes: list[StrictFake] = []

    def factory() -> Vendor:
        fake, view = make()
        fakes.append(fake)
        return view

    yield factory
    problems = []
    for fake in fakes:
        fake.stop()
        problems += fake.violations + fake.consent_problems()
    assert not problems, "\n".join(problems[:20])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


@dataclass
class ContractSite:
    """A sample store on disk, its config for one destination, and runs of the CLI."""

    root: Path
    config: Path
    data: Path
    state_url: str

    @classmethod
    def make(cls, root: Path, state_url: str, vendor: Vendor) -> ContractSite:
        data = root / "data"
        write_files(SampleSpec(customers=CUSTOMERS, seed=11, now=STORE_NOW), data)
        lines = [f"{key} = {_toml_value(value)}" for key, value in vendor.table().items()]
        config = root / "crmsync.toml"
        config.write_text(
            f"""
[state]
url = "{state_url}"

{files_source(data)}
[destinations.dest]
{chr(10).join(lines)}

[pipelines.main]
sources = ["shop"]
destinations = ["dest"]
workers = 1
""",
            encoding="utf-8",
        )
        return cls(root, config, data, state_url)

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-c",
            "from cli import main; main()",
            *args,
            "--config",
            str(self.config),
        ]

    def run(self) -> dict[str, Any]:
        done = subprocess.run(
            self.command("run", "--as-of", AS_OF, "--json", "--no-progress"),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
            check=False,
        )
        assert done.returncode in (0, 5), done.stderr[-3000:]
        report: dict[str, Any] = json.loads(done.stdout)[0]
        return report

    def run_killed_between_answer_and_ack(self, marker: str, when: str = "before_ack") -> None:
        """A run SIGKILLed right after the destination answered a batch holding a change that
        adds ``marker``: before the answer is recorded (``before_ack``), or just after
        pending jobs were recorded and before they are collected (``after_submit``)."""
        env = {
            **os.environ,
            "CRMSYNC_TEST_KILL_MARKER": marker,
            "CRMSYNC_TEST_KILL_WHEN": when,
        }
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.kill_in_push",
                *self.command("run", "--as-of", AS_OF)[3:],
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=600,
            check=False,
        )
        assert done.returncode == -signal.SIGKILL, (
            f"the run was not killed where asked ({done.returncode}): {done.stderr[-3000:]}"
        )

    # -- the ledger's view --------------------------------------------------------------

    def ledger(self) -> dict[str, frozenset[str]]:
        """E-mail -> owned memberships of everyone the ledger says the destination holds."""
        store = Store(self.state_url)
        t = schema.ledger
        try:
            with store.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(t.c.person_key, t.c.memberships).where(
                        t.c.destination == "dest", t.c.status == "synced"
                    )
                )
                return {
                    key[2:]: frozenset(m for m in groups.split("\n") if m)
                    for key, groups in rows
                    if key.startswith("e:")
                }
        finally:
            store.close()

    def in_flight(self) -> dict[str, tuple[str, ...]]:
        store = Store(self.state_url)
        f = schema.in_flight
        try:
            with store.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(f.c.person_key, f.c.possible).where(f.c.destination == "dest")
                )
                return {key: tuple(p for p in possible.split("\n") if p) for key, possible in rows}
        finally:
            store.close()

    # -- source changes -----------------------------------------------------------------

    def customers(self) -> list[dict[str, str]]:
        with open(self.data / "customers.csv", encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))

    def customer_id(self, email: str) -> str:
        for row in self.customers():
            if row["email"].strip().lower() == email:
                return row["customer_id"]
        raise AssertionError(f"no customer {email}")

    def add_order(self, email: str, total: str = "9000.00") -> None:
        """A new paid order today (before the run's as-of time) for ``email``."""
        order = {
            "id": f"9{len(self.data.joinpath('orders.jsonl').read_text().splitlines()):07d}",
            "customer_id": self.customer_id(email),
            "email": email,
            "created_at": "2026-10-31T12:00:00+03:00",
            "updated_at": "2026-10-31T12:00:00+03:00",
            "status": "paid",
            "currency": "TRY",
            "total_price": total,
            "total_discount": "0.00",
            "total_refunded": "0.00",
            "line_items": [
                {
                    "sku": "X-1",
                    "title": "Saat",
                    "category": "Aksesuar",
                    "quantity": 1,
                    "price": total,
                    "discount": "0.00",
                }
            ],
        }
        with open(self.data / "orders.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(order, ensure_ascii=False) + "\n")

    def delete_customer(self, email: str) -> None:
        rows = self.customers()
        for row in rows:
            if row["email"].strip().lower() == email:
                row["deleted"] = "true"
                row["updated_at"] = "2026-10-31T12:00:00+03:00"
        with open(self.data / "customers.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


class DestinationContract:
    """The scenarios; a subclass provides ``vendor_factory`` (a fixture)."""

    # Whether a push's memberships are at the vendor as soon as it answered (synchronous
    # destinations); an asynchronous one applies them only when its job is collected.
    APPLIED_WHEN_ANSWERED: ClassVar[bool] = True

    @pytest.fixture
    def vendor(self, vendor_factory: VendorFactory) -> Vendor:
        return vendor_factory()

    @pytest.fixture
    def site(self, tmp_path: Path, vendor: Vendor) -> ContractSite:
        site = ContractSite.make(tmp_path / "site", f"sqlite:///{tmp_path / 'state.db'}", vendor)
        vendor.expect_consented(consented(site.data))
        return site

    @staticmethod
    def holds(vendor: Vendor, site: ContractSite, others: frozenset[str] = frozenset()) -> None:
        """The destination holds exactly whom the ledger says (besides ``others``, made
        there by the test), in exactly those groups, and nobody is subscribed without a
        recorded opt-in."""
        vendor.settle()
        contacts = {e: c for e, c in vendor.contacts().items() if e not in others}
        ledger = site.ledger()
        held = {e: c.memberships for e, c in contacts.items()}
        differ = {
            e: (held.get(e), ledger.get(e))
            for e in held.keys() | ledger.keys()
            if held.get(e) != ledger.get(e)
        }
        assert not differ, f"(destination, ledger) differ for: {dict(list(differ.items())[:5])}"
        allowed = consented(site.data)
        unconsented = {e for e, c in contacts.items() if c.subscribed} - allowed
        assert not unconsented, f"subscribed without a recorded opt-in: {sorted(unconsented)[:5]}"

    def test_check_passes_on_a_new_account_with_the_mapping_and_creates_nothing(
        self, vendor: Vendor, site: ContractSite
    ) -> None:
        done = subprocess.run(
            site.command("check"),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "dest (" in done.stdout  # the destination was checked, not only the config
        vendor.settle()
        assert vendor.writes() == 0

    def test_a_first_sync_ends_as_the_ledger_says(self, vendor: Vendor, site: ContractSite) -> None:
        report = site.run()
        counts = report["destinations"]["dest"]
        assert counts["create"] > CUSTOMERS // 2 and counts.get("failed", 0) == 0, counts
        assert counts.get("memberships_added", 0) > 0
        self.holds(vendor, site)
        assert site.in_flight() == {}  # every batch was acknowledged

    def test_a_second_run_over_unchanged_data_writes_nothing(
        self, vendor: Vendor, site: ContractSite
    ) -> None:
        site.run()
        vendor.settle()
        before = vendor.writes()
        counts = site.run()["destinations"]["dest"]
        vendor.settle()
        assert vendor.writes() == before
        assert counts.get("create", 0) == counts.get("update", 0) == 0
        self.holds(vendor, site)

    def test_one_changed_person_is_the_only_one_sent_with_their_moves(
        self, vendor: Vendor, site: ContractSite
    ) -> None:
        site.run()
        lapsing = [e for e, groups in site.ledger().items() if groups & set(LAPSING)]
        assert lapsing, "the sample has nobody at risk or lapsed"
        person = sorted(lapsing)[0]
        site.add_order(person)
        counts = site.run()["destinations"]["dest"]
        assert counts.get("update") == 1 and counts.get("create", 0) == 0, counts
        assert counts.get("memberships_removed", 0) >= 1
        self.holds(vendor, site)
        assert not vendor.contacts()[person].memberships & set(LAPSING)

    def test_an_opt_out_in_the_destination_stands_through_later_changes(
        self, vendor: Vendor, site: ContractSite
    ) -> None:
        site.run()
        vendor.settle()
        subscribed = sorted(e for e, c in vendor.contacts().items() if c.subscribed)
        assert subscribed, "nobody subscribed in the first sync"
        person = subscribed[0]
        vendor.opt_out(person)
        site.add_order(person)
        site.run()
        self.holds(vendor, site)
        assert not vendor.contacts()[person].subscribed

    def test_a_person_deleted_at_the_source_leaves_the_destination(
        self, vendor: Vendor, site: ContractSite
    ) -> None:
        site.run()
        person = sorted(site.ledger())[0]
        site.delete_customer(person)
        counts = site.run()["destinations"]["dest"]
        assert counts.get("archive", 0) + counts.get("delete", 0) == 1, counts
        vendor.settle()
        assert person not in vendor.contacts()
        self.holds(vendor, site)

    @pytest.mark.parametrize("when", ["before_ack"])
    def test_killed_between_answer_and_ack_then_a_source_change_ends_like_a_clean_run(
        self,
        vendor_factory: VendorFactory,
        tmp_path: Path,
        when: str,
    ) -> None:
        self.killed_then_changed(vendor_factory, tmp_path, when)

    @classmethod
    def killed_then_changed(cls, vendor_factory: VendorFactory, tmp_path: Path, when: str) -> None:
        crashed_vendor = vendor_factory()
        crashed = ContractSite.make(
            tmp_path / "crashed", f"sqlite:///{tmp_path / 'crashed.db'}", crashed_vendor
        )
        crashed_vendor.expect_consented(consented(crashed.data))
        crashed.run_killed_between_answer_and_ack("crm-lapsed", when)
        flying = crashed.in_flight()
        taken = sorted(k[2:] for k, groups in flying.items() if "crm-lapsed" in groups)
        others = sorted(k[2:] for k in flying if k.startswith("e:") and k[2:] not in taken)
        assert taken and others, f"the kill did not leave the batch in flight: {flying}"
        leaver, deleted = taken[0], others[0]
        crashed_vendor.settle()
        applied = "crm-lapsed" in crashed_vendor.contacts()[leaver].memberships
        assert applied is cls.APPLIED_WHEN_ANSWERED
        # the source changes before the next run: one leaves the group, one is deleted
        for site in (crashed,):
            site.add_order(leaver)
            site.delete_customer(deleted)
        crashed.run()

        clean_vendor = vendor_factory()
        clean = ContractSite.make(
            tmp_path / "clean", f"sqlite:///{tmp_path / 'clean.db'}", clean_vendor
        )
        clean_vendor.expect_consented(consented(clean.data))
        clean.add_order(leaver)
        clean.delete_customer(deleted)
        clean.run()

        cls.holds(crashed_vendor, crashed)
        crashed_vendor.settle()
        clean_vendor.settle()
        assert crashed_vendor.contacts() == clean_vendor.contacts()
        assert "crm-lapsed" not in crashed_vendor.contacts()[leaver].memberships
        assert deleted not in crashed_vendor.contacts()
        assert crashed.in_flight() == {}


class RefusalContract:
    """For vendors that refuse single records: one refusal fails that person alone, is kept
    with its reason, and the rest of the batch is acknowledged."""

    def test_a_refused_person_fails_alone_and_is_named(
        self, vendor: RefusingVendor, site: ContractSite
    ) -> None:
        phones = {}
        for row in site.customers():
            try:
                phones[normalize.email(row["email"])] = normalize.phone(row["phone"])
            except RecordError:
                continue
        person = sorted(e for e in consented(site.data) if phones.get(e))[0]
        seeded = vendor.refuse(person, phones[person] or "")
        report = site.run()
        counts = report["destinations"]["dest"]
        refused = sum(counts.get(k, 0) for k in ("rejected", "compliance", "failed"))
        assert refused == 1, counts
        assert person not in site.ledger()
        store = Store(site.state_url)
        f = schema.failures
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(f.c.person_key, f.c.message)).all()
        store.close()
        assert [key for key, _ in rows] == [f"e:{person}"]
        assert rows[0][1]  # the vendor's reason is kept
        DestinationContract.holds(vendor, site, frozenset(seeded))


def iter_outbox(directory: Path) -> Iterator[dict[str, Any]]:
    """Every outbox record in the order it was written (file by file, oldest first)."""
    for path in sorted(directory.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)
