"""One size on one engine (in one process or on N workers): the first, no-change and
1 %-changed runs on one state."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.e2e import bytecode
from bench.e2e.config import state_database
from bench.e2e.fake import Audience
from bench.e2e.figures import size_figures
from bench.e2e.options import RUNS, Options, Size, key_prefix, size_label
from bench.e2e.per_contact import per_contact
from bench.e2e.run import Run, entry, run_crmsync
from bench.e2e.store import change_one_percent, copy_store, customer_count, store_of
from bench.e2e.vendors import Vendor, vendor
from bench.e2e.workers import (
    BROKERS,
    Workers,
    celery_text,
    crmsync_command,
    new_queue,
    people_per_slice,
    running,
)
from bench.results import Figure

if TYPE_CHECKING:
    from tests.fakes.mailchimp import FakeMailchimp


class AudienceMismatch(RuntimeError):
    """A run ended with another audience at the fake than the reference configuration's
    same run: the figures would compare different work, so the bench stops."""


class WrongAtTheFake(RuntimeError):
    """A run left the fake Klaviyo or HubSpot with requests the vendor does not allow,
    consent crmsync must not give, or a consented customer missing: the bench stops."""


@dataclass
class Measured:
    """One configuration's figures, the per-contact figures, and the fake's audience after
    each run (the reference the next configurations must end with)."""

    figures: dict[str, Figure]
    contact: dict[str, Figure] | None
    audiences: dict[str, Audience] = field(default_factory=dict)


def bench_one(
    size: Size,
    engine: str,
    options: Options,
    fake: FakeMailchimp | None = None,
    contact: dict[str, Figure] | None = None,
    workers: int = 0,
    reference: dict[str, Audience] | None = None,
) -> Measured:
    """The three runs of one store on one engine, in one process (``workers`` 0) or on
    ``workers`` Celery workers, to ``options.destination``; its figures are keyed
    ``<engine>.<size>.…`` (Klaviyo and HubSpot: ``<engine>.<size>.<destination>.…``; with
    ``wN.`` after that on workers), and the per-contact figures (Mailchimp only) are
    measured here when ``contact`` is None and the size asks for them (in one process
    only). With ``reference``, each run must end with the same audience at the fake as
    there; at Klaviyo and HubSpot every run must also leave nothing wrong there
    (``WrongAtTheFake``)."""
    store = store_of(size, options.work / "stores")
    customers = customer_count(size, store)
    tag = f"-w{workers}" if workers else ""
    folder = options.work / "e2e" / f"{engine}-{size}{tag}"
    shutil.rmtree(folder, ignore_errors=True)
    data = folder / "data"
    copy_store(store, data)
    fake_vendor = vendor(options, fake)
    fake_vendor.start()
    env = {**os.environ, fake_vendor.key_env: fake_vendor.secret()}
    # as installed, with bytecode kept between runs: where PYTHONDONTWRITEBYTECODE is set
    # (as on the machines this runs on), every run would compile crmsync's sources again
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(bytecode.prefix(options))  # filled: ``bytecode.fill``
    if options.source is not None:  # ahead of the editable install, in workers too
        env["PYTHONPATH"] = str(options.source)
    database = f"bench_e2e_{size}_{workers}_{os.getpid()}" if engine == "postgresql" else None
    runs: dict[str, Run] = {}
    audiences: dict[str, Audience] = {}
    changed: set[str] = set()
    per_slice = people_per_slice(customers, max(options.workers)) if workers else 0
    lifetime_cpu = 0.0
    failed = True
    try:
        with state_database(engine, folder, database or "") as url:
            config = folder / "crmsync.toml"
            text = fake_vendor.config(url, data)
            broker, queue = BROKERS[options.broker], new_queue()
            if workers:
                shared = fake_vendor.name if fake_vendor.shared_on_destination() else ""
                text += celery_text(broker, queue, per_slice, shared=shared)
            config.write_text(text, "utf-8")
            consented = fake_vendor.expect(data)
            with _workers(config, folder, env, workers, broker, queue) as pool:
                for name in RUNS:
                    if name == "changed":
                        changed = change_one_percent(data)
                    fake_vendor.settle()
                    runs[name], audiences[name] = _counted_run(
                        fake_vendor, config, env, database, pool
                    )
                    wall = runs[name].wall
                    label = f"{engine} {size_label(size)} {_vendor_label(options)}w{workers} {name}"
                    print(f"  {label}: {wall:.1f} s", flush=True)
                    _compare(audiences[name], (reference or {}).get(name), name, workers)
                    problems = fake_vendor.problems(audiences[name], consented)
                    if problems:
                        raise WrongAtTheFake(f"the {name} run: " + "; ".join(problems[:10]))
            lifetime_cpu = pool.lifetime_cpu if pool else 0.0  # known once they stopped
        per_contact_size = isinstance(size, int) and size in options.per_contact_sizes
        mailchimp = options.destination == "mailchimp"
        if contact is None and not workers and per_contact_size and mailchimp:
            contact = per_contact(fake_vendor.fake, options)
        failed = False
    finally:
        fake_vendor.stop()
        if failed:
            print(f"  the run folder (config, logs) is kept: {folder}", flush=True)
        elif not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    found = size_figures(size, engine, runs, changed, options, None if workers else contact)
    found["customers"] = customers  # CDNOW's are counted, not named
    if workers:
        found["people_per_slice"] = per_slice
        found["workers_lifetime_cpu_s"] = round(lifetime_cpu, 2)
    prefix = key_prefix(engine, size, workers, options.destination)
    return Measured({f"{prefix}{k}": v for k, v in found.items()}, contact, audiences)


@contextmanager
def _workers(
    config: Path, folder: Path, env: dict[str, str], count: int, broker: str, queue: str
) -> Iterator[Workers | None]:
    """The run's workers (none in one process)."""
    if not count:
        yield None
        return
    command = crmsync_command(entry(env))
    with running(command, config, folder / "logs", env, count, broker, queue) as pool:
        yield pool


def _compare(found: Audience, expected: Audience | None, run: str, workers: int) -> None:
    """Loudly, when the run's audience differs from the reference configuration's."""
    if expected is None or found == expected:
        return
    members = {k for k in found.members.keys() | expected.members.keys()
               if found.members.get(k) != expected.members.get(k)}  # fmt: skip
    tags = {t for t in found.tags.keys() | expected.tags.keys()
            if found.tags.get(t) != expected.tags.get(t)}  # fmt: skip
    raise AudienceMismatch(
        f"the {run} run on {workers} worker(s) ended with another audience than the "
        f"reference: {len(members)} member(s) differ (e.g. {sorted(members)[:3]}), "
        f"tags differ: {sorted(tags)[:10]}"
    )


def _counted_run(
    fake: Vendor,
    config: Path,
    env: dict[str, str],
    database: str | None,
    pool: Workers | None,
) -> tuple[Run, Audience]:
    """One run (in the config's folder), with the calls the fake answered during it, the
    floor of what it changed there, and the workers' CPU and peak RSS meanwhile; and the
    audience it left at the fake."""
    fake.begin()
    cpu_before = pool.before_run() if pool else 0.0
    workers = ("--workers", "celery") if pool else ()
    run = run_crmsync(config, config.parent, env, database, workers)
    if pool:
        run.workers = pool.after_run(cpu_before)
    audience, counted = fake.end()
    run.calls, run.sync_calls = counted.calls, counted.sync
    run.floor, run.time_floor = counted.floor, counted.time_floor
    run.max_in_flight = counted.max_in_flight
    run.rejected_429 = counted.rejected_429
    run.fake_cpu, run.fake_peak_kb = counted.fake_cpu, counted.fake_peak_kb
    return run, audience


def _vendor_label(options: Options) -> str:
    """How the progress lines and the table name a destination (Mailchimp: not at all)."""
    return "" if options.destination == "mailchimp" else f"{options.destination} "
