"""Assembling a record from its mapped values: the rules that need more than one field.

An order whose ``total`` is not mapped gets ``Σ(quantity × unit_price − discount) −
order_discount + shipping + tax`` over its lines; a cart whose ``value`` is not mapped
gets ``Σ(quantity × unit_price)`` over its items; an order's ``discount_total`` not
mapped is ``Σ line discount + order_discount``. Either with no rows to compute from is
quarantined: the amount is required. Refunds are never subtracted: the order keeps
``refunded_total`` apart, and profiles count ``total − refunded_total``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.records.builder import Assemble
from connectors.records.fields import ZERO
from crmsync.errors import RecordError
from crmsync.records import Cart, CartItem, Consent, Customer, Order, OrderLine, Record


def customer(v: list[Any], rows: tuple[Any, ...]) -> Customer:
    email_state, sms_state = v[15], v[17]
    return Customer(
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13],
        None if email_state is None else Consent(email_state, v[16]),
        None if sms_state is None else Consent(sms_state, v[18]),
        v[14],
    )  # fmt: skip


def _line_total(line: OrderLine) -> Any:
    return line.quantity * line.unit_price - line.discount


def _item_total(item: CartItem) -> Any:
    return item.quantity * item.unit_price


def _from_rows(rows: tuple[Any, ...], amount: Callable[[Any], Any], label: str, what: str) -> Any:
    if not rows:
        raise RecordError(f"not mapped, and there are no {what} to compute it from", field=label)
    return sum(map(amount, rows), ZERO)


def _checked(total: Any, label: str) -> Any:
    if total < 0:
        raise RecordError(f"computed from the rows as {total}, which is negative", field=label)
    return total


def order(compute_total: bool, compute_discount: bool, what: str) -> Assemble:
    def assemble(v: list[Any], lines: tuple[Any, ...]) -> Record:
        total, discount = v[6], v[7]
        if compute_total:
            total = _from_rows(lines, _line_total, "total", what) - v[10] + v[11] + v[12]
            total = _checked(total, "total")
        if compute_discount:
            discount = sum((line.discount for line in lines), ZERO) + v[10]
        return Order(
            v[0], v[1], v[2], v[3], v[4], v[5], total, discount, v[8], v[9], lines,
            v[13], v[14], v[15],
        )  # fmt: skip

    return assemble


def cart(compute_value: bool, what: str) -> Assemble:
    def assemble(v: list[Any], items: tuple[Any, ...]) -> Record:
        value = v[4]
        if compute_value:
            value = _checked(_from_rows(items, _item_total, "value", what), "value")
        return Cart(v[0], v[1], v[2], v[3], value, v[5], v[6], v[7], v[8], items)

    return assemble
