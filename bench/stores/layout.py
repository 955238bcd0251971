"""The stores of a bench: their export files (generated once, cached), the fake that holds
an account per store, and the directory of store files ``serve`` reads."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.e2e.config import shop_source
from bench.e2e.options import ROOT

if TYPE_CHECKING:
    from tests.fakes.mailchimp import FakeMailchimp

CACHE = ROOT / "var" / "bench" / "stores"
KEY_ENV = "CRMSYNC_BENCH_KEY_{}"  # each store's API key, from the service's environment


@dataclass(frozen=True)
class Shape:
    stores: int = 200
    customers: int = 200  # per store
    orders_per_customer: float = 5.0
    dirty_rate: float = 0.01

    def name(self, number: int) -> str:
        return f"s{number:04d}"


def exports(shape: Shape) -> dict[str, Path]:
    """Each store's export files, generated on first use (a seed per store)."""
    from crmsync.sample import SampleSpec, write_files

    found: dict[str, Path] = {}
    for number in range(shape.stores):
        name = shape.name(number)
        folder = CACHE / f"c{shape.customers}-o{shape.orders_per_customer:g}" / name
        if not (folder / "customers.csv").exists():
            partial = folder.with_name(f"{name}.{os.getpid()}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            spec = SampleSpec(
                customers=shape.customers,
                seed=1000 + number,
                orders_per_customer=shape.orders_per_customer,
                dirty_rate=shape.dirty_rate,
            )
            write_files(spec, partial)
            os.replace(partial, folder)
        found[name] = folder
    return found


def accounts(fake: FakeMailchimp, names: list[str]) -> dict[str, str]:
    """An account with an audience of its own per store on ``fake``: store -> API key."""
    return {name: fake.add_account(f"list{name}", f"audience of {name}") for name in names}


def write_directory(
    directory: Path,
    state_url: str,
    data: dict[str, Path],
    fake_url: str,
    *,
    max_parallel: int,
    celery: str = "",
) -> None:
    """``_base.toml`` (state, serve, schedule, the Mailchimp destination) and one file per
    store naming its export files, its audience and its key's variable."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    base = f"""default_segments = true

[state]
url = "{state_url}"

[serve]
max_parallel = {max_parallel}

[observe]
port = 0

[defaults]
region = "TR"
timezone = "Europe/Istanbul"
currency = "TRY"

[destinations.mc]
kind = "mailchimp"
base_url = "{fake_url}"
max_connections = 10

[pipelines.main]
sources = ["shop"]
destinations = ["mc"]
every = "{EVERY}"
{celery}"""
    (directory / "_base.toml").write_text(base, encoding="utf-8")
    for name, folder in data.items():
        (directory / f"{name}.toml").write_text(_store_text(name, folder), encoding="utf-8")


EVERY = "20s"  # every store is due 20 s after the start, then again 20 s after each tick


def _store_text(name: str, data: Path) -> str:
    return f"""{shop_source(data)}
[destinations.mc]
api_key = "${{{KEY_ENV.format(name)}}}"
list_id = "list{name}"
"""
