"""a content hash on staged customers, orders and carts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Staging kept a new version of a record only when its updated_at was newer, so a second
change within the same second (sources that keep whole seconds) waited for the record's
next change. With the digest of the staged content beside updated_at, a version as new
as the staged one replaces it when its content differs. Rows staged before this have no
hash: their next re-read stages them once more, which fills it in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TABLES = ("customers", "orders", "carts")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("content_hash", sa.String(length=32), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("content_hash")
