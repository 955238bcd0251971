"""when each order reached a status, and carts by their last change

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-06

E-commerce events (issue 14) are timed by the platform's instant. An order's fulfilled,
cancelled and refunded events had only its ``updated_at``; a source may now give
``fulfilled_at``, ``cancelled_at`` and ``refunded_at`` (the latest refund), staged here
(empty for the orders staged before, which keep their digest and are not re-staged).

Carts get an index on their source and last change (``updated_at``, else
``created_at``): each run finds the open carts that crossed the abandonment time or the
expiry time since the last derivation by a range of it, instead of reading every cart.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TIMES = ("fulfilled_at", "cancelled_at", "refunded_at")


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        for name in TIMES:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
    changed = sa.text("coalesce(updated_at, created_at)")
    op.create_index("ix_carts_changed", "carts", [changed])


def downgrade() -> None:
    op.drop_index("ix_carts_changed", table_name="carts")
    with op.batch_alter_table("orders") as batch:
        for name in reversed(TIMES):
            batch.drop_column(name)
