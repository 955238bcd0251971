"""Consent and deletions in HubSpot: unsubscribes read back as opt-outs, platform opt-outs
recorded through the communication preferences API, nobody ever subscribed, and people
deleted at the source GDPR-deleted where configured."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from crmsync.contract import Action, ConsentIntent, Outcome
from crmsync.records import Channel, ConsentState
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.test_hubspot_destination import make, person, specs

__all__ = ["hubspot_fake"]
SEARCH = ("POST", "search_contacts")


def test_unsubscribes_in_hubspot_are_read_back_as_email_opt_outs(
    hubspot_fake: FakeHubSpot,
) -> None:
    destination = make(hubspot_fake)
    destination.prepare(specs())
    destination.push([person(f"p{i}@example.com") for i in range(450)])
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert list(destination.read_consent(before)) == []
    for i in (3, 7, 400):
        hubspot_fake.opt_out(f"p{i}@example.com")
    hubspot_fake.reset_counters()
    updates = list(destination.read_consent(before))
    assert {u.email for u in updates} == {"p3@example.com", "p7@example.com", "p400@example.com"}
    assert {(u.channel, u.state) for u in updates} == {(Channel.EMAIL, ConsentState.UNSUBSCRIBED)}
    assert all(u.at >= before for u in updates)
    assert hubspot_fake.writes() == 0
    # every opted-out contact on a first read (no cursor), in pages of 200
    for i in range(0, 450, 2):
        hubspot_fake.opt_out(f"p{i}@example.com")
    hubspot_fake.reset_counters()
    assert len(list(destination.read_consent(None))) == 225 + 2  # the evens, p3 and p7
    assert hubspot_fake.calls[SEARCH] == 2
    destination.close()


def test_a_platform_opt_out_unsubscribes_from_the_configured_types_only(
    hubspot_fake: FakeHubSpot,
) -> None:
    destination = make(hubspot_fake, opt_out_subscriptions=["3001"])
    destination.prepare(specs())
    out = replace(person("out@example.com"), email_intent=ConsentIntent.UNSUBSCRIBE)
    opted_in = replace(person("in@example.com"), email_intent=ConsentIntent.SUBSCRIBE_IF_NEW)
    results = destination.push([out, opted_in, person("none@example.com")])
    assert {r.outcome for r in results} == {Outcome.OK}
    assert hubspot_fake.unsubscribed == {"out@example.com": {"3001"}}
    assert hubspot_fake.subscribes == []  # an opt-in is never written as a subscription
    [again] = destination.push([out])  # already unsubscribed: HubSpot refuses, and that is done
    assert again.outcome is Outcome.OK
    checks = {c.what: c for c in destination.check()}
    assert (
        checks["subscription types"].ok
        and "Marketing Information" in checks["subscription types"].detail
    )
    destination.close()


def test_an_unknown_subscription_type_fails_check_and_the_person(hubspot_fake: FakeHubSpot) -> None:
    destination = make(hubspot_fake, opt_out_subscriptions=["9999"])
    destination.prepare(specs())
    checks = {c.what: c for c in destination.check()}
    assert not checks["subscription types"].ok and "9999" in checks["subscription types"].detail
    out = replace(person("out@example.com"), email_intent=ConsentIntent.UNSUBSCRIBE)
    [result] = destination.push([out])
    assert result.outcome is Outcome.FAILED and "9999" in result.message
    destination.close()


def test_without_opt_out_subscriptions_nothing_is_written_about_consent(
    hubspot_fake: FakeHubSpot,
) -> None:
    destination = make(hubspot_fake)
    destination.prepare(specs())
    out = replace(person("out@example.com"), email_intent=ConsentIntent.UNSUBSCRIBE)
    destination.push([out])
    destination.close()
    assert hubspot_fake.unsubscribed == {}


def test_gdpr_delete_where_configured_deletes_for_good_by_id(hubspot_fake: FakeHubSpot) -> None:
    destination = make(hubspot_fake, deletion="gdpr_delete")
    destination.prepare(specs())
    known = hubspot_fake.add_contact("known@example.com")
    hubspot_fake.add_contact("unacked@example.com")
    results = destination.push(
        [
            replace(person("known@example.com"), action=Action.ARCHIVE, remote_id=known.id),
            replace(person("unacked@example.com"), action=Action.ARCHIVE),
            replace(person("never@example.com"), action=Action.ARCHIVE),
            replace(person("gone@example.com"), action=Action.ARCHIVE, remote_id="999999"),
        ]
    )
    destination.close()
    assert {r.outcome for r in results} == {Outcome.OK}
    assert sorted(hubspot_fake.gdpr_deleted) == ["known@example.com", "unacked@example.com"]
    assert hubspot_fake.contacts_by_id == {}  # deleted, not archived
    assert hubspot_fake.blocklisted == set()  # never by e-mail: nobody is blocklisted
