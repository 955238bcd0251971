"""incremental planning: the people each pipeline planned, and the keys records left

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-15

Every run rebuilt every person. A run now recomputes only the people whose records
changed or whose next time boundary has passed, so it keeps, per pipeline:

- ``planned``: each person it planned, with the earliest instant at which their profile,
  segments or mapped fields can change with time alone (``next_at``; None: never) and
  their segments and lasting skips per destination (e.g. "invalid"), so that segment
  sizes and decisions add up without recomputing anyone;
- ``plannings``: when the last planning began, its ``as_of``, a fingerprint of
  everything that shapes plans, and how far it had read ``touched``.

``touched`` receives the old key of every customer, order and cart whose person key
changes (a re-keyed customer, an order re-staged with another e-mail), and the old
``p:<phone>`` of a customer whose phone changes, from triggers, so that whatever code
writes the staging tables, the person a record leaves is recomputed too. Indexes on
``staged_at`` and on consent events' ``recorded_at`` let a run find what arrived since
its last planning without a scan.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_KEY = sa.String(length=320).with_variant(sa.String(length=320, collation="C"), "postgresql")
_STAGED = ("customers", "orders", "carts")


def upgrade() -> None:
    op.create_table(
        "planned",
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("person_key", _KEY, nullable=False),
        sa.Column("next_at", sa.BigInteger(), nullable=True),
        sa.Column("segments", sa.Text(), nullable=True),
        sa.Column("skips", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pipeline", "person_key"),
    )
    op.create_index("ix_planned_next", "planned", ["pipeline", "next_at"])
    op.create_table(
        "plannings",
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("as_of", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("touched_upto", sa.BigInteger(), nullable=False),
        sa.Column("totals", sa.Text(), nullable=False),
        sa.Column("profiles", sa.BigInteger(), nullable=False),
        sa.Column("foreign_orders", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline"),
    )
    op.create_table(
        "touched",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("person_key", _KEY, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        # never reuse an id once the rows below a planning's mark are deleted
        sqlite_autoincrement=True,
    )
    for table in _STAGED:
        op.create_index(f"ix_{table}_staged", table, ["staged_at"])
    op.create_index("ix_consent_recorded", "consent_events", ["recorded_at"])
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in _STAGED:
        # a customer also leaves the people linked through its old phone (p:<phone>)
        phone = table == "customers"
        changed = "old.person_key IS DISTINCT FROM new.person_key"
        if phone:
            changed += " OR old.phone IS DISTINCT FROM new.phone"
        keys = "SELECT old.person_key WHERE old.person_key IS NOT NULL"
        if phone:
            keys += " UNION ALL SELECT 'p:' || old.phone WHERE old.phone IS NOT NULL"
        columns = "person_key, phone" if phone else "person_key"
        if postgresql:
            op.execute(
                f"CREATE FUNCTION crmsync_{table}_touched() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN INSERT INTO touched (person_key) {keys.replace('old.', 'OLD.')}; "
                "RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER tr_{table}_touched AFTER UPDATE OF {columns} ON {table} "
                f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION crmsync_{table}_touched()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER tr_{table}_touched AFTER UPDATE OF {columns} ON {table} "
                f"FOR EACH ROW WHEN {changed.replace('IS DISTINCT FROM', 'IS NOT')} "
                f"BEGIN INSERT INTO touched (person_key) {keys}; END"
            )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in _STAGED:
        op.execute(f"DROP TRIGGER tr_{table}_touched" + (f" ON {table}" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION crmsync_{table}_touched()")
    op.drop_index("ix_consent_recorded", table_name="consent_events")
    for table in _STAGED:
        op.drop_index(f"ix_{table}_staged", table_name=table)
    op.drop_table("touched")
    op.drop_table("plannings")
    op.drop_table("planned")
