"""the version of each source stream after its last complete read

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-16

A source that can tell cheaply whether a stream may have changed (``Versioned``: an
export file's size and modification time, say) gives a token; the pull keeps it here,
in the transaction that moves the stream's cursor, after a complete read that left
nothing for later. A run that finds the same token skips reading the stream. Backfills
forget the tokens of the sources they re-read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_versions",
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("connector", "stream"),
    )


def downgrade() -> None:
    op.drop_table("source_versions")
