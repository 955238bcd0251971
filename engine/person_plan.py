"""``plan --person EMAIL``: one person as a run would see them now, to answer "why is she
(not) in that segment" and "what exactly goes to each tool".

Everything comes from the run's own code on the staged data: the profile from the
profile builder, the segments from the pipeline's rules, and per destination the
planner's decision (create, update, unchanged or a skip reason) with the payload its
mapping makes, memberships and consent intents included, on a key range holding only
this person. For a pipeline with events on, the person's events the next run would send
each destination, with their keys and times (``engine.plan_events``, given by the
caller). Nothing is read from a source, pushed or written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from crmsync import normalize
from crmsync.config import PipelineSpec
from crmsync.contract import Action, Change
from crmsync.diff import Policy
from crmsync.profile_scope import KeyRange, ProfileContext
from engine.planner import Planner, Target, decisions
from engine.profiles import iter_profiles


def person_key(email: str) -> str:
    """The person key of an e-mail address, normalised as staging does (``RecordError``
    for one that is not an address)."""
    normalised = normalize.email(email)
    if not normalised:
        raise ValueError("an empty e-mail address")
    return f"e:{normalised}"


def plan_person(
    conn: Connection,
    spec: PipelineSpec,
    key: str,
    as_of: datetime,
    now: datetime,
    events: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The person's profile, segments and per destination decision and payload (and
    ``events``, their pending events per destination, as given); None when the pipeline
    has nobody with this key."""
    as_of_ms = _ms(as_of)
    ctx = ProfileContext(
        sources=tuple(s.name for s in spec.sources),
        consent_scopes=tuple(s.name for s in spec.sources)
        + tuple(d.name for d in spec.destinations),
        currency=spec.currency,
        as_of_ms=as_of_ms,
        settings=spec.settings.profile,
    )
    only = KeyRange(key, key + "\x01")  # keys hold no control characters: just this one
    profile = next(iter(iter_profiles(conn, ctx, only)), None)
    if profile is None:
        return None
    targets = [Target(d.name, d.mapping) for d in spec.destinations]
    policy = Policy(max_attempts=spec.settings.max_attempts, now_ms=_ms(now))
    planner = Planner(ctx, spec.segments, targets, policy, as_of, samples=0)
    tally = planner.new_tally()
    changes = {targets[index].name: change for index, change in planner.changes(conn, tally, only)}
    segments = list(spec.segments.evaluate(profile, as_of))
    destinations = {}
    for target in targets:
        decided = decisions(tally.counts[target.name])
        decision = next(iter(decided), "none")
        change = changes.get(target.name)
        destinations[target.name] = (
            _change(decision, change)
            if change is not None
            else _held(decision, target.mapping, profile, segments)
        )
    return {
        "pipeline": spec.name,
        "person_key": key,
        "as_of": as_of.isoformat(),
        "profile": profile,
        "segments": segments,
        "destinations": destinations,
        **({"events": dict(events)} if events is not None else {}),
    }


def _change(decision: str, change: Change) -> dict[str, Any]:
    """The payload the run would send: exactly the change a pusher gets."""
    return {
        "decision": decision,
        "sent": True,
        "action": change.action.value,
        "fields": dict(change.fields) if change.action is Action.UPSERT else {},
        "memberships": list(change.memberships),
        "memberships_add": list(change.memberships_add),
        "memberships_remove": list(change.memberships_remove),
        "email_intent": change.email_intent.value,
        "sms_intent": change.sms_intent.value,
    }


def _held(
    decision: str, mapping: Any, profile: Mapping[str, Any], segments: list[str]
) -> dict[str, Any]:
    """Nothing to send (unchanged, or skipped and why): what the mapping makes of the
    person, which the destination already holds when unchanged."""
    return {
        "decision": decision,
        "sent": False,
        "fields": dict(mapping.apply(profile)),
        "memberships": list(mapping.memberships_for(tuple(segments))),
    }


def render_person(data: dict[str, Any]) -> str:
    lines = [f"pipeline {data['pipeline']}: {data['person_key']} as of {data['as_of']}"]
    lines.append("  profile:")
    for name, value in data["profile"].items():
        if value is not None and value not in ([], ""):
            lines.append(f"    {name}: {_text(value)}")
    lines.append("  segments: " + (", ".join(data["segments"]) or "none"))
    for name, d in data["destinations"].items():
        what = "would send" if d["sent"] else "sends nothing"
        lines.append(f"  -> {name}: {d['decision']} ({what})")
        if d["sent"]:
            lines.append(
                f"     action {d['action']}, e-mail {d['email_intent']}, sms {d['sms_intent']}"
            )
        for field, value in d["fields"].items():
            lines.append(f"     {field} = {_text(value)}")
        moves = [f"+{m}" for m in d.get("memberships_add", [])]
        moves += [f"-{m}" for m in d.get("memberships_remove", [])]
        held = ", ".join(d["memberships"]) or "none"
        lines.append(f"     memberships: {held}" + (f" ({' '.join(moves)})" if moves else ""))
    for name, pending in data.get("events", {}).items():
        lines.append(f"  -> {name} events: {_pending_sum(pending)}")
        for event in pending["events"]:
            historical = ", historical" if event["historical"] else ""
            value = f", {event['value']} {event['currency']}" if event["value"] is not None else ""
            lines.append(
                f"     {event['name']} at {event['occurred_at']}{value}{historical}: {event['key']}"
            )
    return "\n".join(lines)


def _pending_sum(pending: Mapping[str, Any]) -> str:
    parts = [f"would send {len(pending['events'])}"]
    parts += [f"{name} {pending[name]}" for name in ("already_sent", "waiting") if pending[name]]
    return ", ".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)
