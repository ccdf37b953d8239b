"""The migrations and the table definitions must describe the same schema."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scimjit.store.migrate import (
    MIGRATIONS_DIR,
    alembic_config,
    comparison_options,
    current_revision,
    head_revision,
    is_current,
    upgrade,
)
from scimjit.store.tables import metadata
from tests.conftest import BACKENDS, drop_database, make_database


def test_migrations_match_tables(db):
    with db.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts=comparison_options(conn.dialect.name)), metadata
        )
    assert diff == []


VERSIONS = MIGRATIONS_DIR / "versions"


def newest_revision_file() -> str:
    """The `revision = "…"` of the newest file in the versions folder (files are numbered: 0001_…, 0002_…)."""
    newest = max(VERSIONS.glob("[0-9]*_*.py"))
    found = re.search(r'^revision = "([^"]+)"$', newest.read_text(), re.MULTILINE)
    assert found, newest
    return found.group(1)


def test_database_is_at_head(db):
    assert head_revision() == newest_revision_file()
    assert current_revision(db) == head_revision()
    assert is_current(db)


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_downgrade_upgrade_round_trips(backend, tmp_path):
    """Every migration's downgrade undoes its upgrade: base → head → base → head ends with the same tables."""
    fresh, url = make_database(backend, tmp_path)  # at head
    try:
        with fresh.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert current_revision(fresh) is None
        assert sa.inspect(fresh.engine).get_table_names() == ["alembic_version"]
        upgrade(fresh)
        assert is_current(fresh)
        assert set(sa.inspect(fresh.engine).get_table_names()) == {*metadata.tables, "alembic_version"}
        with fresh.engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts=comparison_options(conn.dialect.name)), metadata
            )
        assert diff == []
    finally:
        drop_database(backend, fresh, url)


@pytest.mark.parametrize("backend", BACKENDS)
def test_0003_recomputes_user_name_keys_and_keeps_what_it_cannot_map(backend, tmp_path, caplog):
    """Rows written with `str.lower` get their PRECIS key; a userName PRECIS refuses (U+212A), or one whose key
    another user holds, keeps its old value and is logged by id (nothing deleted, the upgrade does not fail)."""
    from scimjit.store.tables import users

    fresh, url = make_database(backend, tmp_path)
    names = {
        "u-fullwidth": "\uff2a\uff2f",  # fullwidth JO: str.lower kept it fullwidth, its key is "jo"
        "u-kelvin": "\u212aate",  # str.lower made it "kate"; PRECIS refuses it
        "u-bob": "bob",
        "u-bob-wide": "\uff42\uff4f\uff42",  # fullwidth bob: its key "bob" is taken
    }
    try:
        with fresh.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0002")
            for n, (user_id, name) in enumerate(names.items()):
                conn.execute(
                    users.insert().values(
                        pk=n + 1,
                        id=user_id,
                        user_name=name,
                        user_name_ci=name.lower(),
                        data={},
                        created=1,
                        last_modified=1,
                    )
                )
        with caplog.at_level("WARNING", logger="scimjit.migrate"):
            upgrade(fresh)
        assert is_current(fresh)
        with fresh.engine.connect() as conn:
            keys = dict(conn.execute(sa.select(users.c.id, users.c.user_name_ci)).all())
        assert keys == {
            "u-fullwidth": "jo",
            "u-kelvin": "kate",
            "u-bob": "bob",
            "u-bob-wide": "\uff42\uff4f\uff42",
        }
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "u-kelvin" in logged and "U+212A" in logged
        assert "u-bob-wide" in logged and "u-bob" in logged
        assert "u-fullwidth" not in logged
    finally:
        drop_database(backend, fresh, url)


def test_0009_every_user_id_compares_as_users_id_does_so_joins_use_indexes(db):
    """On PostgreSQL each `user_id` has `users.id`'s collation ("C"): with different collations a join had
    none PostgreSQL could use an index with, and the login's read scanned every account of its application."""
    if db.is_sqlite:
        pytest.skip("SQLite compares bytes in every column")
    from sqlalchemy.dialects import postgresql

    from scimjit.entitlement.apps import load_applications
    from scimjit.entitlement.identity import Lookups
    from tests.jit_helpers import add_user, wiki_config

    with db.engine.connect() as conn:
        found = dict(
            conn.exec_driver_sql(
                "SELECT table_name, collation_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND column_name = 'user_id'"
            ).all()
        )
    assert found == {"accounts": "C", "outbox": "C", "grants": "C", "access_requests": "C"}

    uid = add_user(db, "alice")
    with db.engine.begin() as conn:  # many accounts in the application, the statistics up to date
        conn.exec_driver_sql(
            "INSERT INTO accounts (application, user_id, status, roles, created_at, updated_at, version)"
            " SELECT 'wiki', 'u' || g, 'active', '[]', 0, 0, 1 FROM generate_series(1, 5000) g"
        )
        conn.exec_driver_sql("ANALYZE accounts")
    lookups = Lookups(load_applications(wiki_config("http://127.0.0.1:1", "http://127.0.0.1:2/hook"))["wiki"])
    statement, params = lookups.find_read("alice")
    compiled = statement.compiled(postgresql.dialect())
    with db.engine.connect() as conn:
        plan = "\n".join(
            conn.exec_driver_sql("EXPLAIN " + compiled.sql, compiled.parameters(params)).scalars()
        )
    assert "Seq Scan on accounts" not in plan, plan
    assert uid
