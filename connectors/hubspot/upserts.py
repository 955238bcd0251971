"""One batch upsert by e-mail, and what HubSpot's answer says about each person.

Each input carries an ``objectWriteTraceId`` (its place in the call), which HubSpot
echoes on the input's result and on its error, so a 207 multi-status answer becomes one
result per person: OK with the contact's id (kept in the ledger), or refused with
HubSpot's message (REJECTED for a validation error such as an invalid e-mail: sent again
only when the person changes; FAILED otherwise). A batch refused as a whole because of
one input's value (a 400 whose errors are not about a property missing from the
account) is halved until the refused inputs are found, so one bad value costs only its
own person. A property missing from the account (deleted in HubSpot since ``prepare``)
fails the batch: the next run's ``prepare`` creates it again. A batch refused because a
value is not one of a property's options (``INVALID_OPTION``) first asks ``options_lost``
whether options were missing and are now restored (another writer's update replaced
the segment options: HubSpot's update replaces the whole list); if so it is sent again,
once, before any halving.

When the day's calls run out (``DailyLimitReached``), a call not sent raises it, but
once halving has sent part of a batch, the people of the halves not sent are NOT_SENT
and the rest keep the answers HubSpot gave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.hubspot.client import HubSpotApi, HubSpotApiError
from crmsync.contract import Change, Outcome, PushResult
from crmsync.errors import SendLater

MISSING_PROPERTY = "PROPERTY_DOESNT_EXIST"
INVALID_OPTION = "INVALID_OPTION"  # a value that is not one of the property's options
REFUSED = "VALIDATION_ERROR"  # the category of a value HubSpot will not take
Inputs = Mapping[str, Mapping[str, Any]]  # person key -> batch input (without its trace id)


def not_sent(changes: Sequence[Change], why: SendLater) -> list[PushResult]:
    """NOT_SENT for people none of whose calls went out: HubSpot can take no more today."""
    return [PushResult(c.person_key, Outcome.NOT_SENT, message=str(why)) for c in changes]


def upsert(
    api: HubSpotApi,
    chunk: Sequence[Change],
    inputs: Inputs,
    options_lost: Callable[[], bool] | None = None,
) -> list[PushResult]:
    """Results for the people of ``chunk`` (at most one call's worth); ``SendLater`` when
    nothing of it was sent. ``options_lost``: restores the options the chunk needs after
    HubSpot found one missing; True when it restored any (the chunk goes again)."""
    entries = [
        {**inputs[change.person_key], "objectWriteTraceId": str(i)}
        for i, change in enumerate(chunk)
    ]
    response = api.upsert(entries)
    if response.is_success:
        try:
            return read_answer(chunk, response.json())
        except ValueError as exc:
            raise HubSpotApiError(response.status_code, "UNREADABLE", "not JSON") from exc
    error = HubSpotApiError.from_response(response)
    if error.status != 400 or MISSING_PROPERTY in error.codes:
        raise error
    if options_lost is not None and INVALID_OPTION in error.codes and options_lost():
        return upsert(api, chunk, inputs)
    if len(chunk) == 1:
        reason = f"HubSpot refused the contact: {error.message}"
        return [PushResult(chunk[0].person_key, Outcome.REJECTED, message=reason)]
    half = len(chunk) // 2
    first = upsert(api, chunk[:half], inputs)  # SendLater here: nothing of chunk was sent
    try:
        second = upsert(api, chunk[half:], inputs)
    except SendLater as exc:
        second = not_sent(chunk[half:], exc)
    return [*first, *second]


def read_answer(chunk: Sequence[Change], document: Any) -> list[PushResult]:
    """One result per person HubSpot answered for (a person it left out is the caller's
    to fail), from the ``results`` and ``errors`` of a 200 or 207 answer."""
    if not isinstance(document, dict):
        return []
    by_trace = {str(i): change for i, change in enumerate(chunk)}
    answered: dict[str, PushResult] = {}
    for item in document.get("results") or ():
        change = by_trace.get(str(item.get("objectWriteTraceId")))
        if change is not None and item.get("id"):
            key = change.person_key
            answered[key] = PushResult(key, Outcome.OK, remote_id=str(item["id"]))
    for error in document.get("errors") or ():
        context = error.get("context") or {}
        outcome = Outcome.REJECTED if error.get("category") == REFUSED else Outcome.FAILED
        message = f"HubSpot refused the contact: {error.get('message') or error.get('category')}"
        for trace in context.get("objectWriteTraceId") or ():
            change = by_trace.get(str(trace))
            if change is not None:
                answered[change.person_key] = PushResult(
                    change.person_key, outcome, message=message
                )
    return list(answered.values())
