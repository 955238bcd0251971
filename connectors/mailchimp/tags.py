"""Segment tags: which tag calls a batch of membership changes needs, as few as possible.

A Mailchimp tag is a static segment, and ``POST /lists/{id}/segments/{segment_id}`` takes
up to 500 ``members_to_add`` *and* 500 ``members_to_remove`` at once. Grouping every
person's moves by tag therefore needs, per tag, max(⌈adds/500⌉, ⌈removes/500⌉) calls,
which is the floor. Pure functions; the I/O is in ``segments``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.base import Change

MAX_TAG_NAME = 100  # Mailchimp's limit on a segment (tag) name


@dataclass(frozen=True, slots=True)
class TagMove:
    """One upserted person's tag changes, keyed by the address Mailchimp knows."""

    email: str
    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TagCall:
    """One batch call on one static segment."""

    tag: str
    add: tuple[str, ...]
    remove: tuple[str, ...]

    def body(self) -> dict[str, list[str]]:
        return {"members_to_add": list(self.add), "members_to_remove": list(self.remove)}

    def emails(self) -> tuple[str, ...]:
        return self.add + self.remove


def tag_problem(change: Change, prefix: str) -> str | None:
    """Why this change's tags must not be applied, or None when they are fine.

    Defence in depth: the core only passes tags it owns, but a tag outside the owned
    prefix is refused here too, so a marketer's hand-made tag can never be removed.
    """
    for tag in (*change.tags_add, *change.tags_remove):
        if not tag.startswith(prefix):
            return (
                f"refusing to change tag {tag!r}: crmsync only adds or removes tags that "
                f"start with its prefix {prefix!r}"
            )
        if len(tag) > MAX_TAG_NAME or not tag.strip():
            return f"tag {tag[:40]!r}... is empty or longer than {MAX_TAG_NAME} characters"
    both = set(change.tags_add) & set(change.tags_remove)
    if both:
        return f"tag {sorted(both)[0]!r} is both added and removed"
    return None


def plan_calls(moves: Iterable[TagMove], batch_size: int) -> list[TagCall]:
    """The fewest calls that apply every move: grouped by tag, adds and removes paired."""
    adds: dict[str, list[str]] = defaultdict(list)
    removes: dict[str, list[str]] = defaultdict(list)
    for move in moves:
        for tag in move.add:
            adds[tag].append(move.email)
        for tag in move.remove:
            removes[tag].append(move.email)
    calls: list[TagCall] = []
    for tag in sorted(adds.keys() | removes.keys()):
        to_add, to_remove = adds.get(tag, []), removes.get(tag, [])
        count = max(math.ceil(len(to_add) / batch_size), math.ceil(len(to_remove) / batch_size))
        for i in range(count):
            window = slice(i * batch_size, (i + 1) * batch_size)
            calls.append(TagCall(tag, tuple(to_add[window]), tuple(to_remove[window])))
    return calls


def floor_calls(adds: Mapping[str, int], removes: Mapping[str, int], batch_size: int) -> int:
    """The least number of tag calls any client needs for these per-tag counts."""
    return sum(
        max(math.ceil(adds.get(tag, 0) / batch_size), math.ceil(removes.get(tag, 0) / batch_size))
        for tag in adds.keys() | removes.keys()
    )


def call_failures(response: Mapping[str, Any]) -> dict[str, str]:
    """Per-address errors in a static-segment batch answer: lower-cased e-mail -> reason."""
    failed: dict[str, str] = {}
    for error in response.get("errors") or ():
        reason = str(error.get("error") or "Mailchimp refused the tag change")
        for email in error.get("email_addresses") or ():
            failed[str(email).lower()] = reason
    return failed


def moves_of(changes: Sequence[tuple[str, Change]]) -> list[TagMove]:
    """Tag moves for upserted people; (email as sent, change) pairs without moves are dropped."""
    return [
        TagMove(email, tuple(change.tags_add), tuple(change.tags_remove))
        for email, change in changes
        if change.tags_add or change.tags_remove
    ]
