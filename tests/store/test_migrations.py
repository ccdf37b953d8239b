"""The migrations and the table definitions must describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scimjit.store.migrate import head_revision, is_current
from scimjit.store.tables import metadata


def test_migrations_match_tables(db):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


def test_database_is_at_head(db):
    assert head_revision() is not None
    assert is_current(db)
