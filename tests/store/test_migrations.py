"""The migrations and the table definitions must describe the same schema."""

from __future__ import annotations

import re
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scimjit.store import migrate
from scimjit.store.migrate import current_revision, head_revision, is_current
from scimjit.store.tables import metadata


def test_migrations_match_tables(db):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


def _revisions() -> dict[str, str | None]:
    """revision -> down_revision, read from the version files themselves (not through alembic)."""
    chain: dict[str, str | None] = {}
    for path in (Path(migrate.__file__).parent / "migrations" / "versions").glob("*.py"):
        text = path.read_text()
        revision = re.search(r'^revision = "([^"]+)"', text, re.M)
        down = re.search(r'^down_revision = (?:"([^"]+)"|None)', text, re.M)
        assert revision and down, path
        chain[revision.group(1)] = down.group(1)
    return chain


def test_database_is_at_head(db):
    chain = _revisions()
    heads = set(chain) - {down for down in chain.values() if down}
    assert heads == {head_revision()}  # one head: the revision no other one builds on
    assert current_revision(db) == head_revision()
    assert is_current(db)
