"""``crmsync check`` for a pipeline with events on tries each destination's event access
against its fake: Klaviyo's ``events:write``, Mailchimp's e-commerce API, HubSpot's
commerce object scopes. A refused one fails the check, naming the scope and what to do;
a pipeline without events tries none of them; the check writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import EXIT_CONFIG
from tests.e2e import Site, make_site
from tests.events_site import events_site
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.klaviyo import FakeKlaviyo, klaviyo_fake
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake
from tests.test_hubspot_pipeline import point_at as point_at_hubspot
from tests.test_klaviyo_events_pipeline import _point_at as point_at_klaviyo
from tests.test_mailchimp_ecommerce_pipeline import _point_at as point_at_mailchimp

__all__ = ["hubspot_fake", "klaviyo_fake", "mailchimp_fake"]

BULK = ("POST", "/api/event-bulk-create-jobs")
STORES = ("GET", "/ecommerce/stores")


def _site(tmp_path: Path, events: bool) -> Site:
    url = f"sqlite:///{tmp_path / 's.db'}"
    return events_site(tmp_path, url, customers=20) if events else make_site(tmp_path, url, 20)


def _lines(output: str, name: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if f" {name} (" in line]


def test_klaviyo_events_scope_is_tried_and_a_missing_one_is_named(
    tmp_path: Path, klaviyo_fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, events=True)
    point_at_klaviyo(site, klaviyo_fake, monkeypatch)
    fine = site.cli("check")
    assert fine.exit_code == 0, fine.output
    assert "[ok ] kl (klaviyo) scope events:write" in fine.output
    assert klaviyo_fake.calls[BULK] == 1 and not klaviyo_fake.events  # no event created

    klaviyo_fake.scopes.discard("events:write")
    refused = site.cli("check")
    assert refused.exit_code == EXIT_CONFIG, refused.output
    [line] = [x for x in _lines(refused.output, "kl") if x.startswith("[FAIL]")]
    assert "scope events:write" in line and "missing required scopes: events:write" in line
    assert "Settings > API keys" in line and "events = false" in line


def test_klaviyo_without_events_tries_no_event_scope(
    tmp_path: Path, klaviyo_fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, events=False)
    point_at_klaviyo(site, klaviyo_fake, monkeypatch)
    klaviyo_fake.scopes.discard("events:write")
    result = site.cli("check")
    assert result.exit_code == 0, result.output
    assert "events:write" not in result.output and klaviyo_fake.calls[BULK] == 0


def test_mailchimp_ecommerce_access_is_tried_and_a_refusal_is_named(
    tmp_path: Path, mailchimp_fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, events=True)
    point_at_mailchimp(site, mailchimp_fake, monkeypatch)
    fine = site.cli("check")
    assert fine.exit_code == 0, fine.output
    assert "[ok ] mc (mailchimp) e-commerce access" in fine.output
    assert mailchimp_fake.calls[STORES] == 1 and mailchimp_fake.writes() == 0

    mailchimp_fake.inject(403, only=STORES)
    refused = site.cli("check")
    assert refused.exit_code == EXIT_CONFIG, refused.output
    [line] = [x for x in _lines(refused.output, "mc") if x.startswith("[FAIL]")]
    assert "e-commerce access" in line and "403" in line
    assert "e-commerce stores" in line and "events = false" in line
    assert mailchimp_fake.stores == {}  # the check made no store


def test_hubspot_commerce_scopes_are_tried_and_a_missing_one_is_named(
    tmp_path: Path, hubspot_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, events=True)
    point_at_hubspot(site, hubspot_fake, monkeypatch)
    fine = site.cli("check")
    assert fine.exit_code == 0, fine.output
    shown = _lines(fine.output, "hs")
    for scope in (
        "crm.objects.orders.read",
        "crm.objects.orders.write",
        "crm.objects.carts.read",
        "crm.objects.carts.write",
        "crm.objects.line_items.write",
    ):
        assert f"[ok ] hs (hubspot) scope {scope}" in shown, shown

    hubspot_fake.faults.inject(403, method="POST", path="/crm/v3/objects/carts/batch/archive")
    refused = site.cli("check")
    assert refused.exit_code == EXIT_CONFIG, refused.output
    [line] = [x for x in _lines(refused.output, "hs") if x.startswith("[FAIL]")]
    assert "scope crm.objects.carts.write" in line
    assert "grant crm.objects.carts.write to the private app" in line
    assert "events = false" in line
    assert "1 check(s) failed" in refused.output


def test_hubspot_tries_only_the_objects_of_the_kinds_the_pipeline_sends(
    tmp_path: Path, hubspot_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, events=True)
    point_at_hubspot(site, hubspot_fake, monkeypatch)
    text = site.config.read_text(encoding="utf-8")
    site.config.write_text(text + 'event_kinds = ["placed_order"]\n', encoding="utf-8")
    result = site.cli("check")
    assert result.exit_code == 0, result.output
    assert "crm.objects.orders.write" in result.output
    assert "crm.objects.line_items.write" in result.output
    assert "crm.objects.carts" not in result.output
