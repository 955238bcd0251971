"""HubSpot: API calls per 10,000 profiles against the floor, and wall time against the time
HubSpot's rolling rate window makes inevitable.

Pushes a first sync of generated profiles (names, city, customer since, an order count,
owned segments as options and as MANUAL lists) through the real ``HubSpotDestination``
into the fake HubSpot, which answers each call after a fixed latency and enforces the
tier's window (``--per-ten-seconds``, 100 on Free and Starter), collects the run's list
job as the core would, then a membership change of a fifth of the people. Calls are
counted at the fake.

The floor is what any client needs: one batch upsert per 100 contacts, per list one
membership call per ``list_batch`` record ids (adds and removes of a list go in one
call), one create per new list and one update of the segments property when it needs
new options. The rate-limit time is the least time the window allows for the calls made:
``per_ten_seconds`` at once, then as many again every 10 seconds, so ``(⌈calls / limit⌉
- 1) x 10 s``. The account's calls before a measurement (``prepare``) are left to age out
of the window first.
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
from bench.results import record

UPSERT = ("POST", "upsert_contacts")
MOVE = ("PUT", "move_members")
CREATE_LIST = ("POST", "create_list")
GROW_OPTIONS = ("PATCH", "update_property")
WRITES = (UPSERT, MOVE, CREATE_LIST, GROW_OPTIONS)
WINDOW = 10.0  # seconds of HubSpot's rolling window
NAMES = {
    "FNAME": "firstname",
    "LNAME": "lastname",
    "CITY": "city",
    "SINCE": "crmsync_customer_since",
    "ORDERS": "crmsync_orders_count",
}


def as_hubspot(changes: Sequence[Any]) -> list[Any]:
    """The generated Mailchimp-shaped changes with HubSpot property names."""
    out = []
    for change in changes:
        fields = {NAMES[k]: _plain(v) for k, v in change.fields.items() if k in NAMES}
        out.append(replace(change, fields=fields))
    return out


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def floor(changes: Sequence[Any], list_batch: int, lists: set[str], options: set[str]) -> int:
    """Write calls no client could go below for these changes (see the module's doc)."""
    adds = Counter(g for c in changes for g in c.memberships_add)
    removes = Counter(g for c in changes for g in c.memberships_remove)
    moves = sum(
        max(math.ceil(adds[g] / list_batch), math.ceil(removes[g] / list_batch))
        for g in adds.keys() | removes.keys()
    )
    wanted = {g for c in changes for g in c.memberships}
    return (
        math.ceil(len(changes) / 100)
        + moves
        + len(set(adds) - lists)
        + (1 if wanted - options else 0)
    )


def rate_limit_seconds(calls: int, per_ten_seconds: int) -> float:
    return max(math.ceil(calls / per_ten_seconds) - 1, 0) * WINDOW


def measure(dest: Any, fake: Any, changes: Sequence[Any]) -> dict[str, float | str]:
    from crmsync.contract import Outcome

    lists = {found.name for found in fake.lists.values()}
    options = set(fake.properties[dest.config.segments_property].values())
    time.sleep(WINDOW + 0.5)  # earlier calls age out of the window
    fake.reset_counters()
    started = time.perf_counter()
    outcomes: Counter[Outcome] = Counter()
    pending: dict[str, list[Any]] = {}
    for start in range(0, len(changes), dest.max_batch):
        batch = list(changes[start : start + dest.max_batch])
        by_key = {c.person_key: c for c in batch}
        for result in dest.push(batch):
            if result.outcome is Outcome.PENDING and result.job:
                change = replace(by_key[result.person_key], remote_id=result.remote_id)
                pending.setdefault(result.job, []).append(change)
            else:
                outcomes[result.outcome] += 1
    for job, members in pending.items():  # the core's collect at the end of the run
        final = dest.collect(job, members)
        assert final is not None
        outcomes.update(r.outcome for r in final)
    seconds = time.perf_counter() - started
    writes = sum(fake.calls[w] for w in WRITES)
    total = sum(fake.calls.values())
    lowest = floor(changes, dest.config.list_batch, lists, options)
    limit = dest.config.rate_limits.per_ten_seconds
    inevitable = rate_limit_seconds(total, limit)
    return {
        "profiles": len(changes),
        "ok": outcomes[Outcome.OK],
        "seconds": round(seconds, 3),
        "floor_calls": lowest,
        "write_calls": writes,
        "read_calls": total - writes,
        "write_calls_per_10k": round(writes * 10_000 / len(changes), 1),
        "all_calls_per_10k": round(total * 10_000 / len(changes), 1),
        "ratio_to_floor": round(writes / lowest, 4),
        "rate_limited_429": fake.rate_limited,
        "rate_limit_floor_s": round(inevitable, 2),
        # calls that fit one window take no inevitable time: report n/a
        "ratio_to_rate_limit_floor": round(seconds / inevitable, 3) if inevitable else "n/a",
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_hubspot")
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per API call")
    parser.add_argument("--per-ten-seconds", type=int, default=100, help="the tier's window")
    args = parser.parse_args(argv)

    from connectors.hubspot import HubSpotConfig, HubSpotDestination
    from connectors.hubspot.mapping_rules import check_mapping
    from crmsync.contract import ConnectorContext
    from crmsync.fields import catalogue
    from crmsync.registry import default_mapping
    from mappings import load_mapping
    from tests.fakes.hubspot import FakeHubSpot

    people = as_hubspot(generate(args.profiles))
    moved = as_hubspot(membership_changes(generate(args.profiles)))
    fake = FakeHubSpot(per_ten_seconds=args.per_ten_seconds, latency=args.latency).start()
    config = HubSpotConfig.model_validate(
        {
            "access_token": fake.token,
            "base_url": fake.base_url,
            "lists": True,
            "rate_limits": {"per_ten_seconds": args.per_ten_seconds},
        }
    )
    dest = HubSpotDestination(config, ConnectorContext("bench", Path(".")))
    mapping = load_mapping(
        default_mapping("hubspot"), catalogue(), kind="hubspot", rules=check_mapping
    )
    try:
        dest.prepare(mapping.field_specs())
        first = measure(dest, fake, people)
        change = measure(dest, fake, moved)
    finally:
        dest.close()
        fake.stop()
    problems = fake.violations + fake.consent_problems()
    calls_target, time_target = 1.05, 1.15
    ratios = [first["ratio_to_rate_limit_floor"], change["ratio_to_rate_limit_floor"]]
    timed = [float(r) for r in ratios if r != "n/a"]
    figures: dict[str, float | int | str] = {
        "latency_s": args.latency,
        "per_ten_seconds": args.per_ten_seconds,
        "push_batch": dest.max_batch,
        "list_batch": config.list_batch,
        **{f"first_sync_{k}": v for k, v in first.items()},
        **{f"membership_change_{k}": v for k, v in change.items()},
        "target_calls_ratio": calls_target,
        "target_time_ratio": time_target,
        "calls_at_or_below_target": str(
            max(float(first["ratio_to_floor"]), float(change["ratio_to_floor"])) <= calls_target
        ),
        "time_at_or_below_target": str(all(r <= time_target for r in timed)) if timed else "n/a",
        "violations_and_consent_problems": len(problems),
    }
    path = record("hubspot", figures)
    for key, value in figures.items():
        print(f"{key:>46}: {value}")
    print(f"written to {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
