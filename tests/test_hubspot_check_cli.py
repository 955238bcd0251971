"""``crmsync check`` sees what the mappings send: a HubSpot property of the same name and
another type fails the check, named, before any run (and the check creates nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import EXIT_CONFIG
from tests.e2e import make_site
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.test_hubspot_pipeline import point_at

__all__ = ["hubspot_fake"]


def test_check_fails_on_a_property_of_another_type_and_names_it(
    tmp_path: Path, hubspot_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=20)
    point_at(site, hubspot_fake, monkeypatch)
    fine = site.cli("check")
    assert fine.exit_code == 0, fine.output
    assert "[ok ] hs (hubspot) mapped properties" in fine.output

    hubspot_fake.add_property("crmsync_orders_count", "string", "text")  # made by someone else
    conflict = site.cli("check")
    assert conflict.exit_code == EXIT_CONFIG, conflict.output
    [line] = [x for x in conflict.output.splitlines() if x.strip().startswith("[FAIL]")]
    assert "hs (hubspot) property crmsync_orders_count" in line
    assert "'string'" in line and "number" in line  # HubSpot's type and the mapping's
    assert "1 check(s) failed" in conflict.output
    assert hubspot_fake.writes() == 0  # nothing created by either check
    assert "crmsync" not in hubspot_fake.groups
