"""Segments as MANUAL lists in HubSpot: created as they appear, members moved by record id
in calls gathered over the run, the merchant's lists untouched. The fake fails the test
on teardown for any request HubSpot's reference does not allow."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest

from connectors.hubspot import HubSpotDestination
from connectors.hubspot.run_lists import LIST_JOB
from crmsync.contract import Change, Outcome, PushResult
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.test_hubspot_destination import make, person, specs

__all__ = ["hubspot_fake"]
MOVE = ("PUT", "move_members")
CREATE = ("POST", "create_list")


@pytest.fixture
def dest(hubspot_fake: FakeHubSpot) -> Iterator[HubSpotDestination]:
    destination = make(hubspot_fake, lists=True, list_batch=50)
    destination.prepare(specs())
    hubspot_fake.reset_counters()
    yield destination
    destination.close()


def settle(
    dest: HubSpotDestination, changes: Sequence[Change], results: list[PushResult]
) -> dict[str, PushResult]:
    """What the core does at the end of a run: collects the pending people's job."""
    final = {r.person_key: r for r in results}
    pending = [c for c in changes if final[c.person_key].outcome is Outcome.PENDING]
    if pending:
        [job] = {final[c.person_key].job for c in pending}
        assert job is not None and job.startswith(LIST_JOB)
        settled = dest.collect(job, [_with_id(c, final[c.person_key]) for c in pending])
        assert settled is not None
        final.update((r.person_key, r) for r in settled)
    return final


def _with_id(change: Change, result: PushResult) -> Change:
    """The change as the ledger keeps it for a job: with the record id answered."""
    return replace(change, remote_id=result.remote_id)


def members(fake: FakeHubSpot, name: str) -> set[str]:
    found = fake.list_named(name)
    assert found is not None, f"no list {name}"
    return {fake.contacts_by_id[i].email for i in found.members}


def test_each_owned_segment_gets_a_manual_list_and_its_members(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    people = [
        person(f"p{i}@example.com", segments=["crm-new"] + (["crm-vip"] if i % 3 == 0 else []))
        for i in range(120)
    ]
    results = dest.push(people)
    final = settle(dest, people, results)
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert members(hubspot_fake, "crm-new") == {f"p{i}@example.com" for i in range(120)}
    assert members(hubspot_fake, "crm-vip") == {f"p{i}@example.com" for i in range(0, 120, 3)}
    made = {x.name: x.processing_type for x in hubspot_fake.lists.values()}
    assert made == {"crm-new": "MANUAL", "crm-vip": "MANUAL"}
    assert hubspot_fake.calls[CREATE] == 2
    # the floor: ceil(members / list_batch) per list, adds and removes in one call
    assert hubspot_fake.calls[MOVE] == math.ceil(120 / 50) + math.ceil(40 / 50)
    for key, result in final.items():
        assert result.remote_id == hubspot_fake.contact(key[2:]).id  # type: ignore[union-attr]


def test_moves_are_gathered_across_pushes_into_full_calls(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    changes: list[Change] = []
    results: list[PushResult] = []
    for start in range(0, 190, 19):  # ten pushes of 19: calls of 50, not one per push
        batch = [
            person(f"p{i}@example.com", segments=["crm-new"]) for i in range(start, start + 19)
        ]
        changes += batch
        results += dest.push(batch)
    assert hubspot_fake.calls[MOVE] == 3  # full calls only, while the run goes on
    assert any(r.outcome is Outcome.PENDING for r in results)
    final = settle(dest, changes, results)
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert hubspot_fake.calls[MOVE] == 4  # ceil(190 / 50)
    assert len(members(hubspot_fake, "crm-new")) == 190


def test_a_membership_change_in_many_pushes_costs_the_per_run_floor(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    first = [person(f"p{i}@example.com", segments=["crm-a"]) for i in range(120)]
    settle(dest, first, dest.push(first))
    # The next run has a destination of its own, as the core opens one per run: its
    # adds and removes are held across its pushes, whatever the last run's job did.
    later = make(hubspot_fake, lists=True, list_batch=50)
    later.prepare(specs())
    hubspot_fake.reset_counters()
    moved = [
        replace(
            c, memberships_add=("crm-b",), memberships_remove=("crm-a",), memberships=("crm-b",)
        )
        for c in first[:60]
    ]
    results: list[PushResult] = []
    for start in range(0, 60, 15):  # four pushes of 15
        results += later.push(moved[start : start + 15])
    assert hubspot_fake.calls[MOVE] == 2  # a full call of 50 per list, while the run goes on
    final = settle(later, moved, results)
    later.close()
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    # the floor: per list max(ceil(adds / 50), ceil(removes / 50)), not a call per push
    assert hubspot_fake.calls[MOVE] == 2 + 2
    assert hubspot_fake.calls[CREATE] == 1
    assert members(hubspot_fake, "crm-b") == {f"p{i}@example.com" for i in range(60)}
    assert members(hubspot_fake, "crm-a") == {f"p{i}@example.com" for i in range(60, 120)}


def test_a_leaver_is_removed_and_the_merchants_lists_stay_untouched(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    first = [person(f"p{i}@example.com", segments=["crm-vip"]) for i in range(3)]
    settle(dest, first, dest.push(first))
    mine = hubspot_fake.add_list(
        "VIP by hand", members=[c.id for c in hubspot_fake.contacts().values()]
    )
    leaver = replace(person("p0@example.com"), memberships_remove=("crm-vip",))
    settle(dest, [leaver], dest.push([leaver]))
    assert members(hubspot_fake, "crm-vip") == {"p1@example.com", "p2@example.com"}
    assert len(mine.members) == 3  # never touched


def test_an_active_list_of_an_owned_name_fails_only_its_moves(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    hubspot_fake.add_list("crm-vip", processing_type="DYNAMIC")
    people = [person("a@example.com", segments=["crm-vip"]), person("b@example.com")]
    final = settle(dest, people, dest.push(people))
    assert final["e:a@example.com"].outcome is Outcome.FAILED
    assert "crm-vip" in final["e:a@example.com"].message
    assert final["e:b@example.com"].outcome is Outcome.OK
    checks = {c.what: c for c in dest.check()}
    assert not checks["lists"].ok and "crm-vip" in checks["lists"].detail


def test_a_list_deleted_in_hubspot_is_made_again(
    hubspot_fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    first = [person("a@example.com", segments=["crm-vip"])]
    settle(dest, first, dest.push(first))
    gone = hubspot_fake.list_named("crm-vip")
    assert gone is not None
    del hubspot_fake.lists[gone.id]
    again = [person("b@example.com", segments=["crm-vip"])]
    final = settle(dest, again, dest.push(again))
    assert final["e:b@example.com"].outcome is Outcome.OK
    assert members(hubspot_fake, "crm-vip") == {"b@example.com"}


def test_a_list_job_left_by_a_killed_run_is_sent_again_from_the_changes(
    hubspot_fake: FakeHubSpot,
) -> None:
    crashed = make(hubspot_fake, lists=True)
    crashed.prepare(specs())
    people = [person(f"p{i}@example.com", segments=["crm-new"]) for i in range(5)]
    results = crashed.push(people)
    assert {r.outcome for r in results} == {Outcome.PENDING}
    crashed.close()  # killed: its job never collected
    assert hubspot_fake.list_named("crm-new") is None
    later = make(hubspot_fake, lists=True)
    job = results[0].job
    assert job is not None
    settled = later.collect(job, [_with_id(c, r) for c, r in zip(people, results, strict=True)])
    later.close()
    assert settled is not None and {r.outcome for r in settled} == {Outcome.OK}
    assert len(members(hubspot_fake, "crm-new")) == 5


def test_without_lists_no_list_is_made(hubspot_fake: FakeHubSpot) -> None:
    destination = make(hubspot_fake)
    destination.prepare(specs())
    results = destination.push([person("a@example.com", segments=["crm-vip"])])
    destination.close()
    assert results[0].outcome is Outcome.OK
    assert hubspot_fake.lists == {}


def test_moves_held_when_the_day_runs_out_are_not_sent_and_charge_nothing(
    hubspot_fake: FakeHubSpot,
) -> None:
    """The upserts went out; at the run's end the owned lists are looked up, and then
    only the reserve is left: the list is not made nor moved, and its people are
    NOT_SENT (the ledger keeps them in flight, no attempt charged), with their ids."""
    dest = make(hubspot_fake, lists=True, list_batch=50, rate_limits={"daily_reserve": 5})
    try:
        dest.prepare(specs())
        people = [person(f"p{i}@example.com", segments=["crm-new"]) for i in range(30)]
        results = dest.push(people)
        assert {r.outcome for r in results} == {Outcome.PENDING}  # moves held for the run
        hubspot_fake.daily = hubspot_fake._day_count + 6  # other apps spent the rest
        final = settle(dest, people, results)
        assert {r.outcome for r in final.values()} == {Outcome.NOT_SENT}
        assert all(r.remote_id for r in final.values())  # upserted: their ids are kept
        assert "daily" in (final["e:p1@example.com"].message or "")
        assert hubspot_fake.list_named("crm-new") is None
        assert hubspot_fake.daily - hubspot_fake._day_count == 5  # the reserve is left
        assert hubspot_fake.rate_limited == 0
    finally:
        dest.close()
