"""One size on one engine: the first, no-change and 1 %-changed runs on one state."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from bench.e2e.config import KEY_ENV, config_text, state_database
from bench.e2e.fake import Audience, call_name, floor_calls, new_fake
from bench.e2e.figures import size_figures
from bench.e2e.options import RUNS, Options
from bench.e2e.per_contact import per_contact
from bench.e2e.run import Run, run_crmsync
from bench.e2e.store import change_one_percent, copy_store, store_for
from bench.results import Figure

if TYPE_CHECKING:
    from tests.fakes.mailchimp import FakeMailchimp


def bench_one(
    size: int,
    engine: str,
    options: Options,
    fake: FakeMailchimp | None = None,
    contact: dict[str, Figure] | None = None,
) -> tuple[dict[str, Figure], dict[str, Figure] | None]:
    """The three runs of one store on one engine; returns its figures (keyed
    ``<engine>.<size>.…``) and the per-contact figures (measured here when ``contact`` is
    None and the size asks for them, else the ones given)."""
    store = store_for(size, options.work / "stores")
    folder = options.work / "e2e" / f"{engine}-{size}"
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
    database = f"bench_e2e_{size}_{os.getpid()}" if engine == "postgresql" else None
    runs: dict[str, Run] = {}
    changed: set[str] = set()
    try:
        with state_database(engine, folder, database or "") as url:
            config = folder / "crmsync.toml"
            config.write_text(config_text(url, data, fake, options.connections), "utf-8")
            for name in RUNS:
                if name == "changed":
                    changed = change_one_percent(data)
                runs[name] = _counted_run(fake, config, env, database)
                print(f"  {engine} {size:,} {name}: {runs[name].wall:.1f} s", flush=True)
        if contact is None and size in options.per_contact_sizes:
            contact = per_contact(fake, options)
    finally:
        fake.stop()
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    figures = size_figures(size, engine, runs, changed, options, contact)
    return {f"{engine}.{size}.{k}": v for k, v in figures.items()}, contact


def _counted_run(
    fake: FakeMailchimp, config: Path, env: dict[str, str], database: str | None
) -> Run:
    """One run (in the config's folder), with the calls the fake answered during it and
    the floor of what it changed there."""
    before = Audience.of(fake)
    fake.reset_counters()
    run = run_crmsync(config, config.parent, env, database)
    run.calls = Counter({call_name(m, r): n for (m, r), n in fake.calls.items()})
    run.floor = floor_calls(before, Audience.of(fake))
    run.max_in_flight = fake.max_in_flight
    run.rejected_429 = fake.concurrency_rejections
    return run
