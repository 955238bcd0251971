"""The fake Mailchimp a bench pushes to: one made to the bench's options, its audience read
back, its calls named, and the floor of calls between two audiences."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.bench_mailchimp import TAG_CALL, UPSERT, sync_floor
from bench.e2e.options import Options

if TYPE_CHECKING:
    from tests.fakes.mailchimp import FakeMailchimp

CALL_NAMES = {
    UPSERT: "upsert",
    TAG_CALL: "tag_batch",
    ("POST", "/lists/{list_id}/segments"): "tag_create",
    ("POST", "/lists/{list_id}/merge-fields"): "merge_field_create",
    ("PATCH", "/lists/{list_id}/merge-fields/{merge_id}"): "merge_field_update",
    ("DELETE", "/lists/{list_id}/members/{subscriber_hash}"): "archive",
}
SYNC_CALLS = ("upsert", "tag_batch", "archive")  # the rest are one-time calls and reads


def new_fake(options: Options, validate: bool = False) -> FakeMailchimp:
    """A fake (not started) with the bench's latency and connection cap; spec validation
    off unless asked for, since it would cost more than the calls it checks."""
    from tests.fakes.mailchimp import FakeMailchimp

    return FakeMailchimp(
        validate=validate, latency=options.latency, max_connections=options.connections
    )


def call_name(method: str, route: str) -> str:
    return CALL_NAMES.get((method, route)) or f"{method} {route}"


@dataclass(frozen=True)
class Audience:
    """What the fake holds: per member (by address) its status and merge fields (as one
    fingerprint), per tag its members' addresses."""

    members: dict[str, tuple[str, str]]
    tags: dict[str, frozenset[str]]

    @classmethod
    def of(cls, fake: FakeMailchimp) -> Audience:
        with fake._lock:
            members = {
                m["email_address"].lower(): (
                    m["status"],
                    json.dumps(m["merge_fields"], sort_keys=True),
                )
                for m in fake.audience.members.values()
            }
            tags = {tag: frozenset(emails) for tag, emails in fake.tag_members().items()}
        return cls(members, tags)


def floor_calls(before: Audience, after: Audience) -> int:
    """The fewest sync calls any client needs to take the fake from ``before`` to ``after``:
    the Mailchimp bench's floor for the members upserted (as one push) and the tag moves,
    plus one DELETE per archived member (Mailchimp has no batch archive)."""
    upserts = archives = 0
    for key, (status, fields) in after.members.items():
        if before.members.get(key) == (status, fields):
            continue
        if status == "archived":
            archives += 1
        else:
            upserts += 1
    adds = {t: len(m - before.tags.get(t, frozenset())) for t, m in after.tags.items()}
    removes = {t: len(before.tags.get(t, frozenset()) - m) for t, m in after.tags.items()}
    return sync_floor([upserts], adds, removes, before.tags) + archives
