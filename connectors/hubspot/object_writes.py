"""The writes of events as HubSpot CRM objects, for both ways of writing them: objects
of one kind created, updated or archived 100 a call through the CRM v3 objects' batch
endpoints, each input's answer read by its ``objectWriteTraceId``.

A create first finds what crmsync made before (``objects.Lookups``), so a resend after
a lost answer finds the object and creates nothing; a create answered with a 5xx is not
resent by the seam (HubSpot may have made it), the next try finds it first. HubSpot's
search index trails writes by a few seconds, which only a crash right after a create
and an immediate re-run could meet; the event ledger keeps every other resend from
happening at all. All the batch's line items go before the objects they belong to, which
are created associated with them: a crash between the two leaves line items without an
object (no workflow sees them), never an object without its lines.

An object HubSpot refuses while associated with the people's ledger's contact id is made
once more, with the same line items, associated with the contact read by e-mail: a
contact merged or deleted in HubSpot since the push refuses its input (or, for all
HubSpot says, the whole call).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.hubspot.client import HubSpotApi, HubSpotApiError
from connectors.hubspot.commerce_bodies import LINE_ITEMS, association, line_item
from connectors.hubspot.objects import Found, Lookups, ObjectKind, chunks, contact_of, email_of
from crmsync.contract import Outcome
from crmsync.errors import TransientError
from crmsync.events import Event, EventResult

REFUSED = "VALIDATION_ERROR"  # an error category no resend changes
NO_CONTACT = (
    "HubSpot has no contact with this e-mail yet (crmsync's people push creates it): "
    "the event was not sent"
)
Answer = tuple[dict[str, str], dict[str, str]] | str  # made, refused; or why the call failed
Properties = Callable[[Event], dict[str, str]]


def outcome(reason: str) -> Outcome:
    """REJECTED for what HubSpot refused (sending it again changes nothing), else FAILED."""
    return Outcome.REJECTED if reason.startswith("refused") else Outcome.FAILED


def result(
    event: Event, answer: Outcome, message: str = "", remote_id: str | None = None
) -> EventResult:
    return EventResult(event.key, answer, remote_id, message)


class ObjectWriter:
    """Batch creates, updates and archives for one account's events."""

    def __init__(self, api: HubSpotApi, reads: Lookups) -> None:
        self._api = api
        self._reads = reads

    def create(
        self,
        kind: ObjectKind,
        events: Sequence[Event],
        by_email: Mapping[str, str],
        properties: Properties,
    ) -> dict[str, EventResult]:
        """The events' objects with their line items, those not there already; each
        associated with its person's contact (``objects.contact_of``, which must have
        one)."""
        results: dict[str, EventResult] = {}
        if not events:
            return results
        existing = self._reads.find(kind, events)
        fresh: dict[tuple[str, str], Event] = {}
        for event in events:
            record = (event.source, event.record_id)
            there = existing.get(record)
            if there is not None:
                results[event.key] = result(event, Outcome.OK, "already there", there)
            else:
                fresh.setdefault(record, event)
        lines, refused = self._line_items(list(fresh.values()))
        ready: list[Event] = []
        for event in fresh.values():
            if event.key in refused:
                reason = refused[event.key]
                results[event.key] = result(event, outcome(reason), f"line items: {reason}")
            else:
                ready.append(event)
        contacts = {e.key: c for e in ready if (c := contact_of(e, by_email))}
        results.update(self._objects(kind, ready, contacts, lines, properties))
        results.update(self._again_by_email(kind, results, ready, contacts, lines, properties))
        for event in events:  # the same record twice in the batch: the first one's answer
            if event.key not in results:
                first = results[fresh[(event.source, event.record_id)].key]
                results[event.key] = result(event, first.outcome, first.message, first.remote_id)
        return results

    def _again_by_email(
        self,
        kind: ObjectKind,
        results: Mapping[str, EventResult],
        events: Sequence[Event],
        contacts: dict[str, str],
        lines: Mapping[str, list[str]],
        properties: Properties,
    ) -> dict[str, EventResult]:
        """The objects refused while associated with the ledger's contact id, made again
        with the contact read by e-mail; one whose e-mail has none keeps its refusal."""
        refused = [
            e
            for e in events
            if results[e.key].outcome is Outcome.REJECTED
            and e.facts is not None
            and e.facts.person_remote_id == contacts[e.key]
        ]
        if not refused:
            return {}
        current = self._reads.ids_by_email(email_of(e) for e in refused)
        again = [e for e in refused if email_of(e) in current]
        contacts.update({e.key: current[email_of(e)] for e in again})
        return self._objects(kind, again, contacts, lines, properties)

    def _objects(
        self,
        kind: ObjectKind,
        events: Sequence[Event],
        contacts: Mapping[str, str],
        lines: Mapping[str, list[str]],
        properties: Properties,
    ) -> dict[str, EventResult]:
        """The events' objects, 100 a call, associated with their contacts and lines."""
        results: dict[str, EventResult] = {}
        for chunk in chunks(events):
            inputs: list[dict[str, Any]] = []
            for n, event in enumerate(chunk):
                links = [association(contacts[event.key], kind.to_contact)]
                links += [association(ident, kind.to_line_item) for ident in lines[event.key]]
                inputs.append(
                    {
                        "properties": properties(event),
                        "associations": links,
                        "objectWriteTraceId": str(n),
                    }
                )
            answer = self.batch(kind.name, "create", inputs)
            for n, event in enumerate(chunk):
                results[event.key] = _answered(event, answer, str(n))
        return results

    def _line_items(self, events: Sequence[Event]) -> tuple[dict[str, list[str]], dict[str, str]]:
        """The events' line items, made 100 a call: their ids per event key, and why, for
        the events one of whose lines was not made."""
        lines = [
            (event.key, line_item(line, event.currency)) for event in events for line in event.lines
        ]
        line_ids: dict[str, list[str]] = {e.key: [] for e in events}
        refused: dict[str, str] = {}
        for part in chunks(lines):
            inputs = [
                {"properties": props, "objectWriteTraceId": str(n)}
                for n, (_, props) in enumerate(part)
            ]
            answer = self.batch(LINE_ITEMS, "create", inputs)
            for n, (owner, _) in enumerate(part):
                if isinstance(answer, str):
                    refused.setdefault(owner, answer)
                elif str(n) in answer[0]:
                    line_ids[owner].append(answer[0][str(n)])
                else:
                    reason = answer[1].get(str(n), "failed: a line item was not made")
                    refused.setdefault(owner, reason)
        return line_ids, refused

    def update(
        self,
        kind: ObjectKind,
        events: Sequence[Event],
        by_email: Mapping[str, str],
        made: Found,
        changes: Properties,
        missing: str,
    ) -> dict[str, EventResult]:
        """Changes to objects crmsync made (``made``: this batch's own, which HubSpot's
        search may not show yet), merged per object; for an object not there, REJECTED
        when its person has no contact (so its create was refused too), else FAILED with
        ``missing`` (formatted with the record's id: its create may go in a later run)."""
        results: dict[str, EventResult] = {}
        if not events:
            return results
        unknown = [e for e in events if (e.source, e.record_id) not in made]
        existing = {**(self._reads.find(kind, unknown) if unknown else {}), **made}
        merged: dict[str, dict[str, str]] = {}  # object id -> properties
        owners: dict[str, list[Event]] = {}
        for event in events:
            there = existing.get((event.source, event.record_id))
            if there is None:
                if contact_of(event, by_email) is None:
                    results[event.key] = result(event, Outcome.REJECTED, NO_CONTACT)
                else:
                    message = missing.format(event.record_id)
                    results[event.key] = result(event, Outcome.FAILED, message)
                continue
            merged.setdefault(there, {}).update(changes(event))
            owners.setdefault(there, []).append(event)
        for chunk in chunks(list(merged)):
            inputs = [
                {"id": ident, "properties": merged[ident], "objectWriteTraceId": ident}
                for ident in chunk
            ]
            answer = self.batch(kind.name, "update", inputs)
            for ident in chunk:
                for event in owners[ident]:
                    results[event.key] = _answered(event, answer, ident)
        return results

    def archive(self, kind: ObjectKind, events: Sequence[Event]) -> dict[str, EventResult]:
        """The events' objects archived; one not there is what was wanted: OK."""
        results: dict[str, EventResult] = {}
        if not events:
            return results
        existing = self._reads.find(kind, events)
        ids = list(dict.fromkeys(i for e in events if (i := existing.get((e.source, e.record_id)))))
        for event in events:
            if (event.source, event.record_id) not in existing:
                results[event.key] = result(event, Outcome.OK, f"no {kind.noun} to close")
        for chunk in chunks(ids):
            body = {"inputs": [{"id": ident} for ident in chunk]}
            try:
                self._api.document("POST", f"/crm/v3/objects/{kind.name}/batch/archive", body)
                problem = ""
            except (TransientError, HubSpotApiError) as exc:
                problem = str(exc)
            for event in events:
                there = existing.get((event.source, event.record_id))
                if there in chunk:
                    answer = Outcome.FAILED if problem else Outcome.OK
                    results[event.key] = result(event, answer, problem, there)
        return results

    def batch(self, name: str, verb: str, inputs: Sequence[Mapping[str, Any]]) -> Answer:
        """trace id -> object id, trace id -> why refused; or why the whole call failed
        ("refused ..." when HubSpot refused it, which sending again would not change)."""
        path = f"/crm/v3/objects/{name}/batch/{verb}"
        try:
            body = {"inputs": list(inputs)}
            response = self._api.send("POST", path, body, resend=verb != "create")
        except TransientError as exc:
            return f"HubSpot did not answer: {exc}"
        if not response.is_success:
            error = HubSpotApiError.from_response(response)
            prefix = "refused" if error.status == 400 else "failed"
            return f"{prefix} by HubSpot: {error.message}"
        try:
            document = response.json()
        except ValueError:
            return "failed: HubSpot's answer is not JSON"
        made = {
            str(item.get("objectWriteTraceId")): str(item["id"])
            for item in document.get("results") or ()
            if item.get("id") is not None
        }
        errors: dict[str, str] = {}
        for error in document.get("errors") or ():
            prefix = "refused" if error.get("category") == REFUSED else "failed"
            message = f"{prefix} by HubSpot: {error.get('message') or error.get('category')}"
            for trace in (error.get("context") or {}).get("objectWriteTraceId") or ():
                errors[str(trace)] = message
        return made, errors


def _answered(event: Event, answer: Answer, trace: str) -> EventResult:
    """One input's result from a batch call's answer."""
    if isinstance(answer, str):
        return result(event, outcome(answer), answer)
    if trace in answer[0]:
        return result(event, Outcome.OK, "", answer[0][trace])
    reason = answer[1].get(trace, "failed: HubSpot did not answer for it")
    return result(event, outcome(reason), reason)
