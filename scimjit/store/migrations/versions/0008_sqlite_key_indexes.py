"""SQLite: ix_users_pk, ix_groups_pk (the primary keys alone, so that skipping rows for startIndex reads keys,
not documents; PostgreSQL's primary key index already is one)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:20:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    if _sqlite():
        op.create_index("ix_users_pk", "users", ["pk"], unique=False)
        op.create_index("ix_groups_pk", "groups", ["pk"], unique=False)


def downgrade() -> None:
    if _sqlite():
        op.drop_index("ix_groups_pk", table_name="groups")
        op.drop_index("ix_users_pk", table_name="users")
