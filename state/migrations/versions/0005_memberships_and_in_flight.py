"""memberships instead of tags; what was sent but not acknowledged

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

The ledger's ``segments`` column held Mailchimp tags; every destination keeps group
memberships (a tag, a list), so it is renamed ``memberships``. The new ``in_flight``
table remembers a batch from just before it is sent until its acknowledgement, and the
asynchronous job that will give its results, so that a crash in between leaves "may be
applied" instead of nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_KEY = sa.String(length=320).with_variant(sa.String(length=320, collation="C"), "postgresql")


def upgrade() -> None:
    # Both engines rename a column in place (SQLite since 3.25).
    op.execute("ALTER TABLE ledger RENAME COLUMN segments TO memberships")
    op.create_table(
        "in_flight",
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("person_key", _KEY, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("possible", sa.Text(), nullable=False),
        sa.Column("job", sa.String(length=128), nullable=True),
        sa.Column("change", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("destination", "person_key"),
    )
    op.create_index("ix_in_flight_job", "in_flight", ["destination", "job"])


def downgrade() -> None:
    op.drop_index("ix_in_flight_job", table_name="in_flight")
    op.drop_table("in_flight")
    op.execute("ALTER TABLE ledger RENAME COLUMN memberships TO segments")
