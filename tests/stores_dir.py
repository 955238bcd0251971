"""Helpers for tests of a directory of store files: a shared base, one file per store,
each store with its own generated export files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from connectors.outbox import read_outbox
from crmsync import normalize
from crmsync.errors import RecordError
from crmsync.sample import SampleSpec, write_files
from tests.e2e import STORE_NOW, files_source


def base_text(state_url: str, outbox: Path, extra: str = "") -> str:
    """The shared base: the state database, the outbox destination ``out`` and the
    pipeline ``main``'s destination and schedule; each store adds its source ``shop``."""
    return f"""
[state]
url = "{state_url}"

[defaults]
timezone = "Europe/Istanbul"

[destinations.out]
kind = "outbox"
directory = "{outbox}"

[segments.big_spender]
rule = "spent_365d > 1000"

[pipelines.main]
destinations = ["out"]
schedule = "*/5 * * * *"
{extra}"""


def store_text(data: Path, extra: str = "") -> str:
    """A store's own file: its export files as the source ``shop`` of the pipeline ``main``."""
    return f"""
{files_source(data)}
[pipelines.main]
sources = ["shop"]
{extra}"""


@dataclass
class StoresDir:
    root: Path
    directory: Path  # the --config directory
    outbox: Path
    data: Path

    def add(self, name: str, customers: int = 20, seed: int = 1, extra: str = "") -> Path:
        """Writes the store's export files (once) and its configuration file."""
        data = self.export(name, customers, seed)
        path = self.directory / f"{name}.toml"
        path.write_text(store_text(data, extra), encoding="utf-8")
        return path

    def export(self, name: str, customers: int = 20, seed: int = 1) -> Path:
        """The export files under ``data/<name>``, written the first time."""
        data = self.data / name
        if not data.exists():
            spec = SampleSpec(customers=customers, seed=seed, now=STORE_NOW, dirty_rate=0.0)
            write_files(spec, data)
        return data

    def file(self, name: str) -> Path:
        return self.directory / f"{name}.toml"

    def emails(self, name: str) -> set[str]:
        """The normalised e-mails of a store's customers not deleted (the people a sync
        sends)."""
        found = set()
        with open(self.data / name / "customers.csv", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                if row["deleted"] == "true":
                    continue
                try:
                    email = normalize.email(row["email"])
                except RecordError:
                    continue
                if email:
                    found.add(email)
        return found

    def memberships(self, name: str) -> set[str]:
        """Every membership the store's destination ``out`` was told to add."""
        folder = self.outbox / f"{name}.out"
        records = read_outbox(folder) if folder.exists() else []
        return {str(m) for r in records for m in r["memberships_add"]}

    def sent(self, name: str) -> set[str]:
        """The e-mails written to the outbox of the store's destination ``out``."""
        folder = self.outbox / f"{name}.out"
        records = read_outbox(folder) if folder.exists() else []
        return {str(r["person_key"])[2:] for r in records}


def make_stores_dir(root: Path, state_url: str, base_extra: str = "") -> StoresDir:
    directory = root / "stores"
    directory.mkdir()
    outbox = root / "outbox"
    (directory / "_base.toml").write_text(base_text(state_url, outbox, base_extra), "utf-8")
    return StoresDir(root, directory, outbox, root / "data")


def names_in(url: str, table: str, column: str) -> set[str]:
    """The distinct values of a state table's column (e.g. the sources staged)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            return {str(v) for (v,) in conn.execute(sa.select(t.c[column]).distinct())}
    finally:
        engine.dispose()
