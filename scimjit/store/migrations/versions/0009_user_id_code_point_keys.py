"""PostgreSQL: `accounts`, `outbox`, `grants` and `access_requests` compare `user_id` by code point
(`COLLATE "C"`), as `users.id` does

Why: `users.id` is a `Key` (COLLATE "C" on PostgreSQL) and these columns were plain VARCHAR in the database's
default collation. A join of two columns with different collations has no collation PostgreSQL can use an
index with, so the login's read (a user and its account in the application) scanned every account of the
application instead of the unique (application, user_id) index: 1,960 rows for each login in `make bench` L1
(`EXPLAIN ANALYZE`, issue 13), growing with the application's accounts. Ids are ASCII (UUIDs and what IdPs
send), so equality and order are the same in either collation; only the indexes are rebuilt (PostgreSQL
does not rewrite a table whose column changes collation only). SQLite compares bytes already: no change.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 18:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = (("accounts", False), ("outbox", True), ("grants", False), ("access_requests", False))


def upgrade() -> None:
    _collate("C", None)


def downgrade() -> None:
    _collate(None, "C")


def _collate(new: str | None, old: str | None) -> None:
    """Give every `user_id` of `_COLUMNS` the collation `new` (None: the database's default)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, nullable in _COLUMNS:
        op.alter_column(
            table,
            "user_id",
            type_=sa.String(64, collation=new),
            existing_type=sa.String(64, collation=old),
            existing_nullable=nullable,
        )
