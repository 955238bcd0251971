"""The sample store a bench runs on, and the 1 % change made to it before the third run."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.e2e.options import CDNOW, Size

SEED, ORDERS_PER_CUSTOMER, DIRTY_RATE = 7, 5.0, 0.01
FILES = ("customers.csv", "orders.jsonl", "carts.jsonl")
_EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$")


def store_for(size: int, cache: Path) -> Path:
    """The export files of a ``size``-customer store, generated on first use only."""
    from crmsync.sample import SampleSpec, write_files

    folder = cache / f"c{size}-o{ORDERS_PER_CUSTOMER:g}-d{DIRTY_RATE:g}-s{SEED}"
    if not (folder / "customers.csv").exists():
        partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        spec = SampleSpec(
            customers=size, seed=SEED, orders_per_customer=ORDERS_PER_CUSTOMER,
            dirty_rate=DIRTY_RATE,
        )  # fmt: skip
        write_files(spec, partial)
        os.replace(partial, folder)  # whole or absent, for the next bench that looks
    return folder


def store_of(size: Size, cache: Path) -> Path:
    """The export files a size names: a generated store, or CDNOW's (``bench.e2e.cdnow``)."""
    if size == CDNOW:
        from bench.e2e.cdnow import cdnow_store

        return cdnow_store(cache)
    return store_for(int(size), cache)


def customer_count(size: Size, store: Path) -> int:
    """The customers of a store: its size, or for CDNOW the rows of its customer export
    (the slices of a run on workers are cut from it)."""
    if isinstance(size, int):
        return size
    with (store / "customers.csv").open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1  # the header


def copy_store(store: Path, data: Path) -> None:
    """A working copy of the export files, which the 1 % change may then edit."""
    data.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(store / name, data / name)


def as_of() -> str:
    """One clock for every run: an hour after the store's, after the changed rows."""
    return _after_store_clock(timedelta(hours=1))


def change_one_percent(data: Path) -> set[str]:
    """Edits 1 % of the customers in place, stamped half an hour after the store's clock:
    even picks get a new last name and city (city alone reaches no Mailchimp field: the
    address needs a street), odd picks a new order. Only clean customers with an address
    nobody else uses are picked, so each pick is one person. Returns their addresses.
    Two streaming passes over the CSV: a million rows are never held at once."""
    changed_at = _after_store_clock(timedelta(minutes=30))
    path = data / "customers.csv"
    picks = _picks(path)
    emails: set[str] = set()
    partial = path.with_suffix(".csv.partial")
    with (
        path.open(encoding="utf-8", newline="") as source,
        partial.open("w", encoding="utf-8", newline="") as target,
        (data / "orders.jsonl").open("a", encoding="utf-8") as orders,
    ):
        reader, writer = csv.reader(source), csv.writer(target, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        at = {name: header.index(name) for name in header}
        for number, cells in enumerate(reader):
            turn = picks.get(number)
            if turn is not None:
                emails.add(cells[at["email"]].strip().lower())
                if turn % 2 == 0:
                    cells[at["last_name"]] = f"{cells[at['last_name']]} Yeni".strip()
                    cells[at["city"]] = "Ankara" if cells[at["city"]] != "Ankara" else "Eskişehir"
                    cells[at["updated_at"]] = changed_at
                else:
                    order = _new_order(800_000_001 + turn, cells, at, changed_at)
                    orders.write(json.dumps(order, ensure_ascii=False) + "\n")
            writer.writerow(cells)
    os.replace(partial, path)
    return emails


def _picks(path: Path) -> dict[int, int]:
    """Row number -> turn of the customers to change (the first pass): 1 % of the clean
    rows, spread evenly over the eligible ones."""
    uses: Counter[str] = Counter()
    candidates: list[tuple[int, str]] = []
    clean = 0
    for number, row in _customer_rows(path):
        email = row["email"].strip().lower()
        uses[email] += 1
        if row["customer_id"].isdigit() and int(row["customer_id"]) < 900_000_000:
            clean += 1  # the generator's dirty rows have ids above 900,000,000
            if row["deleted"] == "false" and _EMAIL.match(email):
                candidates.append((number, email))
    eligible = [number for number, email in candidates if uses[email] == 1]
    wanted = min(max(1, round(clean / 100)), len(eligible))
    return {eligible[i * len(eligible) // wanted]: i for i in range(wanted)}


def _after_store_clock(delta: timedelta) -> str:
    from crmsync.sample import DEFAULT_NOW

    return (DEFAULT_NOW + delta).isoformat()


def _customer_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, row) of the customer export's well-formed rows."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for number, cells in enumerate(reader):
            if len(cells) == len(header):
                yield number, dict(zip(header, cells, strict=True))


def _new_order(number: int, row: list[str], at: dict[str, int], when: str) -> dict[str, Any]:
    line = {"sku": "AKS-0003", "title": "Deri Cüzdan Kırmızı", "category": "Aksesuar"}
    return {
        "id": str(number), "customer_id": row[at["customer_id"]],
        "email": row[at["email"]].strip().lower(), "created_at": when, "updated_at": when,
        "status": "paid", "currency": "TRY", "total_price": "349.90", "total_discount": "0.00",
        "total_refunded": "0.00",
        "line_items": [{**line, "quantity": 1, "price": "349.90", "discount": "0.00"}],
    }  # fmt: skip
