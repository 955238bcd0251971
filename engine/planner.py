"""Per person: profile, segments, each destination's mapped payload, and the diff.

``Planner.changes`` is the one loop a run makes over people, whether in the run's own
process or in worker processes that each take a slice of the key space (``parallel``).
It yields only the changes to push; everything else a run reports (profiles, segment
sizes, per-destination decisions and samples, and the keys of the people a destination
could not address, so that their records can be named) goes into a ``Tally``, which
slices can add up in key order so a partitioned run reports exactly what a single
process would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.engine import Connection

from crmsync.contract import Action, Change
from crmsync.diff import Acked, InFlight, OpenFailure, Policy, Skip, decide
from crmsync.fields import catalogue
from crmsync.merge_join import keyed, merge_groups
from crmsync.profile_scope import EVERYONE, KeyRange, ProfileContext
from crmsync.rule_horizon import RuleHorizon
from engine.profiles import ProfileBuilder
from state import schema
from state.ledger import SEPARATOR, failures_query, in_flight_query, ledger_query
from state.planned import SEPARATOR as PLAN_SEPARATOR
from state.planned import PlannedRow, scope_stream
from state.profile_reads import (
    PROFILE_STREAMS,
    execute,
    foreign_currency_orders,
    in_range,
    profile_streams,
    within,
)

TICK_EVERY = 4096  # people between calls of the caller's tick (progress, liveness)
_NAME_CACHE = 4096  # segment sets remembered per destination (they repeat a lot)
_NO_FIELDS: dict[str, Any] = {}
_INVALID = Skip.INVALID  # compared by identity in the loop
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# what a person's plan reads of the profile besides the mapped fields and rules
_DIFF_FIELDS = frozenset({"email", "phone", "email_consent", "sms_consent", "deleted"})

# (person key, next_at in ms, segments "\n"-joined, lasting skips): one planned person;
# segments None: nobody now (a row dated later may make someone), next_at None too: nobody
# any more. Lasting skips ("<destination>=<decision>", "\n"-joined, None: none) are the
# decisions that hold as long as the person's plan does, so a run that keeps the plan
# can count them.
Planned = Callable[[PlannedRow], None]
_LASTING_SKIPS = (Skip.INVALID, Skip.NEVER_SYNCED_DELETED, Skip.COMPLIANCE, Skip.REJECTED)
LASTING = frozenset(s.value for s in (*_LASTING_SKIPS, Skip.GAVE_UP))


@dataclass(frozen=True, slots=True)
class Target:
    """A destination as the planner sees it: its name and compiled mapping."""

    name: str
    mapping: Any  # mappings.CompiledMapping


@dataclass
class Tally:
    """What a run reports besides the changes, for one slice of people or all of them."""

    profiles: int = 0
    foreign_orders: int = 0
    segments: Counter[str] = field(default_factory=Counter)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # per destination, the keys of the people skipped as invalid (few), in key order
    invalid: dict[str, list[str]] = field(default_factory=dict)

    def add(self, other: Tally, samples: int) -> None:
        """Adds a later slice's tally (samples stay the first ``samples`` in key order)."""
        self.profiles += other.profiles
        self.foreign_orders += other.foreign_orders
        self.segments.update(other.segments)
        for name, counts in other.counts.items():
            self.counts.setdefault(name, Counter()).update(counts)
        for name, found in other.samples.items():
            kept = self.samples.setdefault(name, [])
            kept.extend(found[: max(samples - len(kept), 0)])
        for name, keys in other.invalid.items():
            self.invalid.setdefault(name, []).extend(keys)


class Planner:
    """Builds, segments, maps and diffs every person of one key range."""

    def __init__(
        self,
        ctx: ProfileContext,
        segments: Any,  # crmsync.segments.SegmentSet
        targets: Sequence[Target],
        policy: Policy,
        as_of: datetime,
        samples: int,
    ) -> None:
        self.ctx, self.segments, self.targets = ctx, segments, tuple(targets)
        self.policy, self.as_of, self.samples = policy, as_of, samples
        self.builder = ProfileBuilder(ctx)
        # the fields a destination can address a person by (any one of them must be set)
        self.identities = tuple(
            tuple(f for f in (t.mapping.identity_email, t.mapping.identity_phone) if f)
            for t in self.targets
        )
        self._groups: list[dict[tuple[str, ...], tuple[str, ...]]] = [{} for _ in self.targets]
        watched = set(segments.fields_used) | _DIFF_FIELDS
        for target in self.targets:
            watched |= target.mapping.profile_fields_used
        self.planning_builder = ProfileBuilder(ctx, frozenset(watched))
        self.horizon = RuleHorizon.compile(segments.rules, catalogue(ctx.settings.windows_days))

    def new_tally(self) -> Tally:
        return Tally(
            counts={t.name: Counter() for t in self.targets},
            samples={t.name: [] for t in self.targets},
            invalid={t.name: [] for t in self.targets},
        )

    def changes(
        self,
        conn: Connection,
        tally: Tally,
        keys: KeyRange = EVERYONE,
        tick: Callable[[], None] | None = None,
        *,
        scope: Table | None = None,
        planned: Planned | None = None,
    ) -> Iterator[tuple[int, Change]]:
        """(destination index, change) for every person in ``keys`` who has one.

        ``scope``: only the people in this temporary table of keys on ``conn`` (an
        incremental run; every key in it is passed to ``planned``, those with nobody left
        as such). ``planned``: receives each person's plan (``PlannedRow``) to keep.
        """
        if scope is None:  # an incremental run counts them apart, over everyone
            tally.foreign_orders += foreign_currency_orders(conn, self.ctx, keys)
        streams = profile_streams(conn, self.ctx, keys, scope)
        for target in self.targets:
            for query, table in (
                (ledger_query(conn, target.name), schema.ledger),
                (failures_query(conn, target.name), schema.failures),
                (in_flight_query(conn, target.name), schema.in_flight),
            ):
                ranged = query.where(in_range(conn, table.c.person_key, keys))
                scoped = within(conn, ranged, table.c.person_key, scope)
                streams.append(keyed(execute(conn, scoped)))
        if scope is not None:
            ranged = scope_stream(conn).where(in_range(conn, scope.c.person_key, keys))
            streams.append(keyed(execute(conn, ranged)))
        destinations = [
            (
                index,
                target.mapping.apply,
                self.identities[index],
                tally.counts[target.name],
                tally.samples[target.name],
                tally.invalid[target.name],
                PROFILE_STREAMS + 3 * index,  # its ledger, failures and in-flight slots
            )
            for index, target in enumerate(self.targets)
        ]
        combos: dict[tuple[str, ...], int] = {}  # segment sets repeat: count each set once
        build = self.builder.build_with_activity
        build_planned = self.planning_builder.build_planned
        evaluate, as_of, policy, wanted = (
            self.segments.evaluate,
            self.as_of,
            self.policy,
            self.samples,
        )
        rules_next = self.horizon.next_change
        try:
            for key, slots in merge_groups(streams):
                if planned is None:
                    built = build(key, slots)
                    if built is None:
                        continue  # only a ledger, failure or consent row: nobody to sync
                    profile, activity = built
                    next_at = None
                else:
                    found = build_planned(key, slots)
                    person = found[0] if found is not None else None
                    if found is None or person is None:
                        # nobody (any more, or yet: next_at says when a row starts to count)
                        if found is not None or scope is not None:
                            planned((key, found[2] if found else None, None, None))
                        continue
                    profile, activity, next_at = person, found[1], found[2]
                tally.profiles += 1
                if tick is not None and not tally.profiles % TICK_EVERY:
                    tick()
                member_of = evaluate(profile, as_of)
                combos[member_of] = combos.get(member_of, 0) + 1
                if planned is not None:
                    turn = rules_next(profile, as_of)
                    if turn is not None:
                        turn_ms = (turn - _EPOCH) // _MS
                        next_at = turn_ms if next_at is None or turn_ms < next_at else next_at
                lasting: list[str] = []
                deleted = profile["deleted"]
                for index, apply, identities, counts, samples, invalid, slot in destinations:
                    acked_row, failure_row, flying = slots[slot], slots[slot + 1], slots[slot + 2]
                    acked = _acked(acked_row) if acked_row is not None else None
                    failure = _failure(failure_row) if failure_row is not None else None
                    in_flight = _in_flight(flying) if flying is not None else None
                    identified = _identified(profile, identities)
                    # decide() reads the payload only of someone it may upsert: map no one else
                    upsert = identified and not deleted
                    if failure is not None and failure.reason_class == "compliance":
                        upsert = False
                    outcome = decide(
                        profile,
                        apply(profile) if upsert else _NO_FIELDS,
                        self._groups_for(index, member_of),
                        identified,
                        acked,
                        failure,
                        policy,
                        activity,
                        in_flight,
                    )
                    if isinstance(outcome, Skip):
                        counts[outcome.value] += 1
                        if outcome is _INVALID:  # rare: remembered to name their records
                            invalid.append(key)
                        if planned is not None and outcome.value in LASTING:
                            lasting.append(f"{self.targets[index].name}={outcome.value}")
                        continue
                    count_change(counts, outcome)
                    if len(samples) < wanted:
                        samples.append(sample(outcome, acked))
                    yield index, outcome
                if planned is not None:
                    skips = PLAN_SEPARATOR.join(lasting) if lasting else None
                    planned((key, next_at, PLAN_SEPARATOR.join(member_of), skips))
        finally:  # also when the caller stops early
            for combo, n in combos.items():
                for name in combo:
                    tally.segments[name] += n

    def _groups_for(self, index: int, member_of: tuple[str, ...]) -> tuple[str, ...]:
        cache = self._groups[index]
        groups = cache.get(member_of)
        if groups is None:
            if len(cache) >= _NAME_CACHE:
                cache.clear()
            groups = cache[member_of] = self.targets[index].mapping.memberships_for(member_of)
        return groups


def _identified(profile: dict[str, Any], identities: tuple[str, ...]) -> bool:
    """Whether any of the destination's identity fields is set (any, when it names none)."""
    if not identities:
        return True
    for name in identities:  # noqa: SIM110 (a plain loop: any() over a generator costs more)
        if profile.get(name):
            return True
    return False


def _acked(row: Any) -> Acked:
    _, payload_hash, memberships, remote_id, status, acked_at, payload = row
    groups = tuple(memberships.split(SEPARATOR)) if memberships else ()
    return Acked(payload_hash, groups, remote_id, status, acked_at, payload)


def _in_flight(row: Any) -> InFlight:
    _, action, possible, job = row
    return InFlight(action, tuple(possible.split(SEPARATOR)) if possible else (), job)


def _failure(row: Any) -> OpenFailure:
    _, reason_class, payload_hash, attempts, next_attempt_at = row
    return OpenFailure(reason_class, payload_hash, attempts, next_attempt_at)


_MOVES = frozenset({"memberships_added", "memberships_removed"})


def decisions(counts: Counter[str]) -> dict[str, int]:
    """The one-per-person counts (a change's action or a skip's reason): they add up to
    the profiles planned, unlike the membership moves counted beside them."""
    return {k: n for k, n in counts.items() if k not in _MOVES}


def count_change(counts: Counter[str], change: Change) -> None:
    if change.action is Action.UPSERT:  # an identity test: Enum.value is a Python descriptor
        counts["create" if change.is_new else "update"] += 1
    else:
        counts[change.action.value] += 1
    counts["memberships_added"] += len(change.memberships_add)
    counts["memberships_removed"] += len(change.memberships_remove)


def sample(change: Change, acked: Acked | None) -> dict[str, Any]:
    """What `plan` shows of one change: the fields that differ from the acknowledged ones."""
    before = orjson.loads(acked.payload) if acked is not None and acked.payload else {}
    after = dict(change.fields)
    changed = {
        name: {"from": before.get(name), "to": after.get(name)}
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }
    return {
        "person_key": change.person_key,
        "action": change.action.value
        if change.action.value != "upsert"
        else ("create" if change.is_new else "update"),
        "fields": changed,
        "memberships_add": list(change.memberships_add),
        "memberships_remove": list(change.memberships_remove),
        "email_intent": change.email_intent.value,
    }
