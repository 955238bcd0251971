"""``opted_out``: which opt-outs read back from a destination crmsync already knows.

A consent read-back asks it once per thousand addresses read, and the read-back after a
first sync re-reads every unsubscribe that sync pushed, so what it answers and how it
finds it both matter: the latest state in scope wins, and every look-up seeks by the
address's person key instead of walking a source's whole range of customers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from crmsync.contract import ConsentUpdate
from crmsync.records import Channel, Consent, ConsentState, Stream
from state.ledger import add_consent_events, opted_out
from state.store import Store
from state.timeutil import to_ms
from tests.builders import customer, days_ago

OUT, IN = ConsentState.UNSUBSCRIBED, ConsentState.SUBSCRIBED


def read_back(email: str, state: ConsentState, days: float) -> ConsentUpdate:
    return ConsentUpdate(email, Channel.EMAIL, state, days_ago(days), "read back")


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    store = Store(state_url)
    store.stage(
        "shop",
        Stream.CUSTOMERS,
        [
            customer("1", "out@example.com", email_consent=Consent(OUT, days_ago(5))),
            customer("2", "in@example.com", email_consent=Consent(IN, days_ago(5))),
            customer("3", "back-in@example.com", email_consent=Consent(OUT, days_ago(9))),
            customer("4", "tie@example.com", email_consent=Consent(IN, days_ago(4))),
            customer("5", "none@example.com", email_consent=Consent(ConsentState.NONE)),
            customer("6", "sms@example.com", sms_consent=Consent(OUT, days_ago(5))),
        ],
    )
    # the same address opted out in a source outside the pipeline's scope
    store.stage(
        "other_shop",
        Stream.CUSTOMERS,
        [customer("7", "in@example.com", email_consent=Consent(OUT, days_ago(1)))],
    )
    with store.transaction() as conn:
        events = [
            read_back("back-in@example.com", IN, 2),  # opted in again after the opt-out
            read_back("tie@example.com", OUT, 4),  # an opt-out at the same time wins
            read_back("event-only@example.com", OUT, 3),  # known from a read-back alone
        ]
        add_consent_events(conn, "mc", events, to_ms(days_ago(0)) or 0)
        add_consent_events(conn, "elsewhere", [read_back("none@example.com", OUT, 1)], 0)
    yield store
    store.close()


def test_the_latest_state_in_scope_decides_each_channel(store: Store) -> None:
    asked = [
        "out@example.com",
        "in@example.com",
        "back-in@example.com",
        "tie@example.com",
        "none@example.com",
        "sms@example.com",
        "event-only@example.com",
        "unknown@example.com",
    ]
    with store.transaction() as conn:
        email = opted_out(conn, asked, ["shop", "mc"], "email")
        sms = opted_out(conn, asked, ["shop", "mc"], "sms")
        assert opted_out(conn, [], ["shop", "mc"], "email") == set()
    assert email == {"out@example.com", "tie@example.com", "event-only@example.com"}
    assert sms == {"sms@example.com"}


def test_each_look_up_seeks_by_the_address_on_sqlite(tmp_path: Any) -> None:
    """Asked about a thousand addresses, SQLite's planner (without statistics) took
    ``source IN (...)`` on the primary key over the address's own index: a walk over
    every customer of the source, per call; and the events had no index by address.
    Customers are sought by their person key ``e:<address>`` in the covering profile
    index: through the e-mail index each customer found cost a second seek, its row."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    people = [customer(str(i), f"p{i}@example.com") for i in range(200)]
    store.stage("shop", Stream.CUSTOMERS, people)
    statements: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        statements.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", note)
    asked = [f"p{i}@example.com" for i in range(1000)]  # a read-back's chunk
    with store.transaction() as conn:
        found = opted_out(conn, asked, ["shop", "mc"])
    event.remove(store.engine, "before_cursor_execute", note)
    assert found == set()
    looked_up = [(sql, params) for sql, params in statements if sql.startswith("SELECT")]
    assert len(looked_up) == 2, statements
    with store.engine.connect() as conn:
        plans = [
            [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
            for sql, params in looked_up
        ]
    store.close()
    customers, events = plans
    assert customers == [
        "SEARCH customers USING COVERING INDEX ix_customers_profile (person_key=?)"
    ], customers
    assert len(events) == 1 and events[0].startswith("SEARCH consent_events USING INDEX"), events
    assert "(person_key=?" in events[0], events


@pytest.mark.postgres
def test_on_postgresql_a_look_up_is_one_statement_for_any_number_of_addresses(
    postgres_url: str,
) -> None:
    """On PostgreSQL the addresses go as one array parameter (``dialect.one_of``): the
    statement's text is the same for ten addresses or a thousand, so neither SQLAlchemy
    nor psycopg renders and parses a placeholder per address (the server plans it as it
    planned the list: it reads ``IN (...)`` as ``= ANY`` of an array). An address holding
    the separator of the joined form goes as a plain array, and is found all the same."""
    store = Store(postgres_url)
    odd = "odd\x1fone@example.com"
    people = [customer(str(i), f"p{i}@example.com") for i in range(200)]
    people.append(customer("odd", odd, email_consent=Consent(OUT, days_ago(1))))
    store.stage("shop", Stream.CUSTOMERS, people)
    statements: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        statements.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", note)
    with store.transaction() as conn:
        few = opted_out(conn, [f"p{i}@example.com" for i in range(10)], ["shop", "mc"])
        many = opted_out(conn, [f"p{i}@example.com" for i in range(1000)], ["shop", "mc"])
        with_odd = opted_out(conn, ["p1@example.com", odd], ["shop", "mc"])
    event.remove(store.engine, "before_cursor_execute", note)
    assert (few, many, with_odd) == (set(), set(), {odd})
    looked_up = [(sql, params) for sql, params in statements if sql.startswith("SELECT")]
    assert len(looked_up) == 6, statements
    assert looked_up[0][0] == looked_up[2][0] and looked_up[1][0] == looked_up[3][0]
    assert looked_up[4][0] != looked_up[0][0]  # the plain array's form
    store.close()


@pytest.mark.postgres
def test_on_postgresql_a_thousand_addresses_are_sought_in_the_index_not_scanned(
    postgres_url: str,
) -> None:
    """Shown a thousand keys, PostgreSQL's planner costed a thousand index probes above a
    scan of the whole customers table, and scanned it for every chunk of a read-back
    (100,000 customers: 20 ms a chunk where the probes take 2, most of a run with nothing
    changed). The keys now reach it through a sub-select it does not count, and the plan
    seeks the person index however many keys a chunk holds."""
    store = Store(postgres_url)
    people = [
        customer(str(i), f"p{i}@example.com", email_consent=Consent(OUT, days_ago(2)))
        for i in range(5000)
    ]
    store.stage("shop", Stream.CUSTOMERS, people)
    statements: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        statements.append((sql, params))

    asked = [f"p{i}@example.com" for i in range(0, 5000, 5)]  # a read-back's chunk
    with store.transaction() as conn:
        conn.exec_driver_sql("ANALYZE customers")
        event.listen(store.engine, "before_cursor_execute", note)
        found = opted_out(conn, asked, ["shop", "mc"])
        event.remove(store.engine, "before_cursor_execute", note)
        assert found == set(asked)
        sql, params = next((s, p) for s, p in statements if "FROM customers" in s)
        driver = conn.connection.driver_connection
        assert driver is not None
        plan = "\n".join(r[0] for r in driver.execute(f"EXPLAIN {sql}", params))
    store.close()
    assert "ix_customers_person" in plan and "Seq Scan on customers" not in plan, plan
