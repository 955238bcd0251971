"""``plan --person EMAIL``: one person's profile, segments and, per destination, the
decision and the exact payload a run sends, from the staged data, writing nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.e2e import AS_OF, Site, make_site


def _person(site: Site, email: str, *extra: str) -> tuple[int, str]:
    result = site.cli("plan", "--person", email, "--as-of", AS_OF, *extra)
    return result.exit_code, result.output


def _plan_json(site: Site, email: str) -> dict[str, Any]:
    code, out = _person(site, email, "--json")
    assert code == 0, out
    people: list[dict[str, Any]] = json.loads(out)
    assert len(people) == 1
    return people[0]


def _counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ledger = conn.execute(sa.text("SELECT count(*) FROM ledger")).scalar_one()
        runs = conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
    engine.dispose()
    return int(ledger), int(runs)


def test_the_payload_shown_is_the_one_the_run_then_sends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=120)
    assert site.cli("plan", "--as-of", AS_OF).exit_code == 0  # stages the store, sends nothing
    report = site.run_json("--no-progress")
    sent = {r["person_key"]: r for r in site.records()}
    # someone in a segment, with a tag to add
    record = next(r for r in site.records() if r["memberships_add"])
    email = record["email"]

    # after the run, the destination holds it: unchanged, and the payload is what it got
    after = _plan_json(site, email.upper())  # the address is normalised as staging does
    assert after["person_key"] == record["person_key"]
    assert after["profile"]["email"] == email
    out = after["destinations"]["out"]
    assert out["decision"] == "unchanged" and out["sent"] is False
    assert out["fields"] == record["fields"]
    assert out["memberships"] == sorted(record["memberships_add"])
    tagged = {m.removeprefix("crm-").replace("-", "_") for m in record["memberships_add"]}
    assert set(after["segments"]) >= tagged
    assert report["destinations"]["out"]["create"] == len(sent)


def test_before_a_run_it_shows_the_change_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=120)
    assert site.cli("plan", "--as-of", AS_OF).exit_code == 0
    staged = json.loads(site.cli("plan", "--as-of", AS_OF, "--json").stdout)[0]
    assert staged["destinations"]["out"]["create"] > 0
    ledger, runs = _counts(url)
    emails = [p["email"] for p in _first_people(site, 3)]
    before = {email: _plan_json(site, email) for email in emails}
    assert _counts(url) == (ledger, runs)  # read only

    site.run_json("--no-progress")
    sent = {r["person_key"]: r for r in site.records()}
    for planned in before.values():
        out = planned["destinations"]["out"]
        assert out["decision"] == "create" and out["sent"] is True
        record = sent[planned["person_key"]]
        assert out["fields"] == record["fields"]
        assert out["memberships_add"] == record["memberships_add"]
        assert (out["email_intent"], out["sms_intent"]) == (
            record["email_intent"],
            record["sms_intent"],
        )


def _first_people(site: Site, n: int) -> list[dict[str, Any]]:
    import csv

    with open(site.data / "customers.csv", encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["email"] and r["deleted"] == "false"]
    return rows[:n]


def test_the_mailchimp_mapping_shows_merge_fields_and_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=120)
    assert site.cli("plan", "--as-of", AS_OF).exit_code == 0
    monkeypatch.setenv("CRMSYNC_TEST_MAILCHIMP_KEY", "0123456789abcdef0123456789abcdef-us6")
    site.send_to(
        "mc", 'kind = "mailchimp"\napi_key = "${CRMSYNC_TEST_MAILCHIMP_KEY}"\nlist_id = "a1b2c3"\n'
    )
    row = _first_people(site, 1)[0]
    data = _plan_json(site, row["email"])
    mc = data["destinations"]["mc"]
    assert mc["decision"] == "create" and mc["sent"] is True
    profile = data["profile"]
    assert mc["fields"]["FNAME"] == profile["first_name"]
    assert mc["fields"]["PHONE"] == (profile["phone"] or "")
    assert mc["memberships"] == sorted(f"crm-{s.replace('_', '-')}" for s in data["segments"])

    code, text = _person(site, row["email"])
    assert code == 0
    assert "-> mc: create (would send)" in text
    assert f"FNAME = {profile['first_name']}" in text
    assert "segments: " + (", ".join(data["segments"]) or "none") in text


def test_an_unknown_or_invalid_email_is_one_clear_message(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=20)
    assert site.cli("plan", "--as-of", AS_OF).exit_code == 0
    code, out = _person(site, "nobody@example.com")
    assert code == 2
    assert "no person with the e-mail nobody@example.com in the staged data of main" in out
    code, out = _person(site, "not-an-address")
    assert code == 2
    assert "--person" in out and "is not an e-mail address" in out
    assert "Traceback" not in out
