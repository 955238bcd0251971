"""Every record not synced is named, and a run's counts add up to what was read.

A sample store with a fifth of its records dirty, plus one record of each kind that
cannot be synced (no identity, a phone but no e-mail, an order of a customer never read
or quarantined, guests without an e-mail, another currency, changes after the run
began), read by a pipeline with three destinations: one that takes an e-mail or a phone,
one that needs an e-mail and one that needs a phone. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.outbox import OutboxDestination
from crmsync.not_synced import Reason
from crmsync.profile_scope import EVERYONE
from crmsync.records import IssueAction, RecordIssue, Stream
from engine import plan_run
from state import not_synced, schema
from state.profile_reads import execute, linked_away_query
from state.store import Store
from tests.builders import customer
from tests.e2e import AS_OF, Site, config_text, make_site, set_once_returned

ROOT = Path(__file__).resolve().parent.parent
OUTBOX_MAPPING = ROOT / "connectors" / "outbox" / "mapping.toml"
DESTINATIONS = ("out", "emails", "phones")
PERSON_REASONS = {
    Reason.NO_IDENTITY,
    Reason.NO_EMAIL,
    Reason.NO_PHONE,
    Reason.UNKNOWN_CUSTOMER,
    Reason.CUSTOMER_QUARANTINED,
}
LATER = "2026-11-20T10:00:00+03:00"  # after the run's --as-of: left for the next run
WHEN = {"created_at": "2026-10-01T14:30:00+03:00", "updated_at": "2026-10-03T09:00:00+03:00"}

# (reason, stream, id) of the records added to the sample below, with what they lack
ADDED = {
    (Reason.NO_IDENTITY, "customers", "800001"),
    (Reason.NO_IDENTITY, "orders", "800101"),  # the order of that customer
    (Reason.NO_EMAIL, "customers", "800002"),
    (Reason.CUSTOMER_QUARANTINED, "orders", "800103"),
    (Reason.UNKNOWN_CUSTOMER, "orders", "800102"),
    (Reason.UNKNOWN_CUSTOMER, "carts", "800202"),
    (Reason.GUEST_NO_EMAIL, "orders", "800104"),
    (Reason.GUEST_NO_EMAIL, "carts", "800201"),
    (Reason.OTHER_CURRENCY, "orders", "800105"),
    (Reason.OTHER_CURRENCY, "carts", "800203"),
}


def _site(root: Path, state_url: str, workers: int | None = None) -> Site:
    site = make_site(root, state_url, customers=300, dirty_rate=0.2, workers=workers)
    text = config_text(state_url, site.data, site.outbox_root, workers=workers)
    mapping = OUTBOX_MAPPING.read_text(encoding="utf-8")
    for name, identity in (("emails", 'email = "email"'), ("phones", 'phone = "phone"')):
        path = root / f"{name}.toml"
        path.write_text(
            mapping.replace('email = "email"\nphone = "phone"', identity), encoding="utf-8"
        )
        text += (
            f'\n[destinations.{name}]\nkind = "outbox"\ndirectory = "{site.outbox_root}"\n'
            f'mapping = "{path}"\n'
        )
    text = text.replace('destinations = ["out"]', f"destinations = {json.dumps(DESTINATIONS)}")
    site.config.write_text(text, encoding="utf-8")
    _add_bad_records(site)
    return site


def _add_bad_records(site: Site) -> None:
    with open(site.data / "customers.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    known = next(r["customer_id"] for r in rows if r["customer_id"] and r["email"])
    base = {**rows[0], "deleted": "false", "updated_at": WHEN["updated_at"]}
    added = [
        {**base, "customer_id": "800001", "email": "", "phone": ""},
        {**base, "customer_id": "800002", "email": "", "phone": "0555 000 00 01"},
        {**base, "customer_id": "800003", "email": "not an address", "phone": ""},
        {**base, "customer_id": "800004", "email": "later@example.com", "updated_at": LATER},
    ]
    with open(site.data / "customers.csv", "a", encoding="utf-8", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerows(added)
    order = {
        **WHEN,
        "status": "paid",
        "currency": "TRY",
        "total_price": "100.00",
        "total_discount": "0.00",
        "total_refunded": "0.00",
        "line_items": [
            {"sku": "X", "title": "X", "category": "X", "quantity": 1, "price": "100.00"}
        ],
    }
    orders = [
        {**order, "id": "800101", "customer_id": "800001", "email": None},
        {**order, "id": "800102", "customer_id": "899999", "email": None},
        {**order, "id": "800103", "customer_id": "800003", "email": None},
        {**order, "id": "800104", "customer_id": None, "email": None},
        {**order, "id": "800105", "customer_id": known, "email": None, "currency": "EUR"},
        {**order, "id": "800106", "customer_id": known, "email": None, "updated_at": LATER},
    ]
    cart = {**WHEN, "completed_at": None, "currency": "TRY", "total_price": "50.00"}
    cart.update(abandoned_checkout_url="https://shop.example.com/c", line_items=[])
    carts = [
        {**cart, "id": "800201", "customer_id": None, "email": None},
        {**cart, "id": "800202", "customer_id": "899998", "email": None},
        {**cart, "id": "800203", "customer_id": known, "email": None, "currency": "EUR"},
        {**cart, "id": "800204", "customer_id": known, "email": None, "total_price": "-5.00"},
    ]
    for name, added_rows in (("orders.jsonl", orders), ("carts.jsonl", carts)):
        with open(site.data / name, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in added_rows)


def _read(site: Site) -> dict[str, int]:
    """How many items each export holds: CSV rows, JSON lines (bad ones included)."""
    with open(site.data / "customers.csv", encoding="utf-8", newline="") as handle:
        customers = sum(1 for _ in csv.reader(handle)) - 1
    counts = {"shop.customers": customers}
    for stream in ("orders", "carts"):
        text = (site.data / f"{stream}.jsonl").read_text(encoding="utf-8")
        counts[f"shop.{stream}"] = sum(1 for line in text.splitlines() if line.strip())
    return counts


def _status(site: Site, limit: int = 100_000) -> dict[str, Any]:
    result = site.cli("status", "--json", "--limit", str(limit))
    assert result.exit_code == 0, result.output
    status: dict[str, Any] = json.loads(result.stdout)[0]
    return status


def _named(status: dict[str, Any]) -> list[dict[str, Any]]:
    reasons = status["not_synced"]["reasons"]
    return [r for reason in reasons for r in reason["records"]]


def _assert_adds_up(report: dict[str, Any], read: dict[str, int]) -> None:
    for stream, s in report["pulled"].items():
        assert s["received"] == read[stream], (stream, s)  # every item read is counted
        assert s["received"] == s["staged"] + s["unchanged"] + s["quarantined"] + s["later"]
        assert s["corrected"] <= s["staged"] + s["unchanged"], (stream, s)
    for name in DESTINATIONS:  # one decision per person: a change, unchanged or a skip
        people = report["people"][name]
        assert sum(people.values()) == report["profiles"], (name, people)


def test_every_count_adds_up_and_every_record_not_synced_is_named(
    tmp_path: Path, state_url: str
) -> None:
    site = _site(tmp_path, state_url)
    read = _read(site)
    first = site.run_json()
    _assert_adds_up(first, read)
    pulled = first["pulled"]
    assert all(pulled[f"shop.{s}"]["quarantined"] for s in ("customers", "orders", "carts"))
    assert pulled["shop.customers"]["corrected"] and pulled["shop.customers"]["later"] == 1
    assert pulled["shop.orders"]["later"] == 1

    status = _status(site)
    named = _named(status)
    counts = {r["reason"]: r["count"] for r in status["not_synced"]["reasons"]}
    assert set(counts) == {r.value for r in Reason}  # every kind, each counted
    assert counts == {r["reason"]: r["count"] for r in first["not_synced"]["reasons"]}
    assert counts["quarantined"] <= sum(s["quarantined"] for s in pulled.values())
    assert status["not_synced"]["run_id"] == first["run_id"]
    assert {(r["reason"], r["stream"], r["key"]) for r in named} >= {
        (reason.value, stream, key) for reason, stream, key in ADDED
    }
    # a person skipped as invalid is named by every record it has, for that destination
    for name in DESTINATIONS:
        keys = {
            r["person_key"]
            for r in named
            if r["reason"] in PERSON_REASONS and name in r["destinations"]
        }
        assert len(keys) == first["people"][name].get("invalid", 0), name
    _assert_nothing_unnamed(site, state_url, named)

    second = site.run_json()  # nothing new: everything unchanged, named the same
    # an export unchanged since a complete read that left nothing for later is not read
    # again (its stream counts nothing); customers and orders each left one for later
    skipped = {stream for stream, s in second["pulled"].items() if s.get("not_read")}
    assert skipped == {"shop.carts"}
    assert second["pulled"]["shop.carts"]["received"] == 0
    _assert_adds_up(second, {k: 0 if k in skipped else n for k, n in read.items()})
    assert all(s["staged"] == 0 for s in second["pulled"].values())
    again = _status(site)
    assert _named(again) == named and again["not_synced"]["run_id"] == second["run_id"]


def test_a_first_naming_reads_the_records_once_and_the_same_set_is_not_written_again(
    tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline's first run writes the records it left out as it reads them, in one
    pass. A run that plans everyone again reads them once for their digest and, finding
    the set the last run named, writes nothing but its own run id."""
    calls = {"records": 0, "replace": 0}
    for name in calls:
        real = getattr(not_synced, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(not_synced, name, counted)
    site = _site(tmp_path, state_url)
    first = site.run_json()
    assert calls == {"records": 1, "replace": 1}
    named = _named(_status(site))
    assert len(named) == first["not_synced"]["total"]
    assert {(r["reason"], r["stream"], r["key"]) for r in named} >= {
        (reason.value, stream, key) for reason, stream, key in ADDED
    }

    result = site.cli("backfill", "--pipeline", "main", "--full", "--as-of", AS_OF, "--json")
    assert result.exit_code in (0, 5), result.output
    again = json.loads(result.stdout)[0]
    assert again["planning"].startswith("everyone")
    assert calls == {"records": 2, "replace": 1}
    status = _status(site)
    assert _named(status) == named and status["not_synced"]["run_id"] == again["run_id"]


def _assert_nothing_unnamed(site: Site, state_url: str, named: list[dict[str, Any]]) -> None:
    """Every staged record reached each destination (its person is in that destination's
    ledger, or joined a person who is), or is named for it, or was never meant to go:
    a converted cart, or the record of a person deleted at the source."""
    store = Store(state_url)
    try:
        with store.engine.connect() as conn:
            ledger = {
                name: set(
                    conn.execute(
                        sa.select(schema.ledger.c.person_key).where(
                            schema.ledger.c.destination == name
                        )
                    ).scalars()
                )
                for name in DESTINATIONS
            }
            away = linked_away_query(conn, _context(), EVERYONE)
            linked = {row[0] for row in execute(conn, away)}
            c = schema.customers
            deleted = set(
                conn.execute(
                    sa.select(c.c.person_key)
                    .group_by(c.c.person_key)
                    .having(sa.func.min(sa.case((c.c.deleted, 1), else_=0)) == 1)
                ).scalars()
            )
            staged = [
                ("customers", row.external_id, row.person_key)
                for row in conn.execute(sa.select(c.c.external_id, c.c.person_key))
            ]
            for stream, table in (("orders", schema.orders), ("carts", schema.carts)):
                query = sa.select(table.c.external_id, table.c.person_key)
                if stream == "carts":
                    query = query.where(table.c.converted == sa.false())
                staged += [(stream, r.external_id, r.person_key) for r in conn.execute(query)]
    finally:
        store.close()
    everywhere = {
        (r["stream"], r["key"])
        for r in named
        if r["reason"] in (Reason.GUEST_NO_EMAIL, Reason.OTHER_CURRENCY)
    }
    for name in DESTINATIONS:
        for_it = {(r["stream"], r["key"]) for r in named if name in r["destinations"]}
        missing = [
            (stream, key, person)
            for stream, key, person in staged
            if person not in ledger[name]
            and person not in linked
            and person not in deleted
            and (stream, key) not in for_it | everywhere
        ]
        assert missing == [], name
    assert ledger["emails"] != ledger["phones"]  # the two identities did differ


def _context() -> Any:
    from crmsync.config import ProfileSettings
    from crmsync.profile_scope import ProfileContext

    return ProfileContext(("shop",), ("shop", *DESTINATIONS), "TRY", 0, ProfileSettings())


def test_plan_names_what_the_run_leaves_out_and_records_nothing(
    tmp_path: Path, state_url: str
) -> None:
    site = _site(tmp_path, state_url)
    result = site.cli("plan", "--as-of", AS_OF, "--json", "--not-synced", "3")
    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)[0]["not_synced"]
    assert _status(site)["not_synced"]["run_id"] is None  # a dry run stores no names
    assert all(len(reason["records"]) <= 3 for reason in planned["reasons"])

    site.run_json()
    stored = _status(site, limit=3)["not_synced"]
    assert stored["total"] == planned["total"]
    assert [(r["reason"], r["count"]) for r in stored["reasons"]] == [
        (r["reason"], r["count"]) for r in planned["reasons"]
    ]

    text = site.cli("plan", "--as-of", AS_OF, "--no-pull").stdout
    assert "not synced:" in text and "shop.orders 800102 (customer 899999)" in text


def test_status_names_the_first_records_of_each_reason_with_what_to_do(
    tmp_path: Path, state_url: str
) -> None:
    from crmsync.not_synced import EXPLANATIONS

    site = _site(tmp_path, state_url)
    site.run_json()
    status = _status(site, limit=1)
    for reason in status["not_synced"]["reasons"]:
        assert len(reason["records"]) == 1 and reason["count"] >= 1
        assert reason["hint"] == EXPLANATIONS[Reason(reason["reason"])].hint

    text = site.cli("status", "--limit", "1").stdout
    section = text[text.index("  not synced (run #") :]
    for reason in Reason:
        assert f"    {reason.value} " in section
        assert EXPLANATIONS[reason].hint in section
    for reason in status["not_synced"]["reasons"]:
        if reason["reason"] == "quarantined":
            continue  # listed under quarantine, with the problem
        first = reason["records"][0]
        assert f"      {first['source']}.{first['stream']} {first['key']}" in section
        assert (f"... {reason['count'] - 1} more" in section) == (reason["count"] > 1)
    assert "(not sent to emails)" in section  # a phone but no e-mail: only that one missed it


def test_a_fixed_record_is_no_longer_named_after_the_next_run(
    tmp_path: Path, state_url: str
) -> None:
    site = _site(tmp_path, state_url)
    site.run_json()

    def reasons(stream: str, key: str) -> dict[str, list[str]]:
        named = _named(_status(site))
        return {
            r["reason"]: r["destinations"]
            for r in named
            if (r["stream"], r["key"]) == (stream, key)
        }

    assert reasons("customers", "800001") == {"no_identity": sorted(DESTINATIONS)}
    found = {"email": "found@example.com", "updated_at": "2026-10-04T09:00:00+03:00"}
    _rewrite_customers(site, {"800001": found})
    report = site.run_json()
    assert report["people"]["out"]["create"] == report["people"]["emails"]["create"] == 1
    # now only the destination that needs a phone misses the customer, and its order
    assert reasons("customers", "800001") == reasons("orders", "800101") == {"no_phone": ["phones"]}


def test_workers_name_the_same_records_as_one_process(tmp_path: Path) -> None:
    one = _site(tmp_path / "one", f"sqlite:///{tmp_path / 'one.db'}")
    one.run_json()
    two = _site(tmp_path / "two", f"sqlite:///{tmp_path / 'two.db'}", workers=2)
    two.run_json()
    assert _named(_status(two)) == _named(_status(one))


def test_staging_counts_each_quarantined_row_as_read_and_each_corrected_record_once(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    fixed = customer("1", email="a@example.com")
    issues = [
        RecordIssue(Stream.CUSTOMERS, "1", IssueAction.CORRECTED, "first_name truncated", "a"),
        RecordIssue(Stream.CUSTOMERS, "1", IssueAction.CORRECTED, "last_name truncated", "b"),
        RecordIssue(Stream.CUSTOMERS, "2", IssueAction.QUARANTINED, "bad e-mail", "email"),
        RecordIssue(Stream.CUSTOMERS, None, IssueAction.QUARANTINED, "line 3: malformed"),
    ]
    stats = store.stage("shop", Stream.CUSTOMERS, [fixed, fixed], issues)
    assert (stats.received, stats.staged, stats.unchanged, stats.quarantined) == (4, 1, 1, 2)
    assert stats.corrected == 1 and stats.adds_up()
    store.close()


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_says_what_it_means_and_what_to_do(reason: Reason) -> None:
    from crmsync.not_synced import EXPLANATIONS

    assert EXPLANATIONS[reason].what and EXPLANATIONS[reason].hint


def test_the_records_left_out_are_named_while_the_last_batch_is_pushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The names follow from the planning alone, so a run names them while its last,
    part-filled batch is on the wire instead of after it (a first sync of 100,000
    customers: 0.4 s of naming in the 1.6 s its last batches took). The batch is held
    until the names are kept; named after the batch, it would wait in vain."""
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", dirty_rate=0.2)
    named = set_once_returned(monkeypatch, plan_run, "name_not_synced")
    held: list[bool] = []
    push = OutboxDestination.push

    def push_once_named(self: OutboxDestination, changes: Any) -> Any:
        if len(changes) < self.max_batch:  # the run's last, part-filled batch
            held.append(named.wait(10))
        return push(self, changes)

    monkeypatch.setattr(OutboxDestination, "push", push_once_named)
    report = site.run_json()
    assert held == [True]
    assert report["status"] == "succeeded" and report["not_synced"]["total"] > 0
    assert report["destinations"]["out"]["ok"] == len(site.records()) > 0


def _rewrite_customers(site: Site, changes: dict[str, dict[str, str]]) -> None:
    """Rewrites the customers export with ``changes`` per customer id (new ids added)."""
    path = site.data / "customers.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.update(changes.pop(row["customer_id"], {}))
    rows += [{**rows[0], "customer_id": key, **row} for key, row in changes.items()]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _all_named(site: Site) -> list[tuple[Any, ...]]:
    fields = ("reason", "source", "stream", "key", "person_key", "customer_id")
    return sorted((*(r[f] for f in fields), *r["destinations"]) for r in _named(_status(site)))


def test_a_run_that_plans_some_people_again_names_what_a_clean_run_over_its_data_names(
    tmp_path: Path, state_url: str
) -> None:
    """An incremental run names again only the people it planned again, and what every
    run names anew; the source changes every way a name can: a record fixed, a customer
    losing its e-mail and phone, a quarantined customer fixed, a never-read customer
    arriving quarantined (its order's reason changes while its person is not planned
    again), a new guest order and an order in another currency. Compared with one clean
    run over the final data."""
    site = _site(tmp_path / "site", state_url)
    site.run_json()
    before = _all_named(site)
    with open(site.data / "customers.csv", encoding="utf-8", newline="") as handle:
        good = [r for r in csv.DictReader(handle) if r["email"] and r["deleted"] == "false"]
    broken, kept = good[-1]["customer_id"], good[-2]["customer_id"]
    later = {"updated_at": "2026-10-05T09:00:00+03:00"}
    _rewrite_customers(
        site,
        {
            "800001": {"email": "found@example.com", **later},
            broken: {"email": "", "phone": "", **later},
            "800003": {"email": "fixed@example.com", **later},
            "899999": {"email": "not an address", "phone": "", **later},
        },
    )
    order = json.loads((site.data / "orders.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    added = [
        {**order, "id": "800301", "customer_id": None, "email": None, **later},
        {**order, "id": "800302", "customer_id": kept, "currency": "EUR", **later},
    ]
    with open(site.data / "orders.jsonl", "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in added)

    second = site.run_json()
    assert second["planning"] == "incremental" and second["profiles_kept"] > 0
    named = _all_named(site)
    assert named != before
    reasons = {(r[2], r[3]): r[0] for r in named}
    assert reasons[("orders", "800102")] == Reason.CUSTOMER_QUARANTINED
    # fixed with an e-mail but no phone: missed only by the destination that needs one
    assert reasons[("orders", "800103")] == reasons[("customers", "800001")] == Reason.NO_PHONE
    assert reasons[("customers", broken)] == Reason.NO_IDENTITY
    assert reasons[("orders", "800301")] == Reason.GUEST_NO_EMAIL
    assert reasons[("orders", "800302")] == Reason.OTHER_CURRENCY

    clean = _site(tmp_path / "clean", f"sqlite:///{tmp_path / 'clean.db'}")
    for name in ("customers.csv", "orders.jsonl", "carts.jsonl"):
        (clean.data / name).write_bytes((site.data / name).read_bytes())
    once = clean.run_json()
    assert named == _all_named(clean)
    assert second["not_synced"] == once["not_synced"]  # the same counts and first records
    assert (
        _status(site, limit=3)["not_synced"]["reasons"]
        == (_status(clean, limit=3)["not_synced"]["reasons"])
    )


def _random_changes(site: Site, rng: random.Random, turn: int) -> None:
    """A round of changes to the exports, each kind that moves a name: an e-mail given or
    taken, both identities taken, a phone shared with another customer (the e-mail-less
    customer joins that person), a customer deleted, a never-read customer arriving
    quarantined with orders, a guest order, an order in another currency."""
    # after every staged version (the newest wins), before the runs' as_of
    when = {"updated_at": f"2026-11-01T11:5{turn}:00+03:00"}
    with open(site.data / "customers.csv", encoding="utf-8", newline="") as handle:
        live = [r for r in csv.DictReader(handle) if r["deleted"] == "false"]
    kinds = [
        lambda: {"email": f"new{turn}.{rng.randrange(10**6)}@example.com"},
        lambda: {"email": ""},
        lambda: {"email": "", "phone": ""},
        lambda: {"email": "", "phone": rng.choice(live)["phone"]},
        lambda: {"deleted": "true"},
    ]
    changes = {
        row["customer_id"]: {**kinds[index % len(kinds)](), **when}
        for index, row in enumerate(rng.sample(live, 15))
    }
    arriving = f"87{turn}001"
    changes[arriving] = {"email": "not an address", "phone": "", **when}
    _rewrite_customers(site, changes)
    lines = (site.data / "orders.jsonl").read_text(encoding="utf-8").splitlines()
    order = {**json.loads(lines[-1]), **when, "created_at": when["updated_at"]}
    added = [
        {**order, "id": f"87{turn}101", "customer_id": arriving, "email": None},
        {**order, "id": f"87{turn}102", "customer_id": None, "email": None},
        {**order, "id": f"87{turn}103", "customer_id": rng.choice(live)["customer_id"]}
        | {"currency": "EUR"},
    ]
    with open(site.data / "orders.jsonl", "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in added)


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_runs_after_random_changes_name_what_one_clean_run_names(
    tmp_path: Path, state_url: str, seed: int
) -> None:
    """Three rounds of random changes, each followed by an incremental run that names only
    its scope's records again; then the names equal those of one clean run over the
    final data. Quarantined rows are left out of the comparison: runs do not name them
    (they are the quarantine's), and a malformed line that the rewritten export no
    longer holds stays there under its old digest."""
    site = _site(tmp_path / "site", state_url)
    site.run_json()
    rng = random.Random(seed)
    for turn in range(3):
        _random_changes(site, rng, turn)
        assert site.run_json()["planning"] == "incremental"
    clean = _site(tmp_path / "clean", f"sqlite:///{tmp_path / 'clean.db'}")
    for name in ("customers.csv", "orders.jsonl", "carts.jsonl"):
        (clean.data / name).write_bytes((site.data / name).read_bytes())
    clean.run_json()
    named = [r for r in _all_named(site) if r[0] != Reason.QUARANTINED]
    assert named == [r for r in _all_named(clean) if r[0] != Reason.QUARANTINED]
    assert {r[0] for r in named} > {Reason.NO_IDENTITY, Reason.NO_EMAIL, Reason.OTHER_CURRENCY}


def test_a_dry_run_after_a_change_names_it_without_waiting_on_rows_a_run_holds(
    tmp_path: Path, postgres_url: str
) -> None:
    """`plan` names what it would leave out without writing: beside a run of the same
    pipeline (no lease keeps them apart) a renaming would wait on the rows that run
    holds, and could deadlock with it. Here a transaction holds every name. PostgreSQL:
    on SQLite a dry run's staging waits for any writer, the names aside."""
    state_url = postgres_url
    site = _site(tmp_path, state_url)
    site.run_json()
    before = _status(site)["not_synced"]
    with open(site.data / "customers.csv", encoding="utf-8", newline="") as handle:
        broken = next(r for r in csv.DictReader(handle) if r["email"] and r["phone"])
    later = "2026-11-01T11:50:00+03:00"
    changes = {broken["customer_id"]: {"email": "", "phone": "", "updated_at": later}}
    _rewrite_customers(site, changes)

    store = Store(state_url)
    holder = store.engine.connect()
    holder.execute(sa.delete(schema.not_synced))  # as a run renaming, not yet committed
    results: list[Any] = []
    command = ("plan", "--as-of", AS_OF, "--json", "--not-synced", "100000")
    planning = threading.Thread(target=lambda: results.append(site.cli(*command)))
    planning.start()
    try:
        planning.join(30)
        assert not planning.is_alive(), "the dry run waited on the held rows"
    finally:
        holder.rollback()
        holder.close()
        planning.join()
        store.close()
    assert results[0].exit_code == 0, results[0].output
    planned = json.loads(results[0].stdout)[0]
    assert planned["planning"] == "incremental"
    named = {(r["stream"], r["key"]) for r in _named(planned)}
    assert ("customers", broken["customer_id"]) in named
    # and everyone else's, as the last run named them (those people were not planned)
    assert {(r["stream"], r["key"]) for r in _named({"not_synced": before})} <= named
    assert planned["not_synced"]["total"] > before["total"]
    assert _status(site)["not_synced"] == before
