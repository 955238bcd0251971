"""The key-ordered row streams a profile run reads from the state database, and the
merge-join that groups them.

Staging keeps every order's and cart's person key (``state.staging``), so each stream is
a plain scan of an index in person-key order: no join, no key computed per row, no sort.
Only phone linking depends on the pipeline (an e-mail-less customer whose phone matches a
customer *with* an e-mail among the pipeline's sources joins that person); it is computed
per query from the few e-mail-less customers, and the linked rows come as small extra
streams under their new key, while the keys they leave are skipped in the main streams.

Every query takes a ``KeyRange``, so that worker processes can each read one slice of the
key space on their own connection (see ``parallel``). Keys compare byte-wise on both
engines and code point-wise in Python, which is the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from typing import Any

from sqlalchemy import Select, Table, and_, any_, false, func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from crmsync.merge_join import grouped, keyed
from crmsync.profile_scope import EVERYONE, KeyRange, ProfileContext
from state import schema
from state.dialect import bytewise

# slots of the merged groups, in this order (extra streams, e.g. the ledger, come after)
CUSTOMERS, ORDERS, CARTS, CONSENT, LINKED_CUSTOMERS, LINKED_ORDERS, LINKED_CARTS, LINKED_AWAY = (
    range(8)
)
PROFILE_STREAMS = 8


def in_range(conn: Connection, expr: ColumnElement[Any], keys: KeyRange) -> ColumnElement[Any]:
    """``expr`` within ``keys`` (never None: rows without a key belong to nobody)."""
    expr = bytewise(conn, expr)
    clauses: list[ColumnElement[bool]] = [expr.is_not(None)]
    if keys.low is not None:
        clauses.append(expr >= keys.low)
    if keys.high is not None:
        clauses.append(expr < keys.high)
    return and_(*clauses)


class _Unindexed(ColumnElement[Any]):
    """A column the database must not look up through an index.

    ``source IN (...)`` matches every row of a one-source store, but without statistics
    (a store just staged; PostgreSQL with autovacuum off or not yet run) both planners
    take it for selective. SQLite then searches the (source, ...) indexes and needs a
    sort; PostgreSQL ANDs a bitmap of the whole primary key into every phone look-up of
    the links below (10 s per slice at 100k customers). Unindexed (SQLite's unary ``+``,
    PostgreSQL's ``|| ''``), the term is a filter: SQLite scans the person-key index in
    order, and both find links through the e-mail and phone indexes.
    """

    # the wrapped column is part of the statement's cache key: without it SQLAlchemy takes
    # the construct for uncacheable and compiles every statement using it on every run
    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_Unindexed)
def _plain(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(_Unindexed, "sqlite")
def _unary_plus(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


@compiles(_Unindexed, "postgresql")
def _concatenated(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return "(" + str(compiler.process(element.column, **kw)) + " || '')"


def of_sources(column: ColumnElement[Any], sources: Sequence[str]) -> ColumnElement[bool]:
    return _Unindexed(column).in_(sources)


def _customer_columns(c: Any) -> list[Any]:
    return [
        c.c.source,
        c.c.email,
        c.c.phone,
        c.c.first_name,
        c.c.last_name,
        c.c.city,
        c.c.region,
        c.c.country,
        c.c.postal_code,
        c.c.address1,
        c.c.language,
        c.c.birthday,
        c.c.created_at,
        c.c.updated_at,
        c.c.email_consent,
        c.c.email_consent_at,
        c.c.sms_consent,
        c.c.sms_consent_at,
        c.c.deleted,
    ]


def _order_columns(o: Any) -> list[Any]:
    activity = func.coalesce(o.c.updated_at, o.c.placed_at)
    return [o.c.placed_at, o.c.counted, o.c.net_minor, o.c.discounted, o.c.categories, activity]


def _cart_columns(k: Any) -> list[Any]:
    at = func.coalesce(k.c.updated_at, k.c.created_at)
    return [k.c.value_minor, k.c.item_count, k.c.checkout_url, k.c.currency, at]


def order_filter(o: Any, ctx: ProfileContext, *, timed: bool = True) -> ColumnElement[bool]:
    """The orders a profile counts; ``timed=False`` keeps those placed after as_of too
    (the profile streams: the builder notes when they start to count)."""
    clauses = [of_sources(o.c.source, ctx.sources), o.c.currency == ctx.currency]
    if timed:
        clauses.append(o.c.placed_at <= ctx.as_of_ms)
    return and_(*clauses)


def cart_filter(k: Any, ctx: ProfileContext, *, timed: bool = True) -> ColumnElement[bool]:
    """The carts a profile reads; ``timed=False`` keeps those changed after as_of too."""
    clauses = [of_sources(k.c.source, ctx.sources), k.c.converted == false()]
    if timed:
        clauses.append(func.coalesce(k.c.updated_at, k.c.created_at) <= ctx.as_of_ms)
    return and_(*clauses)


def within(
    conn: Connection, query: Select[Any], key: ColumnElement[Any], scope: Table | None
) -> Select[Any]:
    """``query`` restricted to the person keys in ``scope`` (a temporary table of keys,
    ``state.planned``), read through the key's index one scope key at a time, so a run
    that plans a thousand people reads a thousand people's rows, not the store.

    On PostgreSQL the keys are one array (``key = ANY(ARRAY(SELECT ...))``), which it
    can only take to the key's index. As ``key IN (SELECT ...)`` it chose a join by its
    estimate of the rest of the query, and the unindexed source term (``of_sources``)
    is estimated at 0.5 % of the table: at 300,000 customers it took the 60,000 open
    carts for 300 and compared each with each of 3,000 scope keys (21 s, a run with 1 %
    changed).
    """
    if scope is None:
        return query
    keys = select(scope.c.person_key)
    if conn.dialect.name == "postgresql":
        return query.where(key == any_(func.array(keys.scalar_subquery())))
    return query.where(key.in_(keys))


# The profile streams read orders, carts and consent events dated after as_of too: the
# builder leaves them out of the profile and notes when they start to count, which is a
# time at which the person must be planned again (``ProfileBuilder.build_planned``).


def customers_query(
    conn: Connection, ctx: ProfileContext, keys: KeyRange, scope: Table | None = None
) -> Select[Any]:
    c = schema.customers
    query = (
        select(c.c.person_key, *_customer_columns(c))
        .where(of_sources(c.c.source, ctx.sources), in_range(conn, c.c.person_key, keys))
        .order_by(bytewise(conn, c.c.person_key), c.c.source, c.c.external_id)
    )
    return within(conn, query, c.c.person_key, scope)


def orders_query(
    conn: Connection, ctx: ProfileContext, keys: KeyRange, scope: Table | None = None
) -> Select[Any]:
    o = schema.orders
    query = (
        select(o.c.person_key, *_order_columns(o))
        .where(order_filter(o, ctx, timed=False), in_range(conn, o.c.person_key, keys))
        .order_by(bytewise(conn, o.c.person_key))
    )
    return within(conn, query, o.c.person_key, scope)


def carts_query(
    conn: Connection, ctx: ProfileContext, keys: KeyRange, scope: Table | None = None
) -> Select[Any]:
    k = schema.carts
    query = (
        select(k.c.person_key, *_cart_columns(k))
        .where(cart_filter(k, ctx, timed=False), in_range(conn, k.c.person_key, keys))
        .order_by(bytewise(conn, k.c.person_key), k.c.source, k.c.external_id)
    )
    return within(conn, query, k.c.person_key, scope)


def consent_query(
    conn: Connection, ctx: ProfileContext, keys: KeyRange, scope: Table | None = None
) -> Select[Any]:
    e = schema.consent_events
    query = (
        select(e.c.person_key, e.c.channel, e.c.state, e.c.occurred_at)
        .where(e.c.source.in_(ctx.consent_scopes), in_range(conn, e.c.person_key, keys))
        .order_by(bytewise(conn, e.c.person_key), e.c.occurred_at)
    )
    return within(conn, query, e.c.person_key, scope)


def links(ctx: ProfileContext) -> Any:
    """(old_key, new_key): the p:<phone> keys that join the person with that phone's e-mail.

    Only e-mail-less customers have a p: key, so this reads few rows through the e-mail
    and phone indexes.
    """
    lonely, known = schema.customers.alias("lonely"), schema.customers.alias("known")
    return (
        select(
            lonely.c.person_key.label("old_key"),
            (literal("e:") + func.min(known.c.email)).label("new_key"),
        )
        .where(
            lonely.c.email.is_(None),
            lonely.c.phone.is_not(None),
            of_sources(lonely.c.source, ctx.sources),
            known.c.phone == lonely.c.phone,
            known.c.email.is_not(None),
            of_sources(known.c.source, ctx.sources),
        )
        .group_by(lonely.c.person_key)
        .cte("links")
    )


def linked_away_query(
    conn: Connection, ctx: ProfileContext, keys: KeyRange, scope: Table | None = None
) -> Select[Any]:
    link = links(ctx)
    query = (
        select(link.c.old_key)
        .where(in_range(conn, link.c.old_key, keys))
        .order_by(bytewise(conn, link.c.old_key))
    )
    return within(conn, query, link.c.old_key, scope)


def linked_customers_query(
    conn: Connection, ctx: ProfileContext, keys: KeyRange, scope: Table | None = None
) -> Select[Any]:
    c, link = schema.customers, links(ctx)
    query = (
        select(link.c.new_key, *_customer_columns(c))
        .select_from(link.join(c, c.c.person_key == link.c.old_key))
        .where(of_sources(c.c.source, ctx.sources), in_range(conn, link.c.new_key, keys))
        .order_by(bytewise(conn, link.c.new_key), c.c.source, c.c.external_id)
    )
    return within(conn, query, link.c.new_key, scope)


def linked_orders_query(
    conn: Connection, ctx: ProfileContext, keys: KeyRange, scope: Table | None = None
) -> Select[Any]:
    o, link = schema.orders, links(ctx)
    query = (
        select(link.c.new_key, *_order_columns(o))
        .select_from(link.join(o, o.c.person_key == link.c.old_key))
        .where(order_filter(o, ctx, timed=False), in_range(conn, link.c.new_key, keys))
        .order_by(bytewise(conn, link.c.new_key))
    )
    return within(conn, query, link.c.new_key, scope)


def linked_carts_query(
    conn: Connection, ctx: ProfileContext, keys: KeyRange, scope: Table | None = None
) -> Select[Any]:
    k, link = schema.carts, links(ctx)
    query = (
        select(link.c.new_key, *_cart_columns(k))
        .select_from(link.join(k, k.c.person_key == link.c.old_key))
        .where(cart_filter(k, ctx, timed=False), in_range(conn, link.c.new_key, keys))
        .order_by(bytewise(conn, link.c.new_key), k.c.source, k.c.external_id)
    )
    return within(conn, query, link.c.new_key, scope)


def execute(conn: Connection, statement: Select[Any]) -> Iterable[Any]:
    """The rows of ``statement``, streamed, as tuples by position.

    On SQLite straight from the driver's cursor: a million people are some six million
    rows, and SQLAlchemy's per-row processing would cost more than the query (dates then
    come as ISO text and booleans as 0/1). Elsewhere through SQLAlchemy, whose server-side
    cursors keep memory flat.
    """
    if conn.dialect.name == "sqlite":
        compiled = statement.compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        params = compiled.construct_params()
        driver = conn.connection.driver_connection
        assert driver is not None, "the connection is closed"
        rows: Iterable[Any] = driver.cursor().execute(
            str(compiled), [params[n] for n in compiled.positiontup or ()]
        )
        return rows
    # the statement's options, not the connection's: those would stay set on ``conn``
    # (SQLAlchemy sets them in place) and make its later writes server-side cursors too
    return conn.execute(statement.execution_options(stream_results=True, yield_per=2000))


# the profile's grouped streams, in slot order (``linked_away_query`` follows them, keyed)
GROUP_QUERIES = (
    customers_query,
    orders_query,
    carts_query,
    consent_query,
    linked_customers_query,
    linked_orders_query,
    linked_carts_query,
)


def profile_streams(
    conn: Connection, ctx: ProfileContext, keys: KeyRange = EVERYONE, scope: Table | None = None
) -> list[Iterator[tuple[str, Any]]]:
    """The profile's group streams in slot order, opened on ``conn`` (streamed); only the
    people in ``scope`` when given (a temporary table on ``conn``)."""
    streams = [grouped(execute(conn, q(conn, ctx, keys, scope))) for q in GROUP_QUERIES]
    streams.append(keyed(execute(conn, linked_away_query(conn, ctx, keys, scope))))
    return streams


def key_boundaries(conn: Connection, sources: Sequence[str], parts: int) -> list[str]:
    """Up to ``parts - 1`` person keys that cut the pipeline's customers into equal slices."""
    c = schema.customers
    return cut_points(conn, c.c.person_key, of_sources(c.c.source, sources), parts)


def cut_points(
    conn: Connection, key: ColumnElement[Any], where: ColumnElement[bool], parts: int
) -> list[str]:
    """Up to ``parts - 1`` values of ``key``, among the rows ``where`` picks, that cut them
    into about equal slices in the byte-wise order of the key ranges (``in_range``): each
    value once and none at the very start, so that no slice is empty but for repeated
    keys. One numbered pass over the rows, not a scan per boundary."""
    present = and_(where, key.is_not(None))
    total = int(conn.execute(select(func.count()).where(present)).scalar() or 0)
    wanted = sorted({total * part // parts for part in range(1, parts)} - {0})
    if not wanted:
        return []
    place = func.row_number().over(order_by=bytewise(conn, key)) - 1
    numbered = select(key.label("key"), place.label("place")).where(present).subquery()
    query = (
        select(numbered.c.key)
        .where(numbered.c.place.in_(wanted))
        .order_by(bytewise(conn, numbered.c.key))
    )
    found: list[str] = []
    for (value,) in conn.execute(query):
        if not found or value != found[-1]:
            found.append(str(value))
    return found


def ranges(boundaries: Sequence[str]) -> list[KeyRange]:
    """The slices between consecutive boundaries, covering every key exactly once."""
    edges: list[str | None] = [None, *boundaries, None]
    return [KeyRange(low, high) for low, high in pairwise(edges)]


def customer_count(conn: Connection, sources: Sequence[str]) -> int:
    c = schema.customers
    return int(conn.execute(select(func.count()).where(c.c.source.in_(sources))).scalar() or 0)


def foreign_currency_orders(
    conn: Connection,
    ctx: ProfileContext,
    keys: KeyRange = EVERYONE,
    *,
    staged_since: int | None = None,
) -> int:
    """Orders of people in ``keys`` in another currency (left out of spend metrics);
    with ``staged_since`` (ms), only those staged since then, through the staging-time
    index (an incremental run whose last planning counted none: only orders staged
    since can be in another currency, and there are few of them)."""
    o = schema.orders
    query = select(func.count()).where(
        of_sources(o.c.source, ctx.sources),
        o.c.currency != ctx.currency,
        in_range(conn, o.c.person_key, keys),
    )
    if staged_since is not None:
        query = query.where(o.c.staged_at >= staged_since)
    return int(conn.execute(query).scalar() or 0)
