"""The record-mapping language: how every source turns a raw row into a canonical record.

Sources differ only in how they fetch raw rows (the files source reads CSV or JSON lines,
the REST source pages through an API, the SQL source runs a query); each row is a mapping
(possibly nested: objects, lists of line objects) and one compiled ``Builder`` per stream
turns it into a ``Customer``, ``Order`` or ``Cart`` (``crmsync.records``), or explains
why it cannot (a ``RecordError`` naming the field, which the source reports as a
quarantined ``RecordIssue``). Invalid optional values (a phone, a birthday, a country)
are cleared and reported as *corrected* instead of dropping the record.

The TOML syntax (a field is a path, or a table; the same in every source)::

    [sources.shop.streams.orders.fields]           # files: [sources.shop.orders.columns]
    external_id = "Sipariş No"                     # a path (column, key, dotted path)
    email = { path = ["buyer.email", "billing.email"] }   # first non-empty wins
    customer_external_id = { path = "buyer.id", null_if = ["0"] }
    placed_at = { path = "created", format = "epoch_ms" }  # or a strptime format
    updated_at = { path = "changed", timezone = "UTC" }    # naive times in this zone
    status = { const = "paid" }                    # a constant
    currency = { path = "para_birimi", default = "TRY" }   # used when the path is empty
    refunded_total = { path = "refunds", sum = "amount", abs = true }
    # no `total`: computed from the lines (see below)

    [sources.shop.streams.orders.lines]            # files: `lines` + `line_columns`
    path = "items"
    fields.quantity = "qty"
    fields.unit_price = { path = "line_total", plus = "line_discount", per = "qty" }
    fields.discount = "line_discount"

    [sources.shop.streams.customers.fields]
    sms_consent = { path = "izin", map = { ONAY = "subscribed", RET = "unsubscribed" } }
    email_consent = "meta_data[key=newsletter].value"   # picks from a list by a key

A field spec's value is computed in this order: the first non-empty ``path`` (or
``const``), else ``default``; ``null_if`` values become empty; ``map`` translates the raw
value; then arithmetic on amounts: ``sum`` (the value is a list: add up a path, or a
nested field spec, over its items), ``× times``, ``+ plus``, ``− minus``, ``÷ per``,
``abs``; finally the canonical field's own conversion (``crmsync.normalize``) with the
spec's ``format`` / ``timezone``. See ``FieldSpec`` for every key.

Totals from lines: when an order's ``total`` is not mapped it is computed from its lines,
``Σ(quantity × unit_price − discount) − order_discount + shipping + tax`` (the last three
are order fields used only for this, 0 when unmapped); refunds are *not* subtracted (the
order keeps ``refunded_total`` and profiles count ``total − refunded_total``). A cart's
``value`` not mapped is ``Σ(quantity × unit_price)`` over its items. When
``discount_total`` is not mapped it is ``Σ line discount + order_discount``. An order or
cart with no line to compute from is quarantined (its amount is required).

Public API (stable; the SQL source builds on it)::

    from connectors.records import (
        FieldSpec, RowsSpec, MappingContext, MappingKeys, Builder,
        compile_stream, mapping_issues, RowError, FIELDS, ROW_FIELDS,
    )

    builder = compile_stream(
        Stream.ORDERS,
        fields,                      # {canonical name: FieldSpec | "path" | table dict}
        RowsSpec(path="lines", fields={...}) | None,
        context=MappingContext(tz=ZoneInfo("Europe/Istanbul"), region="TR"),
        keys=MappingKeys.nested("sources.shop.streams.orders", rows="lines"),
        require=("updated_at",),     # optional: canonical fields this source needs mapped
    )                                # raises ConfigError listing every issue with its key
    for raw in rows:                 # dict-like rows, nested or flat
        yield from builder.outcome(raw, since, until)  # () | (record, *corrected) | (issue,)

    builder.updated_at(raw) -> datetime | None      # read first, to skip rows cheaply
    builder.external_id(raw) -> str | None          # the raw id, for issues
    builder.build(raw, notes, updated=..., rows=None) -> Record   # raises RecordError
    mapping_issues(stream, fields, rows, keys=..., require=...) -> list[ConfigIssue]

``outcome`` formats issues the REST/SQL way (reason prefixed with the field, a JSON
excerpt of the row); a source that wants its own wording (the files source names line
numbers) calls ``build`` and catches ``RecordError`` (``RowError`` for one of the rows,
with its index) itself.

Operators' reference: ``docs/records.md``. Modules: ``spec`` (the TOML models), ``paths``,
``fields`` (canonical fields and their conversions, with exact fast paths), ``phones``
(the fast path for a region's phone numbers), ``steps`` (one field spec compiled into
one step), ``compile`` (every check, then the layout), ``generate`` (a stream's steps
written as one function), ``builder`` and ``assemble`` (running it, computing totals).
"""

from __future__ import annotations

from connectors.records.builder import Builder
from connectors.records.compile import compile_stream, mapping_issues
from connectors.records.context import MappingContext, MappingKeys, RowError
from connectors.records.fields import FIELDS, ROW_FIELDS
from connectors.records.spec import FieldSpec, FieldValue, RowsSpec

__all__ = [
    "FIELDS",
    "ROW_FIELDS",
    "Builder",
    "FieldSpec",
    "FieldValue",
    "MappingContext",
    "MappingKeys",
    "RowError",
    "RowsSpec",
    "compile_stream",
    "mapping_issues",
]
