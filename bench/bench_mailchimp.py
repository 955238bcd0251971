"""Mailchimp destination: API calls per run against the per-run floor, and throughput.

    python -m bench.bench_mailchimp [--profiles 10000] [--latency 0.15] [--connections 10]

Runs against the fake Mailchimp (real HTTP on 127.0.0.1) with a per-call latency, so the
figures show what the destination does on the wire, not what the fake costs: the fake's
spec validation is switched off here (the tests keep it on for every request), and the
fake serves from a process of its own, so that its work neither competes with the
destination's threads for this process's GIL nor counts in its CPU, as when crmsync talks
to the real Mailchimp. ``cpu_s`` is this process's CPU during the run (the destination's
building, encoding, sending and reading of the calls), ``fake_cpu_s`` the fake's, and
``floor_s`` the time floor: floor calls × latency / connections.

Two runs of the same generated people are measured, each as the core makes it (its
pushes, then the collect of the run's tag job at its end): a first sync (everyone new,
every segment tag added) and a membership change (a fifth of the people move between
tags). The floor is, per push, ⌈people/500⌉ upsert calls, plus for the whole run, per
touched tag, max(⌈adds/500⌉, ⌈removes/500⌉) tag calls, where a tag that does not exist
yet is created carrying its first 500 members (``static_segment``), so only adds beyond
those need tag calls; the target is at most 1.05 × floor. One-time calls are reported
apart: the merge-field set-up before the pushes (setup_calls), and the tag index and tag
creations within a run (one_time_calls). Results go under ``mailchimp`` for the default
10,000 people and under ``mailchimp_<N>k`` for other sizes.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.fake_process import served_in_child
from bench.results import record

UPSERT = ("POST", "/lists/{list_id}")
TAG_CALL = ("POST", "/lists/{list_id}/segments/{segment_id}")
BATCH = 500  # Mailchimp's members per upsert and per tag call
TAGS = ("crm-vip", "crm-istanbul", "crm-birthday-nov", "crm-repeat", "crm-foreign", "crm-lapsed")


def generate(count: int) -> list[Any]:
    from crmsync.consent import intent_for
    from crmsync.contract import Action, Change, ConsentIntent
    from crmsync.records import ConsentState, Customer
    from crmsync.sample import SampleSpec, iter_store

    changes: list[Change] = []
    seen: set[str] = set()
    for item in iter_store(SampleSpec(customers=count * 2, orders_per_customer=0.0, seed=21)):
        if not isinstance(item, Customer) or not item.email or item.deleted or item.email in seen:
            continue
        seen.add(item.email)
        number = len(changes)
        tags = tuple(
            tag
            for tag, member in zip(
                TAGS,
                (
                    number % 10 == 0,
                    item.city == "İstanbul",
                    item.birthday is not None and item.birthday.month == 11,
                    number % 3 == 0,
                    bool(item.language and item.language != "tr"),
                    number % 7 == 0,
                ),
                strict=True,
            )
            if member
        )
        changes.append(
            Change(
                person_key=f"e:{item.email}",
                action=Action.UPSERT,
                is_new=True,
                email=item.email,
                phone=item.phone,
                fields={
                    "FNAME": item.first_name,
                    "LNAME": item.last_name,
                    "CITY": item.city,
                    "BDAY": item.birthday,
                    "SINCE": item.created_at,
                    "ORDERS": number % 9,
                },
                memberships_add=tags,
                memberships_remove=(),
                email_intent=intent_for(
                    item.email_consent.state if item.email_consent else ConsentState.NONE
                ),
                sms_intent=ConsentIntent.LEAVE,
                payload_hash=str(number),
                memberships=tags,
            )
        )
        if len(changes) == count:
            break
    return changes


def membership_changes(changes: list[Any]) -> list[Any]:
    """A fifth of the people: crm-vip and crm-repeat swap, crm-lapsed is dropped."""
    moved = []
    for number, change in enumerate(changes):
        if number % 5:
            continue
        old = set(change.memberships)
        new = (old ^ {"crm-vip", "crm-repeat"}) - {"crm-lapsed"}
        moved.append(
            replace(
                change,
                is_new=False,
                memberships_add=tuple(sorted(new - old)),
                memberships_remove=tuple(sorted(old - new)),
                memberships=tuple(sorted(new)),
                fields={**change.fields, "ORDERS": change.fields["ORDERS"] + 1},
            )
        )
    return moved


def floor(changes: list[Any], push_batch: int, existing: set[str], batch: int = BATCH) -> int:
    """Upsert and tag calls no client could go below in one run: upserts push by push,
    tag calls per tag over the whole run; a tag not in ``existing`` is created carrying its
    first members."""
    pushes = [min(push_batch, len(changes) - start) for start in range(0, len(changes), push_batch)]
    adds = Counter(tag for c in changes for tag in c.memberships_add)
    removes = Counter(tag for c in changes for tag in c.memberships_remove)
    return sync_floor(pushes, adds, removes, existing, batch)


def sync_floor(
    upserts: Iterable[int],
    adds: Mapping[str, int],
    removes: Mapping[str, int],
    existing: Collection[str],
    batch: int = BATCH,
) -> int:
    """The fewest upsert and tag calls any client needs: ⌈n/batch⌉ upserts per push of n
    people, and per tag max(⌈adds/batch⌉, ⌈removes/batch⌉) membership calls, where a tag
    not in ``existing`` is created carrying its first ``batch`` adds. The one floor of the
    Mailchimp benches: ``bench.e2e`` counts the same calls from the fake's audience."""
    from connectors.kit import floor_calls

    carried = {tag: min(n, batch) for tag, n in adds.items() if tag not in existing}
    calls = sum(math.ceil(n / batch) for n in upserts)
    return calls + floor_calls(adds, removes, batch, paired=True, carried=carried)


def run(dest: Any, changes: list[Any]) -> list[Any]:
    """One run as the core makes it: the pushes, then the collect of what is pending."""
    from crmsync.contract import Outcome

    final = []
    jobs: dict[str, list[Any]] = {}
    for start in range(0, len(changes), dest.max_batch):
        batch = changes[start : start + dest.max_batch]
        for change, result in zip(batch, sorted_like(batch, dest.push(batch)), strict=True):
            if result.outcome is Outcome.PENDING and result.job:
                jobs.setdefault(result.job, []).append(change)
            else:
                final.append(result)
    for job, waiting in jobs.items():
        final += dest.collect(job, waiting)
    return final


def sorted_like(batch: list[Any], results: list[Any]) -> list[Any]:
    by_key = {r.person_key: r for r in results}
    return [by_key[c.person_key] for c in batch]


class FakeHost:
    """The fake Mailchimp, served from the bench's child process: what the bench asks of
    it, in values that cross a process boundary (no generators, no sets of a whole
    audience)."""

    def __init__(self, latency: float, connections: int) -> None:
        from tests.fakes.mailchimp import FakeMailchimp

        self.fake = FakeMailchimp(validate=False, latency=latency, max_connections=connections)
        self.fake.start()
        self._cpu_at_reset = time.process_time()

    def destination_config(self, connections: int) -> dict[str, Any]:
        config: dict[str, Any] = self.fake.destination_config(max_connections=connections)
        return config

    def expect_consented(self, emails: list[str]) -> None:
        self.fake.expect_consented(emails)

    def tag_names(self) -> set[str]:
        return set(self.fake.tag_members())

    def reset_counters(self) -> None:
        self.fake.reset_counters()
        self._cpu_at_reset = time.process_time()

    def counters(self) -> dict[str, Any]:
        """Calls by (method, route) since the last reset, and the fake's CPU seconds."""
        fake = self.fake
        return {
            "calls": dict(fake.calls),
            "max_in_flight": fake.max_in_flight,
            "rejected_429": fake.concurrency_rejections,
            "cpu_s": time.process_time() - self._cpu_at_reset,
        }

    def consent_problems(self) -> list[str]:
        problems: list[str] = self.fake.consent_problems()
        return problems

    def stop(self) -> None:
        self.fake.stop()


def measure(dest: Any, fake: Any, changes: list[Any], latency: float) -> dict[str, float]:
    from crmsync.contract import Outcome

    existing = fake.tag_names()  # tags made by earlier runs
    fake.reset_counters()
    started, cpu = time.perf_counter(), time.process_time()
    outcomes = Counter(r.outcome for r in run(dest, changes))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    counters = fake.counters()
    calls = Counter(counters["calls"])
    sync_calls = calls[UPSERT] + calls[TAG_CALL]
    total = sum(calls.values())
    lowest = floor(changes, dest.max_batch, existing)
    connections = dest.config.max_connections
    return {
        "profiles": len(changes),
        "ok": outcomes[Outcome.OK],
        "seconds": round(seconds, 3),
        "floor_s": round(lowest * latency / connections, 3),
        "cpu_s": round(cpu, 3),
        "fake_cpu_s": round(counters["cpu_s"], 3),
        "profiles_per_s": round(len(changes) / seconds, 1),
        "floor_calls": lowest,
        "sync_calls": sync_calls,
        "one_time_calls": total - sync_calls,
        "calls_per_10k": round(total * 10_000 / len(changes), 1),
        "ratio_to_floor": round(sync_calls / lowest, 4),
        "ratio_to_floor_incl_one_time": round(total / lowest, 4),
        "max_in_flight": counters["max_in_flight"],
        "rejected_429": counters["rejected_429"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_mailchimp")
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per API call")
    parser.add_argument("--connections", type=int, default=10)
    args = parser.parse_args(argv)

    from connectors.mailchimp import MailchimpConfig, MailchimpDestination
    from crmsync.contract import ConnectorContext, FieldSpec

    people = generate(args.profiles)
    moved = membership_changes(people)
    fields = [
        FieldSpec("FNAME", "text"),
        FieldSpec("LNAME", "text"),
        FieldSpec("CITY", "text"),
        FieldSpec("BDAY", "birthday"),
        FieldSpec("SINCE", "date"),
        FieldSpec("ORDERS", "integer"),
    ]
    with served_in_child(FakeHost, args.latency, args.connections) as fake:
        config = MailchimpConfig.model_validate(fake.destination_config(args.connections))
        dest = MailchimpDestination(config, ConnectorContext("bench", Path(".")))
        fake.expect_consented([c.email for c in people if c.email_intent == "subscribe_if_new"])
        try:
            fake.reset_counters()
            dest.prepare(fields)
            setup_calls = sum(fake.counters()["calls"].values())
            first = measure(dest, fake, people, args.latency)
            dest.close()  # the core opens a destination per run: the change is a new run
            dest = MailchimpDestination(config, ConnectorContext("bench", Path(".")))
            dest.prepare(fields)
            change = measure(dest, fake, moved, args.latency)
            problems = fake.consent_problems()
        finally:
            dest.close()
    figures: dict[str, float | int | str] = {
        "latency_s": args.latency,
        "connections": args.connections,
        "push_batch": dest.max_batch,
        "setup_calls": setup_calls,
        **{f"first_sync_{k}": v for k, v in first.items()},
        **{f"tag_change_{k}": v for k, v in change.items()},
        "target_ratio": 1.05,
        "at_or_below_target": str(max(first["ratio_to_floor"], change["ratio_to_floor"]) <= 1.05),
        "consent_problems": len(problems),
    }
    name = "mailchimp" if args.profiles == 10_000 else f"mailchimp_{args.profiles // 1000}k"
    path = record(name, figures)
    for key, value in figures.items():
        print(f"  {key}: {value}")
    print(f"  -> {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
