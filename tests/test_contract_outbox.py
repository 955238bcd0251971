"""The destination contract, for the outbox: its files, replayed in the order they were
written, are the destination."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.contract import Contact, DestinationContract, VendorFactory, iter_outbox

pytestmark = pytest.mark.slow


class OutboxVendor:
    """What a tool fed from the outbox files would hold, replaying them like a vendor:
    an upsert creates or updates the contact and moves its groups; subscribe-if-new
    subscribes only a new contact; unsubscribe unsubscribes; an archive removes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opted_out: set[str] = set()

    def table(self) -> dict[str, Any]:
        return {"kind": "outbox", "directory": str(self.root), "batch_size": 20}

    def contacts(self) -> dict[str, Contact]:
        held: dict[str, tuple[bool, set[str]]] = {}
        for record in iter_outbox(self.root / "dest"):
            email = record["email"]
            if not email:
                continue
            if record["action"] != "upsert":
                held.pop(email, None)
                continue
            subscribed, groups = held.get(email, (False, set()))
            if email not in held and record["email_intent"] == "subscribe_if_new":
                subscribed = True
            if record["email_intent"] == "unsubscribe" or email in self.opted_out:
                subscribed = False
            groups = (groups | set(record["memberships_add"])) - set(record["memberships_remove"])
            held[email] = (subscribed, groups)
        return {e: Contact(s, frozenset(g)) for e, (s, g) in held.items()}

    def writes(self) -> int:
        return len(list((self.root / "dest").glob("*.jsonl")))

    def opt_out(self, email: str) -> None:
        self.opted_out.add(email)

    def expect_consented(self, emails: Iterable[str]) -> None:
        """The outbox takes anyone; the contract's own check covers consent."""

    def settle(self) -> None:
        """Files are final when written."""


class TestOutboxContract(DestinationContract):
    @pytest.fixture
    def vendor_factory(self, tmp_path: Path) -> VendorFactory:
        made = iter(range(100))
        return lambda: OutboxVendor(tmp_path / f"outbox{next(made)}")
