"""person keys and per-order metric values kept at write time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Orders and carts get their person's key (the customer's key, else ``e:<email>``, else
``s:<source>:<customer id>``), and orders the values the profile metrics read (counted,
net amount, discounted), filled here from the rows already staged, so a profile run
reads key-ordered index scans instead of grouping by a key computed per row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEY = sa.String(length=320).with_variant(sa.String(length=320, collation="C"), "postgresql")

_FALLBACK_KEY = """coalesce(
    (select c.person_key from customers c
      where c.source = {table}.source and c.external_id = {table}.customer_external_id),
    'e:' || {table}.email,
    's:' || {table}.source || ':' || {table}.customer_external_id)"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person_key", KEY, nullable=True))
        batch_op.add_column(
            sa.Column("counted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("net_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("discounted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("carts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person_key", KEY, nullable=True))

    op.execute(
        "update orders set"
        f" person_key = {_FALLBACK_KEY.format(table='orders')},"
        " counted = (status not in ('cancelled', 'refunded')),"
        " net_minor = total_minor - refunded_minor,"
        " discounted = (discount_minor > 0)"
    )
    op.execute(f"update carts set person_key = {_FALLBACK_KEY.format(table='carts')}")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customers_person", ["person_key", "source", "external_id"], unique=False
        )
    with op.batch_alter_table("carts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_carts_person", ["person_key", "source", "external_id"], unique=False
        )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        if postgres:
            batch_op.create_index("ix_orders_person_pg", ["person_key"], unique=False)
        else:
            batch_op.create_index(
                "ix_orders_person",
                [
                    "person_key",
                    "source",
                    "currency",
                    "placed_at",
                    "counted",
                    "net_minor",
                    "discounted",
                    "updated_at",
                    "categories",
                ],
                unique=False,
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_person_pg" if postgres else "ix_orders_person")
        batch_op.drop_column("discounted")
        batch_op.drop_column("net_minor")
        batch_op.drop_column("counted")
        batch_op.drop_column("person_key")
    with op.batch_alter_table("carts", schema=None) as batch_op:
        batch_op.drop_index("ix_carts_person")
        batch_op.drop_column("person_key")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_person")
