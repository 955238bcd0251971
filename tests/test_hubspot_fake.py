"""The fake HubSpot's own bookkeeping: a contact is found by e-mail through an index (a scan
of every contact per upserted input made a large account quadratic), and the index must
answer as the scan did: archived contacts are no match, and one e-mail upserted again
after an archive is a new contact."""

from __future__ import annotations

from tests.fakes.hubspot import FakeHubSpot


def test_a_contact_is_found_by_its_email_in_any_case() -> None:
    fake = FakeHubSpot()
    made = fake.add_contact("Ayse@Example.com", firstname="Ayşe")
    assert fake.contact(" ayse@example.COM ") is made
    assert fake.contact("other@example.com") is None


def test_an_archived_contact_is_no_match_and_its_email_upserted_again_is_a_new_contact() -> None:
    fake = FakeHubSpot()
    old = fake.add_contact("a@example.com")
    old.archived = True
    assert fake.contact("a@example.com") is None
    new = fake.add_contact("a@example.com", firstname="Again")
    assert new.id != old.id
    assert fake.contact("a@example.com") is new
    assert set(fake.contacts()) == {"a@example.com"}


def test_a_contact_given_another_email_is_found_by_the_new_one_only() -> None:
    fake = FakeHubSpot()
    made = fake.add_contact("old@example.com")
    fake._upsert_one("old@example.com", {"email": "new@example.com"})  # an upsert's input
    assert fake.contact("new@example.com") is made
    assert fake.contact("old@example.com") is None
