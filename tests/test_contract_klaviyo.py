"""The destination contract, for Klaviyo, against the fake Klaviyo (real HTTP, every request
checked against Klaviyo's OpenAPI specs, import jobs answered asynchronously)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.contract import (
    PREFIX,
    Contact,
    DestinationContract,
    RefusalContract,
    VendorFactory,
    strict_fakes,
)
from tests.fakes.klaviyo import FakeKlaviyo

pytestmark = pytest.mark.slow
KEY_VARIABLE = "CRMSYNC_CONTRACT_KLAVIYO_KEY"
DELETED = "USER_SUPPRESSED"  # how crmsync takes a person deleted at the source out of marketing


class KlaviyoVendor:
    def __init__(self, fake: FakeKlaviyo) -> None:
        self.fake = fake

    def table(self) -> dict[str, Any]:
        return {
            "kind": "klaviyo",
            "api_key": f"${{{KEY_VARIABLE}}}",
            "base_url": self.fake.base_url,
            "jobs": {"profiles_per_job": 40},  # several pushes for the crash scenario
            "http": {"retry": {"backoff_initial": 0.01, "backoff_max": 0.05}},
        }

    def contacts(self) -> dict[str, Contact]:
        """Profiles with an e-mail that crmsync has not taken out of marketing for a
        deletion at the source, with their owned lists and e-mail marketing consent."""
        held: dict[str, Contact] = {}
        for profile in self.fake.profiles.values():
            if not profile.email or DELETED in self.fake.suppressions(profile.email):
                continue
            lists = {
                found.name
                for found in self.fake.lists.values()
                if profile.id in found.members and found.name.startswith(PREFIX)
            }
            subscribed = profile.email_marketing.consent == "SUBSCRIBED"
            held[profile.email] = Contact(subscribed, frozenset(lists))
        return held

    def writes(self) -> int:
        return self.fake.writes()

    def opt_out(self, email: str) -> None:
        self.fake.unsubscribe(email, at=datetime.now(UTC))

    def refuse(self, email: str, phone: str) -> set[str]:
        """Klaviyo has this person's e-mail on one profile and their phone on another:
        importing the person with both is Klaviyo's duplicate-profile conflict."""
        other = f"someone.else.{email}"
        self.fake.add_profile(email)
        self.fake.add_profile(other, phone_number=phone)
        return {email, other}

    def expect_consented(self, emails: Iterable[str]) -> None:
        self.fake.expect_consented(emails)

    def settle(self) -> None:
        self.fake.finish_jobs()


class TestKlaviyoContract(DestinationContract, RefusalContract):
    APPLIED_WHEN_ANSWERED = False  # lists are moved when the import job is collected

    @pytest.fixture
    def vendor_factory(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[VendorFactory]:
        key = "pk_contract0123456789abcdef0123456789"
        monkeypatch.setenv(KEY_VARIABLE, key)

        def make() -> tuple[FakeKlaviyo, KlaviyoVendor]:
            fake = FakeKlaviyo(api_key=key).start()
            return fake, KlaviyoVendor(fake)

        yield from strict_fakes(make)

    def test_killed_after_jobs_were_submitted_then_a_source_change_ends_like_a_clean_run(
        self, vendor_factory: VendorFactory, tmp_path: Path
    ) -> None:
        """Import jobs submitted and recorded as pending, never collected by the killed run:
        the next run collects them first, then pushes the change; nobody is doubled."""
        self.killed_then_changed(vendor_factory, tmp_path, "after_submit")

    def test_killed_with_list_moves_held_then_a_source_change_ends_like_a_clean_run(
        self, vendor_factory: VendorFactory, tmp_path: Path
    ) -> None:
        """Killed after the import jobs were collected and their people answered PENDING on
        the run's list job, the held list moves never sent: the next run's collect rebuilds
        the moves from the changes in flight and sends them; nobody is doubled or misfiled."""
        self.killed_then_changed(vendor_factory, tmp_path, "handed_on")
