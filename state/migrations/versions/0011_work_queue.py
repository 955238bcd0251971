"""the work of runs on Celery workers: their tasks, planned changes and planned people

Revision ID: 0011
Revises: 0010
Create Date: 2027-01-08

A run on Celery workers (issue 15) hands its units of work to tasks that any worker on
any machine may take, and meets their results here (``state.work_queue``):
``work_tasks`` holds each task of a run with its state, result and deliveries;
``planned_changes`` a slice's changes to push, per destination in the slice's order, so
that a batch is a range of positions and a redelivered push reads the very same batch;
``planned_people`` each person's plan until the run keeps them. A run empties its rows
when it ends.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_KEY = sa.String(length=320).with_variant(sa.String(length=320, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "work_tasks",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "task"),
    )
    op.create_table(
        "planned_changes",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("person_key", _KEY, nullable=False),
        sa.Column("change", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "destination", "part", "seq"),
    )
    op.create_table(
        "planned_people",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("person_key", _KEY, nullable=False),
        sa.Column("next_at", sa.BigInteger(), nullable=True),
        sa.Column("segments", sa.Text(), nullable=True),
        sa.Column("skips", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "part", "person_key"),
    )


def downgrade() -> None:
    op.drop_table("planned_people")
    op.drop_table("planned_changes")
    op.drop_table("work_tasks")
