"""Mailchimp tags on the destination kit: only what is Mailchimp's own about them.

A Mailchimp tag is a static segment. The kit keeps the name -> id index and plans the
calls (paired: ``POST /lists/{id}/segments/{segment_id}`` takes up to 500
``members_to_add`` *and* 500 ``members_to_remove`` at once); this module gives the kit
Mailchimp's listing and creation, sends the calls and reads their answers.

A new tag is created carrying its first members (``static_segment``, up to the batch
size), so its first 500 members cost no call beyond the create that was needed anyway.
Only people whose upsert Mailchimp has confirmed are ever carried: they are on the list,
and Mailchimp's create adds every given address that is on the list (ignoring only those
that are not), so its 200 confirms them as a batch call's answer would. A tag deleted by
a marketer behind our back (404) is forgotten and re-created once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from connectors.kit import GroupIndex, MembershipCall
from connectors.mailchimp.client import MailchimpApi, MailchimpApiError
from crmsync.errors import TransientError

MAX_TAG_NAME = 100  # Mailchimp's limit on a segment (tag) name


def tag_index(api: MailchimpApi, list_id: str, batch_size: int) -> GroupIndex:
    """The list's static segments by name; a new one carries up to ``batch_size`` members."""

    def list_all() -> list[tuple[str, str]]:
        # oldest first, so that of two tags with one name the older one is used
        segments = sorted(api.static_segments(list_id), key=lambda s: int(s.get("id", 0)))
        return [(str(s.get("name", "")), str(s.get("id", 0))) for s in segments]

    def create(name: str, members: Sequence[str]) -> str:
        return str(api.create_static_segment(list_id, name, members)["id"])

    return GroupIndex(list_all, create, carries=batch_size)


def send_calls(
    api: MailchimpApi,
    index: GroupIndex,
    list_id: str,
    calls: Sequence[MembershipCall],
    pool: Executor,
) -> dict[str, str]:
    """Sends tag calls side by side (only people Mailchimp has upserted may be in them);
    returns the lower-cased addresses whose moves failed, with the reason.

    A call to a tag that does not exist yet creates it carrying the call's adds, so a new
    tag's first call's worth of members costs nothing beyond the create. Removals from a
    tag that does not exist need no call.
    """
    if not calls:
        return {}
    ids = index.ids(sorted({call.group for call in calls}))
    failed: dict[str, str] = {}
    for found in pool.map(
        lambda call: _send(api, index, list_id, call, ids.get(call.group)), calls
    ):
        failed.update(found)
    return failed


def call_body(call: MembershipCall) -> dict[str, list[str]]:
    return {"members_to_add": list(call.add), "members_to_remove": list(call.remove)}


def call_failures(response: Mapping[str, Any]) -> dict[str, str]:
    """Per-address errors in a static-segment batch answer: lower-cased e-mail -> reason."""
    failed: dict[str, str] = {}
    for error in response.get("errors") or ():
        reason = str(error.get("error") or "Mailchimp refused the tag change")
        for email in error.get("email_addresses") or ():
            failed[str(email).lower()] = reason
    return failed


def _send(
    api: MailchimpApi,
    index: GroupIndex,
    list_id: str,
    call: MembershipCall,
    segment_id: str | None,
) -> dict[str, str]:
    """Sends one call; a missing tag is created (a tag deleted meanwhile, once)."""
    if segment_id is not None:
        failed = _batch(api, list_id, call, segment_id, vanished_ok=True)
        if failed is not None:
            return failed
        index.forget(call.group)
    if not call.add:  # removals from a tag that does not exist: nothing to do
        return {}
    segment_id, carried = index.ensure(call.group, call.add)
    # A tag created by this call holds exactly the members it carried: removing anybody
    # else is moot. One found created by someone else may hold anybody.
    rest = MembershipCall(
        call.group,
        tuple(email for email in call.add if email not in carried),
        () if carried else call.remove,
    )
    if not rest.members():
        return {}
    return _batch(api, list_id, rest, segment_id, vanished_ok=False) or {}


def _batch(
    api: MailchimpApi, list_id: str, call: MembershipCall, segment_id: str, *, vanished_ok: bool
) -> dict[str, str] | None:
    """Per-address failures of one call; None when the tag is gone (404) and ``vanished_ok``."""
    try:
        answer = api.batch_segment(list_id, segment_id, call_body(call))
    except TransientError as exc:
        return _all(call, f"tag {call.group!r} not applied: {exc}")
    except MailchimpApiError as exc:
        if exc.status == 404 and vanished_ok:
            return None
        return _all(call, f"tag {call.group!r} not applied: {exc}")
    return {
        email: f"tag {call.group!r} not applied: {why}"
        for email, why in call_failures(answer).items()
    }


def _all(call: MembershipCall, message: str) -> dict[str, str]:
    return {email.lower(): message for email in call.members()}
