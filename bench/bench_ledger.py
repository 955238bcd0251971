"""The ledger's cost per push: ``mark_in_flight`` + ``record_results`` per 10,000 changes.

Every pushed batch is written twice, in two transactions, by the sender thread that
also drives the vendor calls (``engine.push``): before the push (in flight) and after
it (ledger, in flight, failures). This measures those two writes alone, on a fresh
state database, for changes shaped like the sample store's (the outbox mapping's 36
fields, two memberships), in batches of the outbox's size (500) and of a Mailchimp
push (10,000):

- ``first``: everybody new and answered OK (a first sync);
- ``again``: the same people again (every row replaced);
- ``mixed``: answers of every kind in turn (OK, FAILED, REJECTED, COMPLIANCE, PENDING
  on a job).

Reported in seconds per 10,000 changes (the best of ``--repeat`` passes, since the
machine is shared), split between the two writes.

    .venv/bin/python -m bench.bench_ledger [--engine sqlite|postgresql|both] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import sqlalchemy as sa

from bench.databases import state_url
from bench.results import RESULTS, Figure, record
from crmsync.contract import Action, Change, ConsentIntent, Outcome, PushResult
from state.ledger import RetryPolicy, mark_in_flight, record_results
from state.store import Store

CHANGES = 10_000
BATCHES = {"outbox": 500, "mailchimp": 10_000}
RETRY = RetryPolicy(max_attempts=5, first_wait_ms=900_000)
ANSWERS = [Outcome.OK, Outcome.FAILED, Outcome.REJECTED, Outcome.COMPLIANCE, Outcome.PENDING]


def a_change(n: int) -> Change:
    """One person's change as the sample store and the outbox mapping give it."""
    email = f"person{n:07d}@example.com"
    fields = {
        "avg_order_value": 1966.42,
        "birthday": "1960-03-31",
        "cancelled_orders": 0,
        "cart_abandoned": False,
        "cart_open": False,
        "categories": ["Ayakkabı", "Ev & Yaşam", "Giyim"],
        "city": "Gaziantep",
        "country": "TR",
        "currency": "TRY",
        "customer_since": "2025-01-16T09:32:27+00:00",
        "discounted_orders": 1,
        "email": email,
        "email_consent": "subscribed",
        "first_name": "Ayşegül",
        "first_order_at": "2025-12-08T23:02:03+00:00",
        "full_name": "Ayşegül Acar",
        "full_price_orders": 3,
        "last_name": "Acar",
        "last_order_at": "2026-09-02T18:25:50+00:00",
        "lifecycle_stage": "at_risk",
        "orders_30d": 0,
        "orders_365d": 4,
        "orders_90d": 0,
        "orders_count": n % 17,
        "person_key": f"e:{email}",
        "phone": "+905538148210",
        "region": "Şehitkamil",
        "rfm_label": "potential",
        "rfm_score": "434",
        "sms_consent": "subscribed",
        "sources": ["demo_store"],
        "spent_30d": 0.0,
        "spent_365d": 7865.7,
        "spent_90d": 0.0,
        "top_category": "Süpermarket",
        "total_spent": 7865.7,
    }
    return Change(
        person_key=f"e:{email}",
        action=Action.UPSERT,
        is_new=True,
        email=email,
        phone="+905538148210",
        fields=fields,
        memberships_add=("crm-at-risk", "crm-repeat"),
        memberships_remove=(),
        email_intent=ConsentIntent.SUBSCRIBE_IF_NEW,
        sms_intent=ConsentIntent.LEAVE,
        payload_hash=f"{n:032x}",
        memberships=("crm-at-risk", "crm-repeat"),
        email_consent_at=datetime(2026, 5, 1, 12, 30, tzinfo=UTC),
    )


def answer(change: Change, n: int, mixed: bool) -> PushResult:
    outcome = ANSWERS[n % len(ANSWERS)] if mixed else Outcome.OK
    job = "job-1" if outcome is Outcome.PENDING else None
    message = "" if outcome is Outcome.OK else "refused"
    return PushResult(change.person_key, outcome, f"r{n}", message, job)


def one_pass(
    store: Store, changes: list[Change], answers: list[PushResult], batch: int
) -> tuple[float, float]:
    """Seconds of both writes for every batch of ``changes``."""
    marking = recording = 0.0
    for start in range(0, len(changes), batch):
        part, said = changes[start : start + batch], answers[start : start + batch]
        began = time.perf_counter()
        with store.transaction() as conn:
            mark_in_flight(conn, "bench", 1, part, 1_000)
        marked = time.perf_counter()
        with store.transaction() as conn:
            record_results(conn, "bench", 1, part, said, now_ms=2_000, retry=RETRY)
        marking += marked - began
        recording += time.perf_counter() - marked
    return marking, recording


def measure(engine: str, repeat: int) -> dict[str, Figure]:
    changes = [a_change(n) for n in range(CHANGES)]
    figures: dict[str, Figure] = {}
    for kind, batch in BATCHES.items():
        for case in ("first", "again", "mixed"):
            best: tuple[float, float] | None = None
            for _ in range(repeat):
                with state_url(engine, "bench_ledger") as url:
                    store = Store(url)
                    try:
                        answers = [answer(c, n, case == "mixed") for n, c in enumerate(changes)]
                        if case == "again":
                            one_pass(store, changes, answers, batch)
                        seconds = one_pass(store, changes, answers, batch)
                    finally:
                        store.close()
                if best is None or sum(seconds) < sum(best):
                    best = seconds
            assert best is not None
            prefix = f"{engine}_{kind}_{case}"
            scale = 10_000 / CHANGES
            figures[f"{prefix}_mark_s_per_10k"] = round(best[0] * scale, 3)
            figures[f"{prefix}_record_s_per_10k"] = round(best[1] * scale, 3)
            figures[f"{prefix}_s_per_10k"] = round(sum(best) * scale, 3)
            print(f"  {prefix:>32}: {sum(best) * scale:.3f} s per 10,000", flush=True)
    return figures


def previous_figures() -> dict[str, Figure]:
    """The figures of an engine not measured this time, kept."""
    if not RESULTS.exists():
        return {}
    kept = json.loads(RESULTS.read_text(encoding="utf-8")).get("ledger", {})
    return {k: v for k, v in kept.items() if k not in {"measured_at", "machine"}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_ledger")
    parser.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="passes per case; the best counts")
    args = parser.parse_args(argv)
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    figures: dict[str, Figure] = {"changes": CHANGES, "batches": str(BATCHES)}
    for engine in engines:
        print(f"{engine}: {CHANGES:,} changes", flush=True)
        try:
            figures.update(measure(engine, args.repeat))
        except sa.exc.OperationalError as exc:  # the server is down: say so in one line
            print(f"cannot open {engine}: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
    path = record("ledger", {**previous_figures(), **figures})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
