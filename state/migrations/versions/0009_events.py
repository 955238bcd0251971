"""the event ledger: what each destination acknowledged, has in flight, or failed

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

E-commerce events (issue 14) are sent once per destination and event key. The
``event_ledger`` keeps acknowledgements, ``event_in_flight`` what was sent and not yet
answered (a crash leaves it behind, and the next run sends it again: vendors
de-duplicate by key), ``event_failures`` refusals and failures with their attempts, and
``event_cursors`` how far each pipeline derived its events.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_KEY = sa.String(length=320).with_variant(sa.String(length=320, collation="C"), "postgresql")


def _record_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("event_key", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=128), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "event_ledger",
        *_record_columns(),
        sa.Column("person_key", _KEY, nullable=True),
        sa.Column("payload_hash", sa.String(length=32), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=True),
        sa.Column("historical", sa.Boolean(), nullable=False),
        sa.Column("acked_at", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("destination", "event_key"),
    )
    op.create_index(
        "ix_event_ledger_record", "event_ledger", ["destination", "kind", "source", "record_id"]
    )
    op.create_table(
        "event_in_flight",
        *_record_columns(),
        sa.Column("sent_at", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("destination", "event_key"),
    )
    op.create_table(
        "event_failures",
        *_record_columns(),
        sa.Column("reason_class", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("payload_hash", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.BigInteger(), nullable=False),
        sa.Column("last_failed_at", sa.BigInteger(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("destination", "event_key"),
    )
    op.create_index("ix_event_failures_due", "event_failures", ["destination", "next_attempt_at"])
    op.create_table(
        "event_cursors",
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("staged_upto", sa.BigInteger(), nullable=False),
        sa.Column("as_of", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline"),
    )


def downgrade() -> None:
    op.drop_table("event_cursors")
    op.drop_index("ix_event_failures_due", table_name="event_failures")
    op.drop_table("event_failures")
    op.drop_table("event_in_flight")
    op.drop_index("ix_event_ledger_record", table_name="event_ledger")
    op.drop_table("event_ledger")
