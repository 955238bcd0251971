"""People deleted at the source: their HubSpot contacts archived (the recycle bin), or
deleted for good with HubSpot's GDPR delete where ``deletion = "gdpr_delete"``.

The ledger usually has the contact's id (``Change.remote_id``); a person whose push was
never acknowledged has none, so their contact is looked up by e-mail first
(``batch/read`` with ``idProperty: email``, 100 a call). A person HubSpot has no contact
for is done: there is nothing to archive, and nothing is created just to be archived.
Archiving an id twice is harmless, so a batch sent again after a crash does no harm.
The GDPR delete takes one contact a call, always by id: by e-mail, HubSpot would block
an address it has no contact for from ever being used again; a contact already gone
(404) is done. When the day's calls run out part-way (``DailyLimitReached``), the people
not yet archived or deleted are NOT_SENT; the look-up by e-mail changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.hubspot.client import HubSpotApi, HubSpotApiError
from connectors.hubspot.upserts import not_sent
from crmsync.contract import Change, Outcome, PushResult
from crmsync.errors import SendLater

NOT_FOUND = 404


def archive(api: HubSpotApi, chunk: Sequence[Change], *, gdpr: bool = False) -> list[PushResult]:
    """Archives (or GDPR-deletes) the contacts of ``chunk`` (at most one call's worth)."""
    try:
        ids = _ids(api, chunk)
        if ids and not gdpr:
            api.archive(list(ids.values()))
    except SendLater as exc:
        return not_sent(chunk, exc)
    unsent: set[str] = set()
    spent: SendLater | None = None
    if ids and gdpr:
        listed = list(ids.items())
        for number, (_, ident) in enumerate(listed):
            try:
                api.gdpr_delete(ident)
            except HubSpotApiError as exc:
                if exc.status != NOT_FOUND:
                    raise
            except SendLater as exc:
                spent, unsent = exc, {key for key, _ in listed[number:]}
                break
    done = "deleted for good (GDPR delete)" if gdpr else "archived"
    return [
        PushResult(c.person_key, Outcome.NOT_SENT, message=str(spent))
        if c.person_key in unsent
        else PushResult(
            c.person_key,
            Outcome.OK,
            remote_id=ids.get(c.person_key),
            message=done if c.person_key in ids else "no contact in HubSpot",
        )
        for c in chunk
    ]


def _ids(api: HubSpotApi, chunk: Sequence[Change]) -> dict[str, str]:
    """Person key -> contact id, for the people HubSpot has a contact for."""
    ids = {change.person_key: change.remote_id for change in chunk if change.remote_id}
    unknown = {
        change.email.strip().lower(): change.person_key
        for change in chunk
        if not change.remote_id and change.email
    }
    if unknown:
        for email, ident in api.ids_by_email(list(unknown)).items():
            if email in unknown:
                ids[unknown[email]] = ident
    return {key: ident for key, ident in ids.items() if ident}
