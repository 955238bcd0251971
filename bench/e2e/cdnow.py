"""The CDNOW transactions as a store's export files, for the end-to-end benches.

CDNOW (``../shared/datasets/cdnow``) holds 69,659 purchases of 23,570 customers from
January 1997 to June 1998: customer, day, CDs bought, dollars paid. As a store's export
(the sample store's format, so ``bench.e2e``'s configuration reads it unchanged): one
customer row each (an address under example.com, e-mail consent given at the first
purchase), one fulfilled USD order per purchase with one line of CDs, no carts. The days
are moved as a whole so that the last one falls a day before the sample store's clock,
which every bench run's ``--as-of`` follows: the segments see a store that is trading
now, with CDNOW's own spacing of purchases and its long tail of lapsed customers.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from bench.e2e.options import ROOT

DATASET = ROOT.parent / "shared" / "datasets" / "cdnow" / "CDNOW_master.txt"
HEADER: tuple[str, ...] = ("customer_id", "email", "first_name", "last_name", "phone", "city")
HEADER += ("district",)
HEADER += ("country", "birth_date", "created_at", "updated_at", "accepts_email_marketing")
HEADER += ("email_marketing_updated_at", "accepts_sms_marketing", "sms_marketing_updated_at")
HEADER += ("deleted",)
LAST_DAY = datetime(1998, 6, 30, 12, tzinfo=UTC)


def cdnow_store(cache: Path, dataset: Path = DATASET) -> Path:
    """The export files of the CDNOW store, written on first use."""
    from crmsync.sample import DEFAULT_NOW

    folder = cache / "cdnow"
    if (folder / "customers.csv").exists():
        return folder
    if not dataset.exists():
        raise FileNotFoundError(f"the CDNOW dataset is not at {dataset}")
    shift = DEFAULT_NOW.astimezone(UTC) - timedelta(days=1) - LAST_DAY
    partial = folder.with_name(f"cdnow.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    first_seen: dict[str, str] = {}
    with (
        dataset.open(encoding="ascii") as source,
        (partial / "orders.jsonl").open("w", encoding="utf-8") as orders,
    ):
        next(source)  # the header
        for number, line in enumerate(source, start=1):
            cid, day, cds, dollars = line.split()
            placed = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC, hour=12) + shift
            at = placed.isoformat()
            first_seen.setdefault(cid, at)
            quantity = max(int(cds), 1)
            total = Decimal(dollars)
            price = (total / quantity).quantize(Decimal("0.01"))
            order = {
                "id": str(number),
                "customer_id": cid,
                "email": _email(cid),
                "created_at": at,
                "updated_at": at,
                "status": "fulfilled",
                "currency": "USD",
                "total_price": str(total),
                "total_discount": "0.00",
                "total_refunded": "0.00",
                "line_items": [_line(quantity, price)],
            }
            orders.write(json.dumps(order, separators=(",", ":")) + "\n")
    with (partial / "customers.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for cid, at in first_seen.items():
            names = dict.fromkeys(HEADER, "")
            names.update(customer_id=cid, email=_email(cid), country="US", created_at=at)
            names.update(updated_at=at, accepts_email_marketing="subscribed")
            names.update(email_marketing_updated_at=at, accepts_sms_marketing="not_subscribed")
            names.update(deleted="false")
            writer.writerow(names.values())
    (partial / "carts.jsonl").write_text("", encoding="utf-8")
    os.replace(partial, folder)
    return folder


def _line(quantity: int, price: Decimal) -> dict[str, object]:
    return {"sku": "CD", "title": "CD", "category": "Music", "quantity": quantity,
            "price": str(price), "discount": "0.00"}  # fmt: skip


def _email(cid: str) -> str:
    return f"cdnow-{cid}@example.com"
