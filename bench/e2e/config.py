"""The state database of a bench run and the user's configuration that points at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakes.mailchimp import FakeMailchimp

KEY_ENV = "CRMSYNC_BENCH_MAILCHIMP_KEY"  # the config names it; the run's environment holds it
POSTGRES_URL = os.environ.get(
    "CRMSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def admin_dsn() -> str:
    """``POSTGRES_URL`` in libpq's form, which psycopg takes (no SQLAlchemy driver name)."""
    import sqlalchemy as sa

    url = sa.make_url(POSTGRES_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextmanager
def state_database(engine: str, folder: Path, name: str) -> Iterator[str]:
    """A state URL of its own: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{folder / 'state.db'}"
        return
    import sqlalchemy as sa

    _drop_database(name, create=True)  # a fresh one, whatever an aborted bench left
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_database(name)


def _drop_database(name: str, create: bool = False) -> None:
    import psycopg

    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def config_text(state_url: str, data: Path, fake: FakeMailchimp, connections: int) -> str:
    """The user's configuration (as in config.example.toml) with a Mailchimp destination."""
    table = f"""[destinations.mc]
kind = "mailchimp"
api_key = "${{{KEY_ENV}}}"
list_id = "{fake.list_id}"
base_url = "{fake.base_url}"
max_connections = {connections}
"""
    return pipeline_text(state_url, data, "mc", table)


def pipeline_text(state_url: str, data: Path, name: str, destination: str) -> str:
    """The user's configuration (as in config.example.toml): the store's files to the
    destination ``name``, whose table is ``destination``."""
    return f"""default_segments = true

[state]
url = "{state_url}"

[defaults]
region = "TR"
timezone = "Europe/Istanbul"
currency = "TRY"

{shop_source(data)}
{destination}
[pipelines.main]
sources = ["shop"]
destinations = ["{name}"]
"""


def shop_source(data: Path) -> str:
    """The source ``shop``: the export files in ``data``, read as config.example.toml reads
    the sample store's (every bench that runs crmsync on export files names them so)."""
    return f"""[sources.shop]
kind = "files"
[sources.shop.customers]
path = "{data / "customers.csv"}"
updated_at = "updated_at"
[sources.shop.customers.columns]
external_id = "customer_id"
region = "district"
[sources.shop.orders]
path = "{data / "orders.jsonl"}"
updated_at = "updated_at"
lines = "line_items"
[sources.shop.orders.columns]
placed_at = "created_at"
total = "total_price"
[sources.shop.orders.line_columns]
product = "title"
unit_price = "price"
[sources.shop.carts]
path = "{data / "carts.jsonl"}"
updated_at = "updated_at"
[sources.shop.carts.columns]
converted = "completed_at"
checkout_url = "abandoned_checkout_url"
"""
