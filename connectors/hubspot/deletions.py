"""People deleted at the source: their HubSpot contacts archived (the recycle bin).

The ledger usually has the contact's id (``Change.remote_id``); a person whose push was
never acknowledged has none, so their contact is looked up by e-mail first
(``batch/read`` with ``idProperty: email``, 100 a call). A person HubSpot has no contact
for is done: there is nothing to archive, and nothing is created just to be archived.
Archiving an id twice is harmless, so a batch sent again after a crash does no harm.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.hubspot.client import HubSpotApi
from crmsync.contract import Change, Outcome, PushResult


def archive(api: HubSpotApi, chunk: Sequence[Change]) -> list[PushResult]:
    """Archives the contacts of ``chunk`` (at most one call's worth): OK for everyone."""
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
    if ids:
        api.archive([ident for ident in ids.values() if ident])
    return [PushResult(c.person_key, Outcome.OK, remote_id=ids.get(c.person_key)) for c in chunk]
