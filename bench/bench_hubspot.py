"""HubSpot: API calls per 10,000 profiles against the floor, and wall time against the time
HubSpot's rolling rate window makes inevitable.

    python -m bench.bench_hubspot [--profiles 10000] [--latency 0.15] [--per-ten-seconds 100]

Pushes a first sync of generated profiles (names, city, customer since, an order count,
owned segments as options and as MANUAL lists) through the real ``HubSpotDestination``
into the fake HubSpot, which answers each call after a fixed latency and enforces the
tier's window (``--per-ten-seconds``, 100 on Free and Starter), then a membership change
of a fifth of the people. Each is one run as the core makes it: a destination of its own
(the core opens one per run, and a run's list job belongs to it), ``prepare``, the
pushes, then the collect of the run's list job. Calls are counted at the fake.

The fake is served from a child process (``bench.fake_process``), strict as in the tests
(every request validated), so that its work neither competes with the destination's
threads for this process's GIL nor counts in its CPU, as when crmsync talks to the real
HubSpot; its counters come back through the proxy. ``cpu_s`` is this process's CPU during
a run, ``fake_cpu_s`` the fake's.

The floor is what any client needs: one batch upsert per 100 contacts, per list one
membership call per ``list_batch`` record ids (adds and removes of a list go in one
call), one create per new list and one update of the segments property when it needs
new options. The rate-limit time is the least time the window allows for the calls made:
``per_ten_seconds`` at once, then as many again every 10 seconds, so ``(⌈calls / limit⌉
- 1) x 10 s``. The calls before a measurement (the previous run, ``prepare``) are left to
age out of the window first. Results go under ``hubspot`` for the default 10,000
profiles and under ``hubspot_<N>k`` for other sizes.
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
from bench.fake_process import served_in_child
from bench.results import call_figures, record

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


def list_sizes(runs: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Members per list once the runs are applied in order, each person's memberships
    as the last run that sent them says: what the fake's lists must hold."""
    now: dict[str, tuple[str, ...]] = {}
    for changes in runs:
        now.update((c.person_key, tuple(c.memberships)) for c in changes)
    return dict(Counter(g for groups in now.values() for g in groups))


class FakeHost:
    """The fake HubSpot, served from the bench's child process: what the bench asks of it,
    in values that cross a process boundary."""

    def __init__(self, per_ten_seconds: int, latency: float) -> None:
        from tests.fakes.hubspot import FakeHubSpot

        self.fake = FakeHubSpot(per_ten_seconds=per_ten_seconds, latency=latency).start()
        self._cpu_at_reset = time.process_time()

    def address(self) -> tuple[str, str]:
        """The token and the base URL a destination needs."""
        return self.fake.token, self.fake.base_url

    def list_sizes(self) -> dict[str, int]:
        """Members of each list, by name (the lists crmsync made, and any other)."""
        with self.fake._lock:
            return {found.name: len(found.members) for found in self.fake.lists.values()}

    def options(self, name: str) -> set[str]:
        """The option values of a contact property (none when it does not exist)."""
        with self.fake._lock:
            found = self.fake.properties.get(name)
            return set(found.values()) if found is not None else set()

    def contacts(self) -> int:
        with self.fake._lock:
            return sum(1 for c in self.fake.contacts_by_id.values() if not c.archived)

    def reset_counters(self) -> None:
        self.fake.reset_counters()
        self._cpu_at_reset = time.process_time()

    def counters(self) -> dict[str, Any]:
        """Calls by (method, operation) and 429s since the last reset, the fake's CPU."""
        with self.fake._lock:
            return {
                "calls": dict(self.fake.calls),
                "rate_limited": self.fake.rate_limited,
                "cpu_s": time.process_time() - self._cpu_at_reset,
            }

    def problems(self) -> list[str]:
        """Requests HubSpot's reference does not allow, and any subscribe crmsync made."""
        with self.fake._lock:
            return [*self.fake.violations, *self.fake.consent_problems()]

    def stop(self) -> None:
        self.fake.stop()


def run(dest: Any, changes: Sequence[Any]) -> Counter[Any]:
    """One run as the core makes it: the pushes, then the collect of the run's list job
    (its people with the record ids the pushes answered, as the ledger keeps them)."""
    from crmsync.contract import Outcome

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
    for job, members in pending.items():
        final = dest.collect(job, members)
        assert final is not None
        outcomes.update(r.outcome for r in final)
    return outcomes


def measure(dest: Any, fake: Any, changes: Sequence[Any]) -> dict[str, float | str]:
    """One run of ``changes`` on a destination already prepared: its calls against the
    floor, its time against the window's."""
    from crmsync.contract import Outcome

    lists = set(fake.list_sizes())
    options = fake.options(dest.config.segments_property)
    time.sleep(WINDOW + 0.5)  # earlier calls age out of the window
    fake.reset_counters()
    started, cpu = time.perf_counter(), time.process_time()
    outcomes = run(dest, changes)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    counters = fake.counters()
    calls = Counter(counters["calls"])
    writes = sum(calls[w] for w in WRITES)
    total = sum(calls.values())
    lowest = floor(changes, dest.config.list_batch, lists, options)
    limit = dest.config.rate_limits.per_ten_seconds
    inevitable = rate_limit_seconds(total, limit)
    return {
        "profiles": len(changes),
        "ok": outcomes[Outcome.OK],
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu, 3),
        "fake_cpu_s": round(counters["cpu_s"], 3),
        "rate_limited_429": counters["rate_limited"],
        **call_figures(len(changes), writes, total, lowest, seconds, inevitable),
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

    generated = generate(args.profiles)
    people = as_hubspot(generated)
    moved = as_hubspot(membership_changes(generated))
    mapping = load_mapping(
        default_mapping("hubspot"), catalogue(), kind="hubspot", rules=check_mapping
    )
    measured: list[dict[str, float | str]] = []
    with served_in_child(FakeHost, args.per_ten_seconds, args.latency) as fake:
        token, base_url = fake.address()
        config = HubSpotConfig.model_validate(
            {
                "access_token": token,
                "base_url": base_url,
                "lists": True,
                "rate_limits": {"per_ten_seconds": args.per_ten_seconds},
            }
        )
        for changes in (people, moved):  # a destination per run, as the core opens them
            dest = HubSpotDestination(config, ConnectorContext("bench", Path(".")))
            try:
                dest.prepare(mapping.field_specs())
                measured.append(measure(dest, fake, changes))
            finally:
                dest.close()
        push_batch = dest.max_batch
        problems = fake.problems()
        sizes = {name: size for name, size in fake.list_sizes().items() if size}
        contacts = fake.contacts()
    first, change = measured
    calls_target, time_target = 1.05, 1.15
    ratios = [first["ratio_to_rate_limit_floor"], change["ratio_to_rate_limit_floor"]]
    timed = [float(r) for r in ratios if r != "n/a"]
    as_ledger = contacts == len(people) and sizes == list_sizes([people, moved])
    figures: dict[str, float | int | str] = {
        "latency_s": args.latency,
        "per_ten_seconds": args.per_ten_seconds,
        "push_batch": push_batch,
        "list_batch": config.list_batch,
        **{f"first_sync_{k}": v for k, v in first.items()},
        **{f"membership_change_{k}": v for k, v in change.items()},
        "target_calls_ratio": calls_target,
        "target_time_ratio": time_target,
        "calls_at_or_below_target": str(
            max(float(first["ratio_to_floor"]), float(change["ratio_to_floor"])) <= calls_target
        ),
        "time_at_or_below_target": str(all(r <= time_target for r in timed)) if timed else "n/a",
        "fake_contacts_and_lists_as_sent": str(as_ledger),
        "violations_and_consent_problems": len(problems),
    }
    name = "hubspot" if args.profiles == 10_000 else f"hubspot_{args.profiles // 1000}k"
    path = record(name, figures)
    for key, value in figures.items():
        print(f"{key:>46}: {value}")
    for problem in problems[:10]:
        print(f"  problem: {problem}")
    print(f"written to {path}")
    return 1 if problems or not as_ledger else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
