"""What the CLI shows: run summaries, pipeline status and the consent export.

Kept apart from the CLI so the same data serves ``--json``, the text view and, later,
``serve``'s metrics.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import datetime
from typing import IO, Any

from sqlalchemy.engine import Connection

from crmsync.config import PipelineSpec
from crmsync.runs import RunReport
from state.events import event_counts
from state.ledger import consent_events
from state.run_counts import acknowledged_by_run
from state.store import RunRow, Store
from state.timeutil import from_ms, to_ms

# a destination's decisions, one per profile, in this order (others after, by name)
_CHANGES = ("create", "update", "archive", "delete")
_SKIPS = (
    "invalid",
    "deleted_unsynced",
    "awaiting_job",
    "deferred",
    "rejected",
    "compliance",
    "gave_up",
)
# what the destination answered for the changes sent, and what was not sent
_RESULTS = ("ok", "pending", "failed", "rejected", "compliance", "not_sent")


def render_report(report: RunReport) -> str:
    head = "plan" if report.dry_run else f"run {report.run_id} ({report.kind})"
    lines = [
        f"pipeline {report.pipeline}: {head} as of {report.as_of:%Y-%m-%dT%H:%M:%SZ}"
        f" -> {report.status}"
    ]
    for stream, s in report.pulled.items():
        lines.append(f"  pulled {stream}: {pulled_sum(s)}")
    for name, n in report.consent_read.items():
        if n:
            lines.append(f"  consent read back from {name}: {n} opt-out(s)")
    lines.append(f"  profiles: {profiles_sum(report)}")
    if report.segments:
        members = ", ".join(f"{k} {v}" for k, v in sorted(report.segments.items()))
        lines.append(f"  segments: {members}")
    for d in report.destinations.values():
        lines.append(f"  -> {d.name} ({d.kind}): {people_sum(d.decisions)}")
        answered = d.counts - d.decisions  # the push results, beside the decisions
        results = [f"{k} {answered[k]}" for k in _RESULTS if answered.get(k)]
        moves = [
            f"{sign}{d.counts[k]}"
            for sign, k in (("+", "memberships_added"), ("-", "memberships_removed"))
            if d.counts.get(k)
        ]
        answers = [f"pushed: {', '.join(results)}"] if results else []
        answers += [f"memberships {' '.join(moves)}"] if moves else []
        if answers:
            lines.append(f"     {'; '.join(answers)}")
        if d.error:
            lines.append(f"     error: {d.error}")
        for sample in d.samples:
            if sample["action"] == "create":
                diff = ", ".join(
                    f"{k}={v['to']!r}" for k, v in sample["fields"].items() if v["to"] is not None
                )
            else:
                diff = ", ".join(
                    f"{k}: {v['from']!r} -> {v['to']!r}" for k, v in sample["fields"].items()
                )
            moved = " ".join(
                [f"+{m}" for m in sample["memberships_add"]]
                + [f"-{m}" for m in sample["memberships_remove"]]
            )
            lines.append(
                f"     {sample['action']} {sample['person_key']}: "
                f"{_clip(diff) or 'no field changes'}" + (f" [{moved}]" if moved else "")
            )
    for e in report.events.values():
        lines.append(f"  -> {e.name} events: {event_sum(e.counts, e.kinds)}")
        if e.error:
            lines.append(f"     error: {e.error}")
    if report.not_synced is not None:
        more = (
            "`crmsync plan --not-synced N` names more"
            if report.dry_run
            else "`crmsync status --limit N` names more"
        )
        summary = report.not_synced.as_dict()
        lines.extend(render_not_synced(summary, "not synced", more, quarantined=True))
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    if report.error:
        lines.append(f"  error: {report.error}")
    return "\n".join(lines)


# a plan's would_send (per kind, as a run's ok) and a run's answers; what was held back
_EVENT_COUNTS = (
    "would_send",
    "ok",
    "failed",
    "rejected",
    "compliance",
    "not_sent",
    "already_sent",
    "waiting",
)


def event_sum(counts: Counter[str], kinds: Counter[str]) -> str:
    """``ok 12 (placed_order 5, ...), already_sent 30`` (a plan: ``would_send 12 (...)``);
    ``nothing to send`` when empty."""
    parts = []
    for name in _EVENT_COUNTS:
        if counts.get(name):
            text = f"{name} {counts[name]}"
            if name in ("ok", "would_send") and kinds:
                text += " (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")"
            parts.append(text)
    return ", ".join(parts) or "nothing to send"


def profiles_sum(report: RunReport) -> str:
    """Every person of the pipeline, as recomputed + kept from the last planning."""
    if not report.planning:
        return str(report.profiles)
    recomputed = report.profiles - report.profiles_kept
    how = "planned incrementally" if report.planning == "incremental" else report.planning
    return (
        f"{report.profiles} = {recomputed} recomputed + {report.profiles_kept} kept "
        f"from the last planning ({how})"
    )


def pulled_sum(s: dict[str, int]) -> str:
    """One stream's items, as a sum that adds up: received = staged + unchanged + ..."""
    if s.get("not_read"):
        return "not read: unchanged since its last complete read"
    text = (
        f"{s['received']} received = {s['staged']} new or changed"
        f" + {s.get('unchanged', 0)} unchanged + {s['quarantined']} quarantined"
    )
    if s.get("later"):
        text += f" + {s['later']} left for the next run (changed after it started)"
    if s.get("corrected"):
        text += f" ({s['corrected']} corrected)"
    if s.get("forgotten"):
        text += f"; {s['forgotten']} issue(s) kept before no longer found: forgotten"
    return text


def people_sum(decisions: Counter[str]) -> str:
    """A destination's decisions, one per profile, as a sum: changes + unchanged + skips."""
    changes = sum(decisions.get(k, 0) for k in _CHANGES)
    kinds = ", ".join(f"{k} {decisions[k]}" for k in _CHANGES if decisions.get(k))
    parts = [f"{changes} change(s)" + (f" ({kinds})" if kinds else "")]
    parts.append(f"{decisions.get('unchanged', 0)} unchanged")
    known = {*_CHANGES, "unchanged", *_SKIPS}
    skips = [*_SKIPS, *sorted(k for k in decisions if k not in known)]
    parts.extend(f"{decisions[k]} {k}" for k in skips if decisions.get(k))
    return " + ".join(parts) + f" = {sum(decisions.values())} profile(s)"


def render_not_synced(data: dict[str, Any], title: str, more: str, quarantined: bool) -> list[str]:
    """The records not synced: per reason its count, what it means, what to do, and the
    first records (the quarantined ones only with ``quarantined``: ``status`` lists them
    under quarantine, with the problem)."""
    total = data["total"]
    lines = [f"  {title}: {total} record(s)" if total else f"  {title}: none"]
    for reason in data["reasons"]:
        lines.append(f"    {reason['reason']} {reason['count']}: {reason['what']}")
        lines.append(f"      what to do: {reason['hint']}")
        shown = quarantined or reason["reason"] != "quarantined"
        records = reason["records"] if shown else []
        for r in records:
            lines.append(f"      {_named(r)}")
        if records and reason["count"] > len(records):
            lines.append(f"      ... {reason['count'] - len(records)} more ({more})")
    return lines


_ONE_IDENTITY = ("no_email", "no_phone")  # reasons that hold for some destinations only


def _named(record: dict[str, Any]) -> str:
    """``source.stream id``, with the customer of an order or cart and, where a reason
    holds for some destinations only, the ones it missed (``--json`` always names them)."""
    notes = []
    if record["customer_id"] and record["stream"] != "customers":
        notes.append(f"customer {record['customer_id']}")
    if record["reason"] in _ONE_IDENTITY and record["destinations"]:
        notes.append("not sent to " + ", ".join(record["destinations"]))
    text = f"{record['source']}.{record['stream']} {record['key']}"
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_data(store: Store, spec: PipelineSpec, limit: int) -> dict[str, Any]:
    sources = [s.name for s in spec.sources]
    destinations = [d.name for d in spec.destinations]
    runs = store.runs(spec.name, limit)
    with store.engine.connect() as conn:
        consent = [dict(r._mapping) for r in consent_events(conn, destinations, limit)]
        acknowledged = {r.id: _acknowledged(conn, r, destinations) for r in runs}
        events = event_counts(conn, destinations)
    not_synced, named_by = store.not_synced(spec.name, sources, limit)
    return {
        "pipeline": spec.name,
        "runs": [
            {
                "id": r.id,
                "kind": r.kind,
                "status": r.status,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "as_of": r.as_of,
                "error": r.error,
                # per destination, the people it acknowledged in this run (interrupted
                # ones too), and whether the run recorded it or the ledger tells it
                "acknowledged": acknowledged[r.id][0],
                "acknowledged_from": acknowledged[r.id][1],
                "destinations": r.counts.get("destinations", {}),
                "profiles": r.counts.get("profiles"),
                "not_synced": r.counts.get("not_synced"),
            }
            for r in runs
        ],
        "cursors": [c for c in store.cursors() if c["connector"] in sources + destinations],
        "ledger": store.ledger_counts(destinations),
        "events": events,  # per destination, the events it acknowledged, per kind
        "failures": {
            "counts": store.failure_counts(destinations),
            "recent": store.failures(destinations, limit),
        },
        "quarantine": {
            "counts": store.quarantine_counts(sources),
            "recent": store.quarantine(sources, limit),
        },
        # staged records the last run left out (its run id), with the quarantined ones now
        "not_synced": {"run_id": named_by, **not_synced.as_dict()},
        "consent_read_back": [
            {
                **c,
                "occurred_at": from_ms(c["occurred_at"]),
                "recorded_at": from_ms(c["recorded_at"]),
            }
            for c in consent
        ],
    }


def _acknowledged(
    conn: Connection, run: RunRow, destinations: list[str]
) -> tuple[dict[str, int], str]:
    """What ``run`` got acknowledged per destination: its own count, written when it
    ended (interrupted too), or, for a run still going or killed outright, its rows in
    the ledger."""
    recorded = run.counts.get("destinations")
    if recorded is not None:
        return {name: int(c.get("ok", 0)) for name, c in recorded.items()}, "run"
    if run.status in ("running", "interrupted"):
        return acknowledged_by_run(conn, run.id, destinations), "ledger"
    return {}, "run"


def render_status(data: dict[str, Any]) -> str:
    lines = [f"pipeline {data['pipeline']}"]
    lines.append("  runs:" if data["runs"] else "  runs: none yet")
    for r in data["runs"]:
        pushed = r["acknowledged"]  # what the destinations confirmed, not what was planned
        # kept for a later run: the destination could take no more (or had failed)
        held = {n: c["not_sent"] for n, c in r["destinations"].items() if c.get("not_sent")}
        lines.append(
            f"    #{r['id']} {r['kind']:<9} {r['status']:<11} "
            f"started {r['started_at']:%Y-%m-%d %H:%M:%S} "
            f"profiles {r['profiles'] if r['profiles'] is not None else '-'} "
            "pushed "
            + (", ".join(f"{n}={c}" for n, c in pushed.items()) or "-")
            + (" (from the ledger)" if r["acknowledged_from"] == "ledger" else "")
            + (" not sent " + ", ".join(f"{n}={c}" for n, c in held.items()) if held else "")
            + (f" not synced {sum(r['not_synced'].values())}" if r["not_synced"] else "")
            + (f" error: {r['error']}" if r["error"] else "")
        )
    lines.append("  cursors:")
    for c in data["cursors"]:
        lines.append(f"    {c['connector']}.{c['stream']}: {c['position']:%Y-%m-%dT%H:%M:%SZ}")
    for destination, counts in data["ledger"].items():
        shown = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
        lines.append(f"  ledger {destination}: {shown}")
    for destination, kinds in data.get("events", {}).items():
        shown = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        lines.append(f"  events {destination}: {shown}")
    failures = data["failures"]
    lines.append(f"  failures: {_counts(failures['counts'])}")
    for f in failures["recent"]:
        retry = from_ms(f["next_attempt_at"])
        lines.append(
            f"    {f['destination']} {f['person_key']}: {f['reason_class']} "
            f"({f['attempts']} attempt(s)"
            + (f", next {retry:%Y-%m-%d %H:%M}" if retry else ", not retried")
            + f"): {_clip(f['message'], 200)}"
        )
    quarantine = data["quarantine"]
    lines.append(f"  quarantine: {_counts(quarantine['counts'])}")
    for q in quarantine["recent"]:
        lines.append(
            f"    {q['action']} {q['source']}.{q['stream']} "
            f"{q['external_id'] or q['record_key']} {q['field'] or ''}: {q['reason']}"
        )
    named = data["not_synced"]
    title = f"not synced (run #{named['run_id']})" if named["run_id"] else "not synced"
    more = "`--limit N` names more, `--json` as data"
    lines.extend(render_not_synced(named, title, more, quarantined=False))
    read_back = data["consent_read_back"]
    lines.append(f"  consent read back: {len(read_back) or 'none'}")
    for c in read_back:
        lines.append(
            f"    {c['occurred_at']:%Y-%m-%d %H:%M} {c['source']} {c['email']} "
            f"{c['channel']} {c['state']} {c['reason']}"
        )
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def export_consent(store: Store, spec: PipelineSpec, since: datetime | None, out: IO[str]) -> int:
    """Writes opt-outs read back from the pipeline's destinations as CSV, oldest first."""
    from sqlalchemy import select

    from state import schema

    e = schema.consent_events
    query = (
        select(e.c.email, e.c.channel, e.c.state, e.c.source, e.c.reason, e.c.occurred_at)
        .where(e.c.source.in_([d.name for d in spec.destinations]))
        .order_by(e.c.occurred_at, e.c.email)
    )
    if since is not None:
        query = query.where(e.c.occurred_at > to_ms(since))
    writer = csv.writer(out)
    writer.writerow(["email", "channel", "state", "destination", "reason", "occurred_at"])
    count = 0
    with store.engine.connect() as conn:
        for row in conn.execute(query):
            at = from_ms(row.occurred_at)
            writer.writerow(
                [
                    row.email,
                    row.channel,
                    row.state,
                    row.source,
                    row.reason,
                    at.isoformat() if at else "",
                ]
            )
            count += 1
    return count
