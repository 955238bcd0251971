"""The destination contract, for HubSpot, against the fake HubSpot (real HTTP, every request
checked against what HubSpot's reference pages say; every answer final at once)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from tests.contract import (
    PREFIX,
    Contact,
    ContractSite,
    DestinationContract,
    RefusalContract,
    Vendor,
    VendorFactory,
    strict_fakes,
)
from tests.fakes.hubspot import FakeHubSpot

pytestmark = pytest.mark.slow
TOKEN_VARIABLE = "CRMSYNC_CONTRACT_HUBSPOT_TOKEN"
SEGMENTS = "crmsync_segments"


class HubSpotVendor:
    def __init__(self, fake: FakeHubSpot) -> None:
        self.fake = fake

    def table(self) -> dict[str, Any]:
        return {
            "kind": "hubspot",
            "access_token": f"${{{TOKEN_VARIABLE}}}",
            "base_url": self.fake.base_url,
            "batch_size": 20,  # several pushes for the crash scenario
            "lists": True,
            "http": {
                "retry": {"backoff_initial": 0.01, "backoff_max": 0.05},
                "rate": {"max_concurrency": 2},
            },
        }

    def contacts(self) -> dict[str, Contact]:
        """Contacts not archived, with their owned segment options. Nobody is subscribed:
        crmsync writes no subscription in HubSpot."""
        return {
            email: Contact(
                False,
                frozenset(v for v in self.fake.values(email, SEGMENTS) if v.startswith(PREFIX)),
            )
            for email in self.fake.contacts()
        }

    def lists(self) -> dict[str, frozenset[str]]:
        """Contacts not archived, with the owned lists they are in."""
        in_lists = self.fake.memberships()
        return {
            email: frozenset(n for n in in_lists.get(contact.id, ()) if n.startswith(PREFIX))
            for email, contact in self.fake.contacts().items()
        }

    def writes(self) -> int:
        return self.fake.writes()

    def opt_out(self, email: str) -> None:
        self.fake.opt_out(email)

    def refuse(self, email: str, phone: str) -> set[str]:
        """HubSpot's own validation judges the address invalid: a 207 error for it alone."""
        self.fake.invalid_emails.add(email)
        return set()

    def expect_consented(self, emails: Iterable[str]) -> None:
        """The fake has no subscriptions to check (crmsync writes none in HubSpot)."""

    def settle(self) -> None:
        """HubSpot answers every call at once."""


class TestHubSpotContract(DestinationContract, RefusalContract):
    @pytest.fixture
    def vendor_factory(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[VendorFactory]:
        token = "pat-eu1-00000000-contract-0000-000000000000"
        monkeypatch.setenv(TOKEN_VARIABLE, token)

        def make() -> tuple[FakeHubSpot, HubSpotVendor]:
            fake = FakeHubSpot(token=token).start()
            return fake, HubSpotVendor(fake)

        yield from strict_fakes(make)

    def test_an_opt_out_in_the_destination_stands_through_later_changes(
        self, vendor: Vendor, site: ContractSite
    ) -> None:
        """crmsync subscribes nobody in HubSpot, so the contract's version (somebody
        subscribed by the first sync opts out) has nobody to start from: here a contact
        opts out in HubSpot, changes at the source, and stays opted out."""
        assert isinstance(vendor, HubSpotVendor)
        site.run()
        assert not any(contact.subscribed for contact in vendor.contacts().values())
        person = sorted(site.ledger())[0]
        vendor.opt_out(person)
        site.add_order(person)
        counts = site.run()["destinations"]["dest"]
        assert counts.get("update") == 1, counts
        self.holds(vendor, site)
        found = vendor.fake.contact(person)
        assert found is not None and found.properties.get("hs_email_optout") == "true"

    def test_at_the_end_of_each_run_the_lists_hold_what_the_options_hold(
        self, vendor: Vendor, site: ContractSite
    ) -> None:
        """Options are written with the upserts, list moves gathered over the run: once a
        run has ended both say the same, through a change that moves people too."""
        assert isinstance(vendor, HubSpotVendor)
        site.run()
        options = {email: c.memberships for email, c in vendor.contacts().items()}
        assert any(options.values()) and vendor.lists() == options
        site.add_order(sorted(site.ledger())[0], total="90000.00")
        site.run()
        options = {email: c.memberships for email, c in vendor.contacts().items()}
        assert vendor.lists() == options
