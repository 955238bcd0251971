"""The kit's group index: listed once, created once, and a lost create answer is survived."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from connectors.kit import GroupIndex
from crmsync.errors import AuthError, ConnectorError


class Vendor:
    """A vendor's groups in memory, with knobs for the ways a create goes wrong."""

    def __init__(self, *existing: str) -> None:
        self.groups: dict[str, tuple[str, list[str]]] = {}  # id -> (name, members)
        self.listings = 0
        self.creates: list[tuple[str, tuple[str, ...]]] = []
        self.lose_answer = False  # apply the create, then fail as if the answer was lost
        self.refuse: Exception | None = None
        self.slow = 0.0
        self._made = 0
        for name in existing:
            self._make(name, ())

    def list_all(self) -> list[tuple[str, str]]:
        self.listings += 1
        return [(name, group_id) for group_id, (name, _) in self.groups.items()]

    def create(self, name: str, members: Sequence[str]) -> str:
        self.creates.append((name, tuple(members)))
        time.sleep(self.slow)
        if self.refuse is not None:
            raise self.refuse
        if any(existing == name for existing, _ in self.groups.values()):
            raise ConnectorError(f"400: a group named {name!r} exists")
        made = self._make(name, members)
        if self.lose_answer:
            self.lose_answer = False
            raise ConnectorError("502 after the create was applied")
        return made

    def index(self, carries: int = 0) -> GroupIndex:
        return GroupIndex(self.list_all, self.create, carries=carries)

    def _make(self, name: str, members: Sequence[str]) -> str:
        self._made += 1
        group_id = f"g{self._made}"
        self.groups[group_id] = (name, list(members))
        return group_id


def test_the_index_is_listed_once_and_lazily() -> None:
    vendor = Vendor("crm-vip", "crm-new")
    index = vendor.index()
    assert vendor.listings == 0
    assert index.ids(["crm-vip", "crm-gone"]) == {"crm-vip": "g1"}
    assert index.ids(["crm-new"]) == {"crm-new": "g2"}
    assert index.ensure("crm-vip") == ("g1", ())
    assert vendor.listings == 1 and vendor.creates == []


def test_a_missing_group_is_created_carrying_its_first_members() -> None:
    vendor = Vendor()
    index = vendor.index(carries=2)
    group_id, carried = index.ensure("crm-vip", ["a", "b", "c"])
    assert carried == ("a", "b")
    assert vendor.creates == [("crm-vip", ("a", "b"))]
    assert vendor.groups[group_id] == ("crm-vip", ["a", "b"])
    assert index.ensure("crm-vip", ["d"]) == (group_id, ())  # exists now: nothing carried


def test_a_vendor_whose_create_takes_no_members_gets_none() -> None:
    vendor = Vendor()
    group_id, carried = vendor.index().ensure("crm-vip", ["a", "b"])
    assert carried == () and vendor.creates == [("crm-vip", ())]
    assert vendor.groups[group_id] == ("crm-vip", [])


def test_concurrent_ensures_create_the_group_once() -> None:
    vendor = Vendor()
    vendor.slow = 0.05  # a slow create: every thread arrives while it is under way
    index = vendor.index(carries=500)
    start = threading.Barrier(16)

    def ensure(number: int) -> tuple[str, tuple[str, ...]]:
        start.wait()
        return index.ensure("crm-vip", [f"m{number}"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ensure, range(16)))
    assert len(vendor.creates) == 1 and len(vendor.groups) == 1
    assert {group_id for group_id, _ in answers} == {"g1"}
    carriers = [carried for _, carried in answers if carried]
    assert len(carriers) == 1  # the creator's member went in with the create...
    assert vendor.groups["g1"][1] == list(carriers[0])  # ...the others must add theirs


def test_a_create_whose_answer_was_lost_finds_the_group_instead_of_making_another() -> None:
    vendor = Vendor()
    vendor.lose_answer = True
    index = vendor.index(carries=10)
    group_id, carried = index.ensure("crm-vip", ["a", "b"])
    assert group_id == "g1" and len(vendor.groups) == 1
    assert carried == ()  # unconfirmed: the caller adds a and b with a membership call
    assert vendor.listings == 2  # the lazy listing, and the look after the failed create


def test_a_seam_retry_that_hears_already_exists_finds_the_group() -> None:
    vendor = Vendor()
    index = vendor.index()
    index.ids([])  # listed while the group did not exist yet
    vendor._make("crm-vip", ())  # made meanwhile by another process
    assert index.ensure("crm-vip") == ("g1", ())
    assert len(vendor.groups) == 1


def test_a_create_that_failed_and_left_nothing_raises() -> None:
    vendor = Vendor()
    vendor.refuse = ConnectorError("400: the name is invalid")
    with pytest.raises(ConnectorError, match="invalid"):
        vendor.index().ensure("crm-vip")
    assert vendor.groups == {}


def test_an_auth_error_on_create_propagates_without_a_second_look() -> None:
    vendor = Vendor()
    vendor.refuse = AuthError("HTTP 401")
    with pytest.raises(AuthError):
        vendor.index().ensure("crm-vip")
    assert vendor.listings == 1


def test_a_forgotten_group_is_created_again() -> None:
    vendor = Vendor("crm-vip")
    index = vendor.index(carries=5)
    assert index.ids(["crm-vip"]) == {"crm-vip": "g1"}
    del vendor.groups["g1"]  # deleted by a marketer: the vendor answered 404
    index.forget("crm-vip")
    assert index.ids(["crm-vip"]) == {}
    assert index.ensure("crm-vip", ["a"]) == ("g2", ("a",))


def test_of_two_groups_with_one_name_the_first_listed_is_used() -> None:
    index = GroupIndex(lambda: [("crm-vip", "7"), ("crm-vip", "9")], lambda n, m: "x")
    assert index.ids(["crm-vip"]) == {"crm-vip": "7"}
