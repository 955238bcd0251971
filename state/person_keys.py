"""Person keys kept at write time: the key of each staged order and cart.

An order or cart takes its customer's key when that customer is staged, else
``e:<its e-mail>``, else ``s:<source>:<customer id>`` (no key: it belongs to nobody). A
customer staged with a new or changed key re-keys its orders and carts in the same
transaction, so profile runs read orders and carts in key order from an index, without
joining customers or computing a key per row. (Phone links depend on a pipeline's
sources, so ``state.profile_reads`` applies them when it reads.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.engine import Connection

from crmsync.records import Cart, Order
from state import schema
from state.bulk import bulk


def fallback_key(source: str, customer_external_id: str | None, email: str | None) -> str | None:
    """The key of an order or cart whose customer is not staged (None: it has no person)."""
    if email is not None:
        return f"e:{email}"
    if customer_external_id is not None:
        return f"s:{source}:{customer_external_id}"
    return None


def customer_keys(conn: Connection, source: str, ids: Iterable[str | None]) -> dict[str, str]:
    """The person keys of the staged customers among ``ids``."""
    wanted = sorted({i for i in ids if i is not None})
    columns = ("external_id", "person_key")
    return dict(bulk(conn).select_in(schema.customers, columns, source, "external_id", wanted))


def rekey(conn: Connection, source: str, keys: dict[str, str]) -> None:
    """Gives the orders and carts of these customers (id -> new key) their customer's key."""
    if not keys:
        return
    pairs = list(keys.items())
    writer = bulk(conn)
    for table in (schema.orders, schema.carts):
        # a first sync stages customers before any order or cart: nothing to re-key
        if writer.has_rows(table, {"source": source}):
            writer.assign(table, source, "customer_external_id", "person_key", pairs)


def keys_for(conn: Connection, source: str, records: Sequence[Order | Cart]) -> list[str | None]:
    staged = customer_keys(conn, source, (r.customer_external_id for r in records))
    return [
        staged.get(r.customer_external_id or "")
        or fallback_key(source, r.customer_external_id, r.email)
        for r in records
    ]
