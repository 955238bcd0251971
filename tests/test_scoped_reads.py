"""A run that plans a few people reads their rows through the person-key indexes, on
both engines, whatever the database guesses about the rest of the query; and it reads
exactly their rows."""

from __future__ import annotations

import sqlalchemy as sa

from crmsync.config import ProfileSettings
from crmsync.profile_scope import EVERYONE, ProfileContext
from state import schema
from state.planned import SCOPE, create_temporary
from state.profile_reads import carts_query, execute
from state.store import Store

CARTS = 80_000
SCOPED = [f"e:p{n}@example.com" for n in range(0, CARTS, 27)]  # 2,963 people


def _carts(store: Store) -> None:
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "INSERT INTO carts (source, external_id, currency, value_minor, item_count,"
                    " converted, created_at, staged_at, person_key)"
                    " SELECT 'shop', 'c' || n, 'TRY', n, 1, n % 5 = 0, n, 1,"
                    " 'e:p' || n || '@example.com' FROM generate_series(0, :last) AS n"
                ),
                {"last": CARTS - 1},
            )
            # statistics as after a first sync: the unindexed source term is then taken
            # for 0.5 % of the table, the 64,000 open carts for 320
            conn.execute(sa.text("ANALYZE carts"))
            return
        rows = [
            {
                "source": "shop",
                "external_id": f"c{n}",
                "currency": "TRY",
                "value_minor": n,
                "item_count": 1,
                "converted": n % 5 == 0,
                "created_at": n,
                "staged_at": 1,
                "person_key": f"e:p{n}@example.com",
            }
            for n in range(CARTS)
        ]
        conn.execute(sa.insert(schema.carts), rows)


def test_a_scope_reads_its_peoples_carts_through_the_person_index(state_url: str) -> None:
    store = Store(state_url)
    try:
        _carts(store)
        ctx = ProfileContext(("shop",), ("shop",), "TRY", 10**12, ProfileSettings())
        with store.engine.connect() as conn:
            create_temporary(conn, SCOPE)
            conn.execute(sa.insert(SCOPE), [{"person_key": k} for k in SCOPED])
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"ANALYZE {SCOPE.name}"))
            query = carts_query(conn, ctx, EVERYONE, SCOPE)
            found = [row[0] for row in execute(conn, query)]
            open_ = [k for k in SCOPED if int(k[3:].split("@")[0]) % 5]
            assert found == sorted(open_)  # the open carts of the scope, in key order
            compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
            if conn.dialect.name == "postgresql":
                driver = conn.connection.driver_connection  # execute() left conn streaming
                assert driver is not None
                plan = "\n".join(r[0] for r in driver.execute(f"EXPLAIN {compiled}"))
                assert "ix_carts_person" in plan and "Seq Scan on carts" not in plan, plan
            else:
                plan = "\n".join(
                    str(r[-1]) for r in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))
                )
                assert "ix_carts_person" in plan and "SCAN carts" not in plan, plan
    finally:
        store.close()
