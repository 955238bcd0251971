"""Static segments (tags): find or create them by name, and apply batched tag calls.

The name -> id index is read once per destination (one paginated listing) and kept;
segments are created only for tags that gain members, under a lock so two threads never
create the same tag twice. A segment deleted by a marketer behind our back (404) is
forgotten and re-created once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from connectors.mailchimp.client import MailchimpApi, MailchimpApiError
from connectors.mailchimp.tags import TagCall, call_failures
from crmsync.errors import TransientError

log = logging.getLogger(__name__)
Mapper = Callable[[Callable[[str], dict[str, Any]], Iterable[str]], Iterator[dict[str, Any]]]


class SegmentIndex:
    """Tag name -> static segment id for one list."""

    def __init__(self, api: MailchimpApi, list_id: str) -> None:
        self._api = api
        self._list_id = list_id
        self._ids: dict[str, int] | None = None
        self._lock = threading.Lock()

    def resolve(
        self, create: Iterable[str], lookup: Iterable[str] = (), mapper: Mapper = map
    ) -> dict[str, int]:
        """Ids for ``create`` (made when missing) and for those of ``lookup`` that exist.

        ``mapper`` runs the creations (a thread pool's ``map`` makes them concurrent).
        """
        create, lookup = list(create), list(lookup)
        with self._lock:
            ids = self._loaded()
            missing = sorted({name for name in create if name not in ids})
            made = mapper(self._create, missing)
            for name, segment in zip(missing, made, strict=True):
                ids[name] = int(segment["id"])
            return {name: ids[name] for name in {*create, *lookup} if name in ids}

    def forget(self, name: str) -> None:
        with self._lock:
            if self._ids is not None:
                self._ids.pop(name, None)

    def _create(self, name: str) -> dict[str, Any]:
        try:
            return self._api.create_static_segment(self._list_id, name)
        except MailchimpApiError as exc:
            if exc.status != 400:
                raise
            # A retried create whose first answer was lost finds the tag already there.
            for segment in self._api.static_segments(self._list_id):
                if segment.get("name") == name:
                    return dict(segment)
            raise

    def _loaded(self) -> dict[str, int]:
        if self._ids is None:
            ids: dict[str, int] = {}
            for segment in self._api.static_segments(self._list_id):
                name, seg_id = str(segment.get("name", "")), int(segment.get("id", 0))
                if name in ids:
                    log.warning("two Mailchimp tags are named %r; using the older one", name)
                    seg_id = min(seg_id, ids[name])
                ids[name] = seg_id
            self._ids = ids
        return self._ids


@dataclass
class TagCallResult:
    """Per-address failures of one tag call; ``transient`` when the whole call failed so."""

    failed: dict[str, str] = field(default_factory=dict)
    transient: TransientError | None = None


def apply_call(
    api: MailchimpApi, index: SegmentIndex, list_id: str, call: TagCall, segment_id: int | None
) -> TagCallResult:
    """Sends one tag call; a vanished segment is re-created once and the call repeated."""
    if segment_id is None:  # removals from a tag that does not exist: nothing to do
        return TagCallResult()
    for attempt in (1, 2):
        try:
            answer = api.batch_segment(list_id, segment_id, call.body())
        except TransientError as exc:
            return TagCallResult(_all(call, f"tag {call.tag!r} not applied: {exc}"), exc)
        except MailchimpApiError as exc:
            if exc.status == 404 and attempt == 1:
                index.forget(call.tag)
                found = index.resolve(create=[call.tag] if call.add else [], lookup=[call.tag])
                segment_id = found.get(call.tag)
                if segment_id is None:
                    return TagCallResult()
                continue
            return TagCallResult(_all(call, f"tag {call.tag!r} not applied: {exc}"))
        return TagCallResult(
            {
                email: f"tag {call.tag!r} not applied: {why}"
                for email, why in call_failures(answer).items()
            }
        )
    return TagCallResult(_all(call, f"tag {call.tag!r} not applied: segment keeps vanishing"))


def apply_calls(
    api: MailchimpApi, index: SegmentIndex, list_id: str, calls: Sequence[TagCall], pool: Executor
) -> tuple[dict[str, str], list[TransientError | None]]:
    """Sends the calls concurrently: (failed address -> reason, each call's transient error).

    Tags that gain members are created first (concurrently); removals from a tag that
    does not exist need no call.
    """
    ids = index.resolve(
        create=sorted({call.tag for call in calls if call.add}),
        lookup=sorted({call.tag for call in calls}),
        mapper=pool.map,
    )
    send = partial(_send, api, index, list_id, ids)
    outcomes = list(pool.map(send, calls))
    failed: dict[str, str] = {}
    for outcome in outcomes:
        failed.update(outcome.failed)
    return failed, [outcome.transient for outcome in outcomes]


def _send(
    api: MailchimpApi, index: SegmentIndex, list_id: str, ids: dict[str, int], call: TagCall
) -> TagCallResult:
    return apply_call(api, index, list_id, call, ids.get(call.tag))


def _all(call: TagCall, message: str) -> dict[str, str]:
    return {email.lower(): message for email in call.emails()}
