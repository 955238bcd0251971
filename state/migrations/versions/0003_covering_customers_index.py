"""a covering index for the profile stream's customer reads (SQLite)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

The profile stream reads every customer in person-key order. Through the narrow
``ix_customers_person`` index each customer costs a look-up in the table, which at a
million customers is the largest part of reading them; on SQLite an index holding every
column the stream reads serves it alone. PostgreSQL is left as it is (its index entries
are limited to about 2.7 kB, which long names and addresses could pass).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = [
    "person_key",
    "source",
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "city",
    "region",
    "country",
    "postal_code",
    "address1",
    "language",
    "birthday",
    "created_at",
    "updated_at",
    "email_consent",
    "email_consent_at",
    "sms_consent",
    "sms_consent_at",
    "deleted",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_customers_profile", "customers", _COLUMNS, unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_customers_profile", table_name="customers")
