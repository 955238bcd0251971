"""The whole flow through the CLI, on SQLite and PostgreSQL: files -> profiles -> outbox."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e import AS_OF, Site, edit_order, make_site


def changes(report: dict[str, object]) -> int:
    counts = report["destinations"]["out"]  # type: ignore[index]
    return sum(counts.get(k, 0) for k in ("create", "update", "archive"))


def test_first_run_syncs_everyone_and_the_second_sends_nothing(
    tmp_path: Path, state_url: str
) -> None:
    site = make_site(tmp_path, state_url)
    first = site.run_json()
    assert first["status"] == "succeeded"
    created = first["destinations"]["out"]["create"]
    assert created == len(site.records()) > 250
    keys = [r["person_key"] for r in site.records()]
    assert len(keys) == len(set(keys))  # nobody twice
    written = {p.name: p.read_bytes() for p in site.outbox.iterdir()}

    second = site.run_json()
    assert changes(second) == 0
    assert second["destinations"]["out"]["unchanged"] == created
    # nothing written to the outbox: no batch, no run summary, no file touched
    assert {p.name: p.read_bytes() for p in site.outbox.iterdir()} == written


def test_one_changed_order_sends_exactly_that_person_with_tag_moves(
    tmp_path: Path, state_url: str
) -> None:
    site = make_site(tmp_path, state_url)
    site.run_json()
    person, order_id = _repeat_buyer_with_recent_order(site)
    files = site.batch_files()

    edit_order(
        site.data / "orders.jsonl",
        order_id,
        total_price="25000.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    report = site.run_json()
    new = site.records_in(site.batch_files() - files)
    assert changes(report) == 1 and [r["person_key"] for r in new] == [person]
    assert (new[0]["memberships_add"], new[0]["memberships_remove"]) == (
        ["crm-vip"],
        [],
    )  # big spender now
    assert new[0]["is_new"] is False

    files = site.batch_files()
    edit_order(
        site.data / "orders.jsonl",
        order_id,
        status="cancelled",
        updated_at="2026-10-31T13:00:00+03:00",
    )
    report = site.run_json()
    new = site.records_in(site.batch_files() - files)
    assert changes(report) == 1 and [r["person_key"] for r in new] == [person]
    # one counted order left, placed long ago: no longer a repeat buyer, a vip or at risk
    assert new[0]["memberships_add"] == ["crm-lapsed"]
    assert new[0]["memberships_remove"] == ["crm-at-risk", "crm-repeat", "crm-vip"]


def _repeat_buyer_with_recent_order(site: Site) -> tuple[str, str]:
    """A subscribed-or-not customer with exactly two counted orders, one in the last year."""
    records = {r["person_key"]: r for r in site.records()}
    orders: dict[str, list[dict[str, object]]] = {}
    for line in (site.data / "orders.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            order = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(order, dict) and order.get("email"):
            orders.setdefault(str(order["email"]).lower(), []).append(order)
    for email, placed in sorted(orders.items()):
        key = f"e:{email}"
        counted = [o for o in placed if o.get("status") not in ("cancelled", "refunded")]
        record = records.get(key)
        if record is None or len(counted) != 2 or len(placed) != 2:
            continue
        tags = set(record["memberships_add"])  # type: ignore[arg-type]
        recent = [o for o in counted if str(o["created_at"]) >= "2026-02-01"]
        if "crm-repeat" in tags and "crm-vip" not in tags and recent:
            return key, str(recent[0]["id"])
    raise AssertionError("the sample store has no two-order customer to edit")


def test_bad_input_is_quarantined_with_reasons_and_the_rest_synced(
    tmp_path: Path, state_url: str
) -> None:
    site = make_site(tmp_path, state_url, customers=400, dirty_rate=0.2)
    report = site.run_json()
    quarantined = sum(s["quarantined"] for s in report["pulled"].values())
    assert quarantined > 0
    assert changes(report) > 300

    status = site.cli("status", "--json", "--limit", "500")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)[0]
    reasons = [q["reason"] for q in data["quarantine"]["recent"]]
    assert data["quarantine"]["counts"]["quarantined"] == len(
        [q for q in data["quarantine"]["recent"] if q["action"] == "quarantined"]
    )
    assert all(reason.strip() for reason in reasons)
    assert all(q["field"] or "line" in q["reason"] for q in data["quarantine"]["recent"])
    text = site.cli("status").stdout
    assert "quarantined" in text and reasons[0] in text


def test_plan_writes_nothing_and_matches_the_run(tmp_path: Path, state_url: str) -> None:
    site = make_site(tmp_path, state_url)
    plan = site.cli("plan", "--as-of", AS_OF, "--json")
    assert plan.exit_code == 0, plan.output
    planned = json.loads(plan.stdout)[0]
    assert planned["dry_run"] is True and site.batch_files() == set()
    report = site.run_json()
    for key in (
        "create",
        "update",
        "unchanged",
        "memberships_added",
        "memberships_removed",
        "invalid",
    ):
        assert planned["destinations"]["out"].get(key) == report["destinations"]["out"].get(key)
    assert len(planned["samples"]["out"]) == 5


CORPUS = Path(__file__).parent / "data" / "bad_input"


def test_the_bad_input_corpus_ends_quarantined_or_normalised_and_the_rest_synced(
    tmp_path: Path, state_url: str
) -> None:
    site = make_site(tmp_path, state_url, customers=0)
    for name in ("customers.csv", "orders.jsonl", "carts.jsonl"):
        (site.data / name).write_bytes((CORPUS / name).read_bytes())
    report = site.run_json()
    assert report["status"] == "succeeded"
    status = json.loads(site.cli("status", "--json", "--limit", "100").stdout)[0]
    issues = {
        (q["stream"], q["external_id"], q["field"], q["action"]): q["reason"]
        for q in status["quarantine"]["recent"]
    }
    expected = {
        ("customers", "200002", "email", "quarantined"): "invalid e-mail address",
        ("customers", None, "customer_id", "quarantined"): "missing identifier",
        ("customers", "200005", "created_at", "quarantined"): "unparseable date/time",
        ("customers", "200007", "first_name", "corrected"): "truncated from 10000 to 255",
        ("customers", "200011", "email", "quarantined"): "Internationalized characters",
        ("customers", "200012", "phone", "corrected"): "invalid phone number",  # cleared, kept
        ("customers", "200014", "accepts_email_marketing", "quarantined"): "unknown consent",
        ("orders", "500002", "line_items[0].quantity", "quarantined"): "must be positive",
        ("orders", "500004", "currency", "quarantined"): "unknown ISO 4217 currency",
        ("orders", "500007", "created_at", "quarantined"): "unparseable date/time",
        ("orders", "500009", "status", "quarantined"): "unknown order status",
        ("orders", "500011", "line_items[1].price", "quarantined"): "not a number",
        ("carts", "700002", "total_price", "quarantined"): "negative amount",
        ("carts", "700004", "completed_at", "quarantined"): "expected true/false",
    }
    expected[("orders", None, "id", "quarantined")] = "missing identifier"
    for key, words in expected.items():
        assert key in issues, f"{key} missing from status: {sorted(issues, key=str)}"
        assert words in issues[key], (key, issues[key])
    structural = sorted(
        q["reason"]
        for q in status["quarantine"]["recent"]
        if q["external_id"] is None and not q["field"]
    )
    starts = [
        "line 14: the row has 3 fields but the header has 16",
        "line 5: malformed JSON",
        "line 8: expected a JSON object, got list",
    ]
    assert len(structural) == len(starts)
    assert all(r.startswith(start) for r, start in zip(structural, starts, strict=True))
    assert len(status["quarantine"]["recent"]) == len(expected) + len(structural)  # no more

    keys = [r["person_key"] for r in site.records()]
    assert len(keys) == len(set(keys))  # nobody twice
    assert set(keys) == {  # every good record, including the corrected and the guest
        "e:ayse.yilmaz@example.com",
        "e:cem.dogan@example.com",  # its unparseable phone cleared, not the whole customer
        "e:emre.ozturk@example.com",
        "e:fatma.demir@example.org",
        "e:hatice.arslan@example.com",
        "e:ibrahim@example.com",
        "e:mehmet.kaya@example.com",
        "e:misafir.alici@example.net",
        "p:+905455556677",
    }
    ibrahim = next(r for r in site.records() if r["person_key"] == "e:ibrahim@example.com")
    assert ibrahim["fields"]["orders_count"] >= 1  # the guest order joined by e-mail
    assert report["destinations"]["out"].get("invalid", 0) == 1  # no e-mail, no phone
    text = site.cli("status", "--limit", "100").stdout
    assert "invalid e-mail address" in text and "truncated from 10000" in text
