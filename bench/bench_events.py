"""Events: derived and pushed per second, and calls per 10,000 orders against the floor.

Generates a sample store, runs its pipeline once with events on against the outbox
(people first, then events, as every run does) and reads the run's report: the events
stage's seconds, the events acknowledged, and the event batch files written (the
outbox's "calls"). The floor is one call per ``event_batch_size`` events: no client can
send them in fewer. A second run over the same data measures the cost of deriving and
filtering when nothing is new.

``--destination klaviyo`` or ``mailchimp`` pushes the same store's events to that vendor's
fake (served in this process, spec validation off: it would cost more than the calls it
checks) and counts its event calls against the vendor's floor: Klaviyo takes up to 1,000
events per bulk call, so its floor is one call per 1,000 events; Mailchimp's e-commerce API
takes one object per call, so its floor is one call per event it takes (an order, a status
change, a cart, a cart's removal; the products and variants an order needs come on top,
once each, and the store's own set-up calls are not counted). ``hubspot`` writes orders,
carts and line items in batch calls of 100 objects, so its floor is one call per 100
objects written; its reads (contacts by e-mail, searches for objects that may exist, a
first sync's probe per object kind) come on top and are also counted apart (``reads``).
``--objects deals`` writes HubSpot's events as deals with line items instead (orders as
won or lost deals, abandoned checkouts as open deals in a "carts" pipeline of the fake),
against the same floor; the deal properties crmsync creates once per account are set-up
calls, not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from bench.results import record
from cli import main as cli
from crmsync.sample import SampleSpec, write_files

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
AS_OF = "2026-11-01T09:00:00+00:00"


def _config(root: Path, data: Path, batch: int) -> Path:
    config = root / "crmsync.toml"
    config.write_text(
        f"""
[state]
url = "sqlite:///{root / "state.db"}"

[sources.shop]
kind = "files"
[sources.shop.customers]
path = "{data / "customers.csv"}"
[sources.shop.orders]
path = "{data / "orders.jsonl"}"
[sources.shop.carts]
path = "{data / "carts.jsonl"}"

[destinations.out]
kind = "outbox"
directory = "{root / "outbox"}"
event_batch_size = {batch}

[pipelines.main]
sources = ["shop"]
destinations = ["out"]
events = true
""",
        encoding="utf-8",
    )
    return config


def _run(config: Path) -> dict[str, object]:
    result = CliRunner().invoke(
        cli, ["run", "--as-of", AS_OF, "--json", "--no-progress", "--config", str(config)]
    )
    reports: list[dict[str, object]] = json.loads(result.stdout)
    return reports[0]


def measure(customers: int, batch: int) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        root = Path(tmp)
        write_files(SampleSpec(customers=customers, seed=3, now=NOW), root / "data")
        text = (root / "data" / "orders.jsonl").read_text(encoding="utf-8")
        orders = sum(1 for line in text.splitlines() if line)
        config = _config(root, root / "data", batch)
        first = _run(config)
        files = len(list((root / "outbox" / "out" / "events").glob("*.jsonl")))
        second = _run(config)
    events = first["events"]["out"]["ok"]  # type: ignore[index]
    seconds = first["seconds"].get("events", 0.0)  # type: ignore[attr-defined]
    again = second["seconds"].get("events", 0.0)  # type: ignore[attr-defined]
    floor = math.ceil(events / batch)
    return {
        "destination": "outbox",
        "customers": customers,
        "orders": orders,
        "events": events,
        "events_per_s": round(events / seconds, 1) if seconds else "n/a",
        "events_stage_s": round(seconds, 3),
        "rerun_events_stage_s": round(again, 3),
        "calls": files,
        "floor_calls": floor,
        "calls_per_10k_orders": round(files * 10_000 / orders, 1) if orders else 0,
        "ratio_to_floor": round(files / floor, 4) if floor else "n/a",
    }


KLAVIYO_BULK = ("POST", "/api/event-bulk-create-jobs")
KLAVIYO_PER_CALL = 1000
STORE_SETUP = {"/ecommerce/stores", "/ecommerce/stores/{store_id}"}  # once per store


HUBSPOT_FAST = 100_000  # the fake's and the config's window: the limits have their own tests
HUBSPOT_PER_CALL = 100  # objects per batch create, update or archive call
HUBSPOT_EVENT_ROUTES = {
    f"{verb}_{kind}"
    for verb in ("create", "update", "archive", "search")
    for kind in ("orders", "carts", "deals", "line_items")
} | {"read_contacts"}
HUBSPOT_READS = {route for route in HUBSPOT_EVENT_ROUTES if route.startswith(("search", "read"))}


def _hubspot_objects(fake: Any) -> int:
    """Objects the events wrote in the fake HubSpot (orders, carts, line items)."""
    from tests.fakes.hubspot_commerce import written

    return sum(written(fake).values())


def measure_vendor(
    vendor: str, customers: int, objects_as: str = "commerce"
) -> dict[str, float | int | str]:
    """The same store's first run with events on, pushed to ``vendor``'s fake (HubSpot's
    events written as ``objects_as``: commerce objects or deals)."""
    import os

    from tests.events_site import events_site

    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        root = Path(tmp)
        site = events_site(root, f"sqlite:///{root / 'state.db'}", customers)
        text = (site.data / "orders.jsonl").read_text(encoding="utf-8")
        orders = sum(1 for line in text.splitlines() if line)
        fake: Any
        if vendor == "klaviyo":
            from tests.fakes.klaviyo import FakeKlaviyo

            fake = FakeKlaviyo(validate=False, rate_limits=False).start()
            table = (
                f'kind = "klaviyo"\napi_key = "${{BENCH_EVENTS_KEY}}"\n'
                f'base_url = "{fake.base_url}"\n'
            )
        elif vendor == "hubspot":
            from tests.fakes.hubspot import FakeHubSpot

            fake = FakeHubSpot(per_ten_seconds=HUBSPOT_FAST).start()
            fake.api_key = fake.token
            table = (
                f'kind = "hubspot"\naccess_token = "${{BENCH_EVENTS_KEY}}"\n'
                f'base_url = "{fake.base_url}"\n'
                f"[destinations.vendor.rate_limits]\nper_ten_seconds = {HUBSPOT_FAST}\n"
            )
            if objects_as == "deals":
                from tests.fakes.hubspot_deals import pipelines

                pipelines(fake)["carts"] = ["abandoned", "recovered"]
                table += (
                    '[destinations.vendor.events]\nobjects = "deals"\n'
                    'checkout_pipeline = "carts"\ncheckout_stage = "abandoned"\n'
                )
        else:
            from tests.fakes.mailchimp import FakeMailchimp

            fake = FakeMailchimp(validate=False).start()
            table = (
                f'kind = "mailchimp"\napi_key = "${{BENCH_EVENTS_KEY}}"\n'
                f'list_id = "{fake.list_id}"\nbase_url = "{fake.base_url}"\n'
            )
        os.environ["BENCH_EVENTS_KEY"] = fake.api_key
        try:
            site.send_to("vendor", table)
            fake.reset_counters()
            report = site.run_json()
            calls = dict(fake.calls)
            objects = _hubspot_objects(fake) if vendor == "hubspot" else 0
        finally:
            fake.stop()
    events = report["events"]["vendor"].get("ok", 0)
    seconds = report["seconds"].get("events", 0.0)
    extra: dict[str, int] = {}
    if vendor == "klaviyo":
        sent = calls.get(KLAVIYO_BULK, 0)
        floor = math.ceil(events / KLAVIYO_PER_CALL)
    elif vendor == "hubspot":
        sent = sum(n for (_, route), n in calls.items() if route in HUBSPOT_EVENT_ROUTES)
        floor = math.ceil(objects / HUBSPOT_PER_CALL)
        extra["reads"] = sum(n for (_, route), n in calls.items() if route in HUBSPOT_READS)
    else:
        sent = sum(
            n for (_, route), n in calls.items()
            if route.startswith("/ecommerce/") and route not in STORE_SETUP
        )  # fmt: skip
        floor = events
    return {
        "destination": vendor if objects_as == "commerce" else f"{vendor} ({objects_as})",
        "customers": customers,
        "orders": orders,
        "events": events,
        "events_per_s": round(events / seconds, 1) if seconds else "n/a",
        "events_stage_s": round(seconds, 3),
        "calls": sent,
        "floor_calls": floor,
        "calls_per_10k_orders": round(sent * 10_000 / orders, 1) if orders else 0,
        "ratio_to_floor": round(sent / floor, 4) if floor else "n/a",
        **extra,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_events")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="events per batch (outbox)")
    parser.add_argument(
        "--destination", choices=("outbox", "klaviyo", "mailchimp", "hubspot"), default="outbox"
    )
    parser.add_argument(
        "--objects",
        choices=("commerce", "deals"),
        default="commerce",
        help="hubspot: events as commerce objects or as deals",
    )
    args = parser.parse_args(argv)
    name = f"events_{args.destination}"
    if args.destination == "outbox":
        figures = measure(args.customers, args.batch)
    else:
        figures = measure_vendor(args.destination, args.customers, args.objects)
        if args.destination == "hubspot" and args.objects == "deals":
            name += "_deals"
    path = record(name, figures)
    print(json.dumps(figures, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
