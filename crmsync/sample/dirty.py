"""Dirty records for the sample export: the mistakes real platform exports contain.

Each dirty record is an *extra* row drawn from its own random stream, so the clean store
is the same whatever ``dirty_rate`` is. Rows a source must refuse (a bad e-mail, no id, a
bad date, a negative quantity, an unknown currency) come with no record; rows a source
can repair (upper-case Turkish İ, an over-long name, an e-mail shared by two customer
ids) come with the record a correct reader makes of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

from crmsync import normalize
from crmsync.records import Customer, Order, Stream
from crmsync.sample.export import customer_row, order_dict
from crmsync.sample.item import Item
from crmsync.sample.people import email_for, fold, make_person
from crmsync.sample.spec import Frame, SampleSpec
from crmsync.sample.vocab import FEMALE_NAMES, MALE_NAMES, turkish_upper

ORDER_KINDS = ("negative_quantity", "unknown_currency", "order_missing_id", "order_bad_date")
KINDS = (
    "invalid_email", "negative_quantity", "missing_id", "unknown_currency", "bad_date",
    "over_long_name", "order_missing_id", "duplicate_email", "order_bad_date", "turkish_upper",
)  # fmt: skip
BAD_DATES = ("2026-02-30T10:15:00+03:00", "31.02.2026 25:61", "dün akşam", "0000-00-00 00:00:00")
BAD_CURRENCIES = ("TL", "YTL")
DOTTED_I_NAMES = tuple(n for n in (*FEMALE_NAMES, *MALE_NAMES) if "i" in fold(n))
LONG_NAME = 10_000
DIRTY_IDS = 900_000_001  # far above the clean ids, which count up from 100001 and 10000001


def bad_email(email: str, variant: int) -> str:
    local, _, domain = email.partition("@")
    return (
        f"{local}@@{domain}",
        f"{local} at {domain}",
        f"{local}@{domain.split('.')[0]}",
        f"{local}@exa mple.com",
        f"ayşe.{local}@{domain}",
    )[variant % 5]


class DirtyMaker:
    """Follows the clean generator and now and then emits one dirty record after a customer."""

    def __init__(self, spec: SampleSpec, frame: Frame) -> None:
        self.rng = random.Random(spec.seed * 1_000_003 + 17)
        self.rate = spec.dirty_rate
        self.frame = frame
        self.seed = spec.seed
        self.count = 0
        self.template: Order | None = None

    def after(self, customer: Customer, last_order: Order | None) -> Iterator[Item]:
        if last_order is not None:
            self.template = last_order
        if self.rng.random() >= self.rate:
            return
        number = self.count
        self.count += 1
        kind = KINDS[number % len(KINDS)]
        variant = number // len(KINDS)  # the n-th dirty record of its kind
        if kind in ORDER_KINDS and self.template is None:
            kind = "invalid_email"
        if kind == "duplicate_email" and customer.email is None:
            kind = "turkish_upper"
        if kind in ORDER_KINDS:
            assert self.template is not None
            yield self._order(kind, number, variant, self.template)
        else:
            yield self._customer(kind, number, variant, customer)

    def _person(self, number: int, near: Customer) -> Customer:
        rng = self.rng
        assert near.created_at is not None
        created = min(int(near.created_at.timestamp()) + rng.randrange(1, 3600), self.frame.now)
        person, _ = make_person(
            rng, self.frame, number=9_000_000 + number, external_id=str(DIRTY_IDS + number),
            created=created, last_activity=created, seed=self.seed,
        )  # fmt: skip
        if person.email is None:
            first, last = person.first_name or "", person.last_name or ""
            email = email_for(rng, first, last, 9_000_000 + number)  # unique as make_person
            person = replace(person, email=email)
        return person

    def _customer(self, kind: str, number: int, variant: int, current: Customer) -> Item:
        person = self._person(number, current)
        row = customer_row(person, 0)
        record: Customer | None = None
        if kind == "invalid_email":
            row["email"] = bad_email(person.email or "", variant)
        elif kind == "missing_id":
            row["customer_id"] = ""
        elif kind == "bad_date":
            row["created_at"] = BAD_DATES[variant % len(BAD_DATES)]
        elif kind == "over_long_name":
            first = person.first_name or "Ayşe"
            row["first_name"] = (first * (LONG_NAME // len(first) + 1))[:LONG_NAME]
            cut = normalize.text(row["first_name"], "first_name", notes=[])
            record = replace(person, first_name=cut)
        elif kind == "duplicate_email":
            record = replace(
                person,
                email=current.email,
                first_name=current.first_name,
                last_name=current.last_name,
                phone=None,
            )
            row = customer_row(record, 0)
        else:  # turkish_upper: İBRAHİM / İBRAHİM.YILDIZ…@EXAMPLE.COM
            first = DOTTED_I_NAMES[self.rng.randrange(len(DOTTED_I_NAMES))]
            last = person.last_name or ""
            email = email_for(self.rng, first, last, 9_000_000 + number)
            record = replace(
                person, first_name=turkish_upper(first), last_name=turkish_upper(last), email=email
            )
            row = customer_row(record, 0)
            row["email"] = turkish_upper(email)
        return Item(Stream.CUSTOMERS, record, row, 0)

    def _order(self, kind: str, number: int, variant: int, template: Order) -> Item:
        row = order_dict(template, 0)
        row["id"] = str(DIRTY_IDS + number)
        if kind == "negative_quantity":
            row["line_items"][0]["quantity"] = -1 - variant % 2
        elif kind == "unknown_currency":
            row["currency"] = BAD_CURRENCIES[variant % len(BAD_CURRENCIES)]
        elif kind == "order_missing_id":
            row["id"] = None
        else:
            row["created_at"] = ("2026-13-01T10:00:00+03:00", "01/13/2026 10:00")[variant % 2]
        return Item(Stream.ORDERS, None, row, 0)
