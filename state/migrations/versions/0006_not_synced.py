"""the records each pipeline's last run did not sync, and why

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

A run counted the people a destination could not address ("invalid") and never saw the
orders and carts of nobody, so `status` could not say which source records were left
out. The new ``not_synced`` table keeps them, one row per record and reason, replaced
by a run of the pipeline that names a different set; its primary key orders them by
reason, which is how `status` counts and lists them. ``not_synced_sets`` keeps, per
pipeline, the run that named them last and a digest of the set.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_KEY = sa.String(length=320).with_variant(sa.String(length=320, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "not_synced",
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("record_key", sa.String(length=128), nullable=False),
        sa.Column("person_key", _KEY, nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("destinations", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline", "reason", "source", "stream", "record_key"),
    )
    op.create_table(
        "not_synced_sets",
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("named_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline"),
    )


def downgrade() -> None:
    op.drop_table("not_synced_sets")
    op.drop_table("not_synced")
