"""Klaviyo: API calls per 10,000 profiles against the floor, and wall time against the time
Klaviyo's published rate limits make inevitable.

Pushes a first sync of generated profiles (names, city, birthday, an order count, owned
lists, a consent mix) through the real ``KlaviyoDestination`` into the fake Klaviyo with a
fixed latency per call, then a membership change of a fifth of the people: two runs, each
with a destination of its own, every batch pushed and then the run's jobs collected as
the core does at a run's end, following the people handed on to another job (the run's
list job, the import job that took a held one) until nobody is PENDING. Calls are
counted at the fake.

The floor is what any client needs with Klaviyo's bulk endpoints: import jobs enough for
both of a job's caps, max(⌈profiles / 10,000⌉, ⌈profile bytes / usable bytes per job⌉),
where a profile's bytes are what it takes in a job body (the connector's
``payloads.size_of`` of its ``profile_entry``) and a job's usable bytes are its 5 MB
less the body's envelope (``payloads.job_bytes_available``): above some 524 bytes a
profile, 10,000 profiles no longer fit one job. Then one subscribe job per 1,000 new
opt-ins, one unsubscribe job per 100 new opt-outs, one list create per new list and, per
list, one relationship call per 1,000 added (and per 1,000 removed) profiles. Reads are
reported apart: Klaviyo's import job does not answer the profiles' ids, which the
relationship calls need, so once a job is complete its people's profiles are looked up
by address, 100 a call (``GET /api/profiles``, in the profiles group). The rate-limit
time is the least time the published per-endpoint limits allow for the calls made: at
most the burst in any second and the steady rate in any minute, from idle windows.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.bench_mailchimp import generate, membership_changes
from bench.results import call_figures, record
from connectors.klaviyo.config import MAX_JOB_BYTES, MAX_JOB_PROFILES
from connectors.klaviyo.payloads import job_bytes_available, profile_entry, size_of

IMPORT_JOB = ("POST", "/api/profile-bulk-import-jobs")
SUBSCRIBE_JOB = ("POST", "/api/profile-subscription-bulk-create-jobs")
UNSUBSCRIBE_JOB = ("POST", "/api/profile-subscription-bulk-delete-jobs")
LIST_CREATE = ("POST", "/api/lists")
LIST_ADD = ("POST", "/api/lists/{id}/relationships/profiles")
LIST_REMOVE = ("DELETE", "/api/lists/{id}/relationships/profiles")
WRITES = (IMPORT_JOB, SUBSCRIBE_JOB, UNSUBSCRIBE_JOB, LIST_CREATE, LIST_ADD, LIST_REMOVE)
# which of the connector's rate-limit groups (connectors/klaviyo/config.py) a route is in
GROUP_OF: dict[str, str] = {
    "/api/profile-bulk-import-jobs": "import_jobs",
    "/api/profile-bulk-import-jobs/{job_id}": "import_jobs",
    "/api/profile-bulk-import-jobs/{id}/import-errors": "import_jobs",
    "/api/profile-subscription-bulk-create-jobs": "subscriptions",
    "/api/profile-subscription-bulk-delete-jobs": "subscriptions",
    "/api/lists/{id}/relationships/profiles": "list_members",
}


def as_klaviyo(changes: Sequence[Any]) -> list[Any]:
    """The generated Mailchimp-shaped changes with Klaviyo field names."""
    names = {
        "FNAME": "first_name",
        "LNAME": "last_name",
        "CITY": "location.city",
        "BDAY": "birthday",
        "SINCE": "customer_since",
        "ORDERS": "orders_count",
    }
    out = []
    for change in changes:
        fields = {names[k]: _plain(v) for k, v in change.fields.items()}
        out.append(replace(change, fields=fields))
    return out


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def floor(changes: Sequence[Any], existing: set[str], profile_bytes: int | None = None) -> int:
    """The fewest write calls for these changes, with ``existing`` lists already made.

    ``profile_bytes``: what the upserted profiles take in import job bodies, summed with
    ``payloads.size_of``; None measures each upserted change's ``profile_entry`` (the
    changes must then carry their fields, as the bench's do).
    """
    upserted = [c for c in changes if c.action.value == "upsert"]
    if profile_bytes is None:
        profile_bytes = sum(size_of(profile_entry(c)) for c in upserted)
    new = [c for c in changes if c.is_new]
    subscribes = sum(1 for c in new if c.email_intent.value == "subscribe_if_new")
    # an opt-out of someone Klaviyo has is sent only when Klaviyo does not show it yet
    unsubscribes = sum(1 for c in new if c.email_intent.value == "unsubscribe")
    adds = Counter(g for c in changes for g in c.memberships_add)
    removes = Counter(g for c in changes for g in c.memberships_remove)
    return (
        import_jobs(len(upserted), profile_bytes)
        + math.ceil(subscribes / 1_000)
        + math.ceil(unsubscribes / 100)
        + len(set(adds) - existing)
        + sum(math.ceil(n / 1_000) for n in adds.values())
        + sum(math.ceil(n / 1_000) for n in removes.values())
    )


def import_jobs(profiles: int, profile_bytes: int) -> int:
    """The fewest import jobs for this many profiles taking these bytes: Klaviyo's caps of
    10,000 profiles and 5 MB a job, each applied alone."""
    by_bytes = math.ceil(profile_bytes / job_bytes_available(MAX_JOB_BYTES))
    return max(math.ceil(profiles / MAX_JOB_PROFILES), by_bytes)


def rate_limit_seconds(calls: Counter[tuple[str, str]], limits: Any) -> float:
    """The least wall time Klaviyo's published limits (the connector's defaults) allow for
    these calls, from windows left idle: per endpoint group, when the group's last call
    can start at the earliest (``windowed_seconds``); the slowest group's."""
    per_group: Counter[str] = Counter()
    for (method, route), n in calls.items():
        if method == "POST" and route == "/api/lists":
            per_group["list_create"] += n
        else:
            per_group[
                GROUP_OF.get(route, "lists" if route.startswith("/api/lists") else "profiles")
            ] += n
    worst = 0.0
    for group, n in per_group.items():
        limit = getattr(limits, group)
        worst = max(worst, windowed_seconds(n, limit.burst, limit.steady))
    return worst


def windowed_seconds(n: int, burst: int, steady: int) -> float:
    """When the last of ``n`` calls can start at the earliest, where at most ``burst``
    start in any second and ``steady`` in any minute: each call starts as soon as the one
    ``burst`` before it is a second old and the one ``steady`` before it a minute old."""
    starts: list[float] = []
    for k in range(n):
        start = 0.0
        if k >= burst:
            start = max(start, starts[k - burst] + 1.0)
        if k >= steady:
            start = max(start, starts[k - steady] + 60.0)
        starts.append(start)
    return starts[-1] if starts else 0.0


def measure(dest: Any, fake: Any, changes: Sequence[Any]) -> dict[str, float | str]:
    """One run into ``dest`` (a destination of its own: one per run, as the core opens
    one): every batch pushed, then the run's jobs collected until nobody is PENDING."""
    limits = dest.config.rate_limits
    from crmsync.contract import Outcome

    existing = {found.name for found in fake.lists.values()}
    fake.reset_counters()
    started = time.perf_counter()
    outcomes: Counter[Outcome] = Counter()
    waiting: dict[str, tuple[str, Any]] = {}  # person key -> (job, change), as in flight

    def answered(changes: Sequence[Any], results: Sequence[Any]) -> None:
        for change, result in zip(changes, results, strict=True):
            if result.outcome is Outcome.PENDING and result.job:
                # the ledger keeps a pending result's remote id with the change
                kept = replace(change, remote_id=result.remote_id or change.remote_id)
                waiting[change.person_key] = (result.job, kept)
            else:
                waiting.pop(change.person_key, None)
                outcomes[result.outcome] += 1

    for start in range(0, len(changes), dest.max_batch):
        batch = list(changes[start : start + dest.max_batch])
        answered(batch, dest.push(batch))
    for _ in range(1_000):  # as the core's Pusher.collect does at the run's end, no sleeps
        if not waiting:
            break
        for job in sorted({job for job, _ in waiting.values()}):
            members = [change for j, change in waiting.values() if j == job]
            final = dest.collect(job, members)
            if final is not None:
                answered(members, final)
    seconds = time.perf_counter() - started
    writes = sum(fake.calls[w] for w in WRITES)
    total = sum(fake.calls.values())
    lowest = floor(changes, existing)
    inevitable = rate_limit_seconds(fake.calls, limits)
    return {
        "profiles": len(changes),
        "ok": outcomes[Outcome.OK],
        "seconds": round(seconds, 3),
        **call_figures(len(changes), writes, total, lowest, seconds, inevitable),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_klaviyo")
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per API call")
    args = parser.parse_args(argv)

    from connectors.klaviyo import KlaviyoConfig, KlaviyoDestination
    from crmsync.contract import ConnectorContext
    from tests.fakes.klaviyo import FakeKlaviyo

    people = as_klaviyo(generate(args.profiles))
    moved = as_klaviyo(membership_changes(generate(args.profiles)))
    fake = FakeKlaviyo(validate=False, latency=args.latency, job_polls_until_complete=1)
    fake.rate_limits_enabled = False  # the published limits are applied to the counts below
    fake.start()
    config = KlaviyoConfig.model_validate(
        {"kind": "klaviyo", "api_key": fake.api_key, "base_url": fake.base_url}
    )
    fake.expect_consented(c.email for c in people if c.email_intent == "subscribe_if_new")
    try:
        figures_of = []
        for changes in (people, moved):  # two runs, each with a destination of its own
            dest = KlaviyoDestination(config, ConnectorContext("bench", Path(".")))
            try:
                figures_of.append(measure(dest, fake, changes))
            finally:
                dest.close()
        first, change = figures_of
    finally:
        fake.stop()
    problems = fake.consent_problems()
    target = 1.1
    figures: dict[str, float | int | str] = {
        "latency_s": args.latency,
        "push_batch": dest.max_batch,
        **{f"first_sync_{k}": v for k, v in first.items()},
        **{f"membership_change_{k}": v for k, v in change.items()},
        "target_ratio": target,
        "at_or_below_target": str(
            max(float(first["ratio_to_floor"]), float(change["ratio_to_floor"])) <= target
        ),
        "consent_problems": len(problems),
    }
    path = record("klaviyo", figures)
    for key, value in figures.items():
        print(f"{key:>42}: {value}")
    print(f"written to {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
