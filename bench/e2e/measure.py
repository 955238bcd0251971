"""One size on one engine (in one process or on N workers): the first, no-change and
1 %-changed runs on one state."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.e2e.config import KEY_ENV, config_text, state_database
from bench.e2e.fake import Audience, call_name, floor_calls, new_fake
from bench.e2e.figures import size_figures
from bench.e2e.options import RUNS, Options, Size, size_label
from bench.e2e.per_contact import per_contact
from bench.e2e.run import Run, entry, run_crmsync
from bench.e2e.store import change_one_percent, copy_store, customer_count, store_of
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
    ``workers`` Celery workers; its figures are keyed ``<engine>.<size>.…`` (with ``wN.``
    after the size on workers), and the per-contact figures are measured here when
    ``contact`` is None and the size asks for them (in one process only). With
    ``reference``, each run must end with the same audience at the fake as there."""
    store = store_of(size, options.work / "stores")
    customers = customer_count(size, store)
    tag = f"-w{workers}" if workers else ""
    folder = options.work / "e2e" / f"{engine}-{size}{tag}"
    shutil.rmtree(folder, ignore_errors=True)
    data = folder / "data"
    copy_store(store, data)
    fake = fake or new_fake(options)
    fake.start()
    env = {**os.environ, KEY_ENV: fake.api_key}
    # as installed, with bytecode kept between runs: where PYTHONDONTWRITEBYTECODE is set
    # (as on the machines this runs on), every run would compile crmsync's sources again
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(options.work / "pycache")
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
            text = config_text(url, data, fake, options.connections)
            broker, queue = BROKERS[options.broker], new_queue()
            if workers:
                text += celery_text(broker, queue, per_slice)
            config.write_text(text, "utf-8")
            with _workers(config, folder, env, workers, broker, queue) as pool:
                for name in RUNS:
                    if name == "changed":
                        changed = change_one_percent(data)
                    runs[name] = _counted_run(fake, config, env, database, pool)
                    audiences[name] = Audience.of(fake)
                    wall = runs[name].wall
                    label = f"{engine} {size_label(size)} w{workers} {name}"
                    print(f"  {label}: {wall:.1f} s", flush=True)
                    _compare(audiences[name], (reference or {}).get(name), name, workers)
            lifetime_cpu = pool.lifetime_cpu if pool else 0.0  # known once they stopped
        per_contact_size = isinstance(size, int) and size in options.per_contact_sizes
        if contact is None and not workers and per_contact_size:
            contact = per_contact(fake, options)
        failed = False
    finally:
        fake.stop()
        if failed:
            print(f"  the run folder (config, logs) is kept: {folder}", flush=True)
        elif not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    found = size_figures(size, engine, runs, changed, options, None if workers else contact)
    found["customers"] = customers  # CDNOW's are counted, not named
    if workers:
        found["people_per_slice"] = per_slice
        found["workers_lifetime_cpu_s"] = round(lifetime_cpu, 2)
    prefix = f"{engine}.{size}.{f'w{workers}.' if workers else ''}"
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
    fake: FakeMailchimp,
    config: Path,
    env: dict[str, str],
    database: str | None,
    pool: Workers | None,
) -> Run:
    """One run (in the config's folder), with the calls the fake answered during it, the
    floor of what it changed there, and the workers' CPU and peak RSS meanwhile."""
    before = Audience.of(fake)
    fake.reset_counters()
    cpu_before = pool.before_run() if pool else 0.0
    workers = ("--workers", "celery") if pool else ()
    run = run_crmsync(config, config.parent, env, database, workers)
    if pool:
        run.workers = pool.after_run(cpu_before)
    run.calls = Counter({call_name(m, r): n for (m, r), n in fake.calls.items()})
    run.floor = floor_calls(before, Audience.of(fake))
    run.max_in_flight = fake.max_in_flight
    run.rejected_429 = fake.concurrency_rejections
    return run
