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
