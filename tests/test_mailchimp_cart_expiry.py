"""Cart expiry into the fake Mailchimp: a month after their last change, with no source
change, the abandoned carts crmsync put in the store are deleted once each; a delete
that fails is tried again by a later run although the cart crossed its expiry before;
a further run deletes nothing."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from connectors.mailchimp.ecommerce_bodies import store_id
from state.events import event_cursor
from state.store import Store
from state.timeutil import to_ms
from tests.e2e import Site
from tests.events_site import events_site
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake
from tests.test_mailchimp_ecommerce_pipeline import _point_at

__all__ = ["mailchimp_fake"]

STORE = store_id("crmsync-", "shop")
DELETE = ("DELETE", "/ecommerce/stores/{store_id}/carts/{cart_id}")
MONTH_ON = "2026-12-02T09:00:00+00:00"  # every sample cart (left a month ago at most) expired


def _run(site: Site, as_of: str) -> dict[str, object]:
    result = site.cli("run", "--as-of", as_of, "--json")
    assert result.exit_code in (0, 5), result.output
    report: dict[str, object] = json.loads(result.stdout)[0]
    return report


def test_expired_carts_are_deleted_from_the_store_once_and_a_failed_delete_is_retried(
    tmp_path: Path, mailchimp_fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    site = events_site(tmp_path, url, customers=150)
    _point_at(site, mailchimp_fake, monkeypatch, attempts=1)
    text = site.config.read_text(encoding="utf-8")  # a failed delete is due again at once
    site.config.write_text(text + "retry_minutes = 0.001\n", encoding="utf-8")
    site.run_json()
    store = mailchimp_fake.stores[STORE]
    made = set(store.carts)
    assert len(made) > 1, "the sample store has abandoned carts to show"

    mailchimp_fake.reset_counters()
    mailchimp_fake.inject(500, only=DELETE)  # the first delete fails (one attempt a call)
    report = _run(site, MONTH_ON)
    assert len(store.carts) == 1  # every other cart deleted; the failed one is left
    assert mailchimp_fake.calls[DELETE] == len(made)
    assert report["events"]["mc"]["failed"] == 1, report  # type: ignore[index]
    state = Store(url)
    with state.engine.connect() as conn:  # the derivation moved on past its expiry
        cursor = event_cursor(conn, "main")
    state.close()
    assert cursor is not None and cursor[1] == to_ms(datetime.fromisoformat(MONTH_ON))

    time.sleep(0.1)  # past the retry wait
    mailchimp_fake.reset_counters()
    _run(site, "2026-12-02T10:00:00+00:00")  # no cart crosses its expiry in this window
    assert store.carts == {}
    assert mailchimp_fake.calls[DELETE] == 1  # only the one that failed

    mailchimp_fake.reset_counters()
    _run(site, "2026-12-03T09:00:00+00:00")
    assert mailchimp_fake.calls[DELETE] == 0
    ecommerce = [c for c in mailchimp_fake.calls if c[1].startswith("/ecommerce") and c[0] != "GET"]
    assert ecommerce == []  # a day on, no e-commerce write at all (people may change)
