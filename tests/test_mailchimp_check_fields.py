"""Mailchimp's ``check`` with the mapping's fields: one read of the audience's merge
fields, a field of another type named as a failed check, and nothing created."""

from __future__ import annotations

from crmsync.contract import FieldSpec
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake
from tests.test_mailchimp_destination import make

__all__ = ["mailchimp_fake"]


def test_check_names_a_merge_field_of_another_type_and_creates_nothing(
    mailchimp_fake: FakeMailchimp,
) -> None:
    destination = make(mailchimp_fake)
    fields = [FieldSpec("FNAME", "text"), FieldSpec("ORDERS", "integer")]
    fine = {c.what: c for c in destination.check(fields)}
    assert all(c.ok for c in fine.values()), fine
    assert "ORDERS are created by the first run" in fine["merge fields"].detail
    checks = {c.what: c for c in destination.check([*fields, FieldSpec("BIRTHDAY", "date")])}
    failed = {what: c.detail for what, c in checks.items() if not c.ok}
    assert list(failed) == ["merge field BIRTHDAY"]
    assert (
        "'birthday'" in failed["merge field BIRTHDAY"]
        and "'date'" in failed["merge field BIRTHDAY"]
    )
    assert mailchimp_fake.writes() == 0
    destination.close()
