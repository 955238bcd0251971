"""a run on workers: the people it plans again, and the membership moves it holds

Revision ID: 0012
Revises: 0011
Create Date: 2027-01-20

Two more tables of the workers' scratch space (``state.work_queue``), emptied with the
rest when a run ends:

``planned_scope`` holds the people an incremental run on workers plans again: the
coordinator gathers them (``state.planned.fill_scope``) and each plan task reads its
slice of them. ``held_moves`` holds the membership moves a run's pushes hold until they
fill a call, whichever worker pushed them, under one job for the run; ``held_failures``
why a move of a person answered pending failed, for the run's collect to answer
(``state.held_moves``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_KEY = sa.String(length=320).with_variant(sa.String(length=320, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "planned_scope",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("person_key", _KEY, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "person_key"),
    )
    op.create_table(
        "held_moves",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("grp", sa.String(length=200), nullable=False),
        sa.Column("side", sa.String(length=1), nullable=False),
        sa.Column("member", sa.String(length=320), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("sending", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "destination", "grp", "side", "member"),
    )
    op.create_table(
        "held_failures",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "destination", "member"),
    )


def downgrade() -> None:
    op.drop_table("held_failures")
    op.drop_table("held_moves")
    op.drop_table("planned_scope")
