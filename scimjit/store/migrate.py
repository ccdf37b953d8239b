"""Schema migrations through Alembic: `scimjit db upgrade` is the only way the schema is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from scimjit.store.db import UNBOUNDED, Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def comparison_options(dialect: str) -> dict[str, Any]:
    """How Alembic compares a database of `dialect` with the tables (autogenerate, and the test that they
    agree): types too, and without the objects the tables give other dialects only (`tables.sqlite_only`)."""

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        dialects = getattr(obj, "info", {}).get("dialects")
        return dialects is None or dialect in dialects

    return {"compare_type": True, "include_object": include_object}


def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate to `revision`. A migration rewrites whole tables, so the statement time limit of requests
    (`[server] statement_timeout`) does not apply to it."""
    with db.engine.connect().execution_options(**{UNBOUNDED: True}) as conn, conn.begin():
        if not db.is_sqlite:
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        command.upgrade(alembic_config(conn), revision)


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def is_current(db: Database) -> bool:
    return current_revision(db) == head_revision()


def autogenerate(message: str, rev_id: str | None = None) -> None:
    """Write a new revision from the difference between the tables and a fully migrated scratch database."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/scratch.db")
        upgrade(db)
        with db.engine.begin() as conn:
            command.revision(alembic_config(conn), message=message, autogenerate=True, rev_id=rev_id)
        db.dispose()
