"""the idle scan's index on accounts; grants remember the schedule shift they were made from

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:45:00

`ix_accounts_application_status_last_login_at` makes the sweeper's idle step (entitlement/ledger.py `idle`)
a range scan of one application's active accounts. `grants.source` / `grants.source_ref` name the
scheduling system and its shift id (access/schedules.py), unique together, so a plan sent twice finds its
grants instead of making new ones. Existing grants keep NULL in both (not from a schedule).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_accounts_application_status_last_login_at",
            ["application", "status", "last_login_at"],
            unique=False,
        )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("source_ref", sa.String(length=256), nullable=True))
        batch_op.create_unique_constraint("uq_grants_source_source_ref", ["source", "source_ref"])


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_constraint("uq_grants_source_source_ref", type_="unique")
        batch_op.drop_column("source_ref")
        batch_op.drop_column("source")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_accounts_application_status_last_login_at")
