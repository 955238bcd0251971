"""Segments as MANUAL contact lists, on the destination kit: only what is HubSpot's own.

The kit keeps the name -> list id index and plans the calls; this module gives it
HubSpot's listing (the MANUAL contact lists whose names start with the owned prefix,
oldest first) and creation, sends the calls and reads their answers. One call per list
carries adds and removes together (``PUT /crm/v3/lists/{listId}/memberships/add-and-
remove``, paired), by HubSpot record id, which the upserts answered. A list's create
takes no members. A list deleted in HubSpot meanwhile (404) is forgotten and created
again, once. Lists whose names do not start with the prefix are never listed, so never
touched; a list of an owned name that is not MANUAL (a marketer's active list) cannot be
written, and its moves fail naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Protocol

from connectors.hubspot.client import CONTACT_TYPE, HubSpotApi, HubSpotApiError
from connectors.kit import GroupIndex, MembershipCall
from crmsync.errors import ConnectorError, SendLater

NOT_FOUND = 404


class Unsent(Protocol):
    """Where the members of calls not sent are noted (HubSpot's day is spent)."""

    def update(self, members: Sequence[str], /) -> None: ...


def list_index(api: HubSpotApi, prefix: str) -> GroupIndex:
    """The owned MANUAL contact lists by name."""

    def list_all() -> list[tuple[str, str]]:
        found = [
            item
            for item in api.manual_lists(prefix)
            if str(item.get("objectTypeId")) == CONTACT_TYPE
            and str(item.get("name", "")).startswith(prefix)
        ]
        found.sort(key=lambda item: _number(item.get("listId")))
        return [(str(item["name"]), str(item["listId"])) for item in found]

    def create(name: str, members: Sequence[str]) -> str:
        return api.create_list(name)

    return GroupIndex(list_all, create)


def send_calls(
    api: HubSpotApi,
    index: GroupIndex,
    calls: Sequence[MembershipCall],
    pool: Executor,
    unsent: Unsent | None = None,
) -> dict[str, str]:
    """Sends the calls side by side; returns the record ids whose moves failed, with why,
    and notes in ``unsent`` the members of calls that did not go out because HubSpot's
    day is spent (failed too, for whoever cannot tell). Removals from a list that does
    not exist need no call."""
    if not calls:
        return {}
    ids = index.ids(sorted({call.group for call in calls}))
    failed: dict[str, str] = {}

    def send(call: MembershipCall) -> dict[str, str]:
        return _send(api, index, call, ids.get(call.group), unsent)

    for found in pool.map(send, calls):
        failed.update(found)
    return failed


def _send(
    api: HubSpotApi,
    index: GroupIndex,
    call: MembershipCall,
    list_id: str | None,
    unsent: Unsent | None,
) -> dict[str, str]:
    try:
        if list_id is not None:
            try:
                return _move(api, call, list_id)
            except HubSpotApiError as exc:
                if exc.status != NOT_FOUND:
                    raise
                index.forget(call.group)  # deleted in HubSpot meanwhile: made again
        if not call.add:
            return {}
        made, _ = index.ensure(call.group)
        return _move(api, call, made)
    except ConnectorError as exc:
        if isinstance(exc, SendLater) and unsent is not None:
            unsent.update(call.members())
        reason = f"list {call.group!r} not moved: {exc}"
        return {member: reason for member in call.members()}


def _move(api: HubSpotApi, call: MembershipCall, list_id: str) -> dict[str, str]:
    missing = api.move_members(list_id, call.add, call.remove)
    reason = f"list {call.group!r} not moved: HubSpot has no contact with this record id"
    return {member: reason for member in call.add if member in missing}


def _number(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0
