"""The destination contract, for Mailchimp, against the fake Mailchimp (real HTTP, every
request checked against the vendor's OpenAPI spec)."""

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
from tests.fakes.mailchimp import FakeMailchimp

pytestmark = pytest.mark.slow
KEY_VARIABLE = "CRMSYNC_CONTRACT_MAILCHIMP_KEY"


class MailchimpVendor:
    def __init__(self, fake: FakeMailchimp) -> None:
        self.fake = fake

    def table(self) -> dict[str, Any]:
        raw = self.fake.destination_config(api_key=f"${{{KEY_VARIABLE}}}")
        return {**raw, "batch_size": 50}

    def contacts(self) -> dict[str, Contact]:
        tags: dict[str, set[str]] = {}
        for tag, emails in self.fake.tag_members().items():
            if tag.startswith(PREFIX):
                for email in emails:
                    tags.setdefault(email, set()).add(tag)
        return {
            email: Contact(status == "subscribed", frozenset(tags.get(email, ())))
            for email, status in self.fake.statuses().items()
            if status != "archived"
        }

    def writes(self) -> int:
        return self.fake.writes()

    def opt_out(self, email: str) -> None:
        self.fake.set_status(email, "unsubscribed", at=datetime.now(UTC))

    def refuse(self, email: str, phone: str) -> set[str]:
        """Mailchimp refuses a member in a compliance state."""
        self.fake.compliance_emails.add(email)
        return set()

    def expect_consented(self, emails: Iterable[str]) -> None:
        self.fake.expect_consented(emails)

    def settle(self) -> None:
        """Mailchimp answers every call at once."""


class TestMailchimpContract(DestinationContract, RefusalContract):
    @pytest.fixture
    def vendor_factory(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[VendorFactory]:
        key = "0123456789abcdef0123456789abcdef-us7"
        monkeypatch.setenv(KEY_VARIABLE, key)

        def make() -> tuple[FakeMailchimp, MailchimpVendor]:
            fake = FakeMailchimp(api_key=key).start()
            return fake, MailchimpVendor(fake)

        yield from strict_fakes(make)

    def test_killed_with_tag_moves_held_then_a_source_change_ends_like_a_clean_run(
        self, vendor_factory: VendorFactory, tmp_path: Path
    ) -> None:
        """Killed after a push whose people were upserted and answered PENDING on the run's
        tag job, their held tag moves never sent: the next run's collect rebuilds the
        moves from the changes in flight and sends them; nobody is doubled or mistagged."""
        self.killed_then_changed(vendor_factory, tmp_path, "after_submit")
