"""What the `scimjit` command says when it fails because of the user's input or environment, not a bug.

`scimjit.cli.main` runs every command through `describe`: a known mistake (configuration file, database URL,
a database that was never migrated, a SCIM filter, an Alembic revision, ...) becomes one line
`error: <what is wrong and how to fix it>` on stderr and exit code `EXIT_USER_ERROR` (2, the code argparse
uses for a bad command line; commands that check their own input, e.g. `token revoke` of an unknown name, use
it too). Anything `describe` does not recognise is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import tomllib
import traceback

import sqlalchemy as sa
from alembic.util import CommandError

from scimjit.config import ConfigError
from scimjit.scim.errors import ScimError

EXIT_USER_ERROR = 2
UPGRADE_HINT = "run `scimjit db upgrade`"

# SQLite's messages and PostgreSQL's SQLSTATEs for "the table/column is not there": the schema is missing
# or older than this scimjit.
_MISSING_SQLITE = ("no such table", "no such column", "has no column named")
_MISSING_SQLSTATES = {"42P01", "42703"}  # undefined_table, undefined_column


class UserError(Exception):
    """A mistake the user can fix; the message is the whole answer (one line)."""


def database_url() -> str:
    """The configured database URL with its password hidden, for messages (never fails)."""
    try:
        from scimjit.config import Settings

        url = Settings.load().database_url
    except Exception:  # the configuration itself may be what is wrong
        url = os.environ.get("SCIMJIT_DATABASE_URL", "")
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparseable: show nothing of it, it may hold a password
        return "(database_url / SCIMJIT_DATABASE_URL)"


def schema_missing(exc: sa.exc.DBAPIError) -> bool:
    """True when the statement failed because a table or column of scimjit's schema does not exist."""
    if getattr(exc.orig, "sqlstate", None) in _MISSING_SQLSTATES:
        return True
    text = str(exc.orig).lower()
    return isinstance(exc, sa.exc.OperationalError) and any(m in text for m in _MISSING_SQLITE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _raised_by_sqlalchemy(exc: BaseException) -> bool:
    return any("sqlalchemy" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))


def describe(exc: BaseException) -> str | None:
    """The one-line message for a user's mistake, or None when `exc` is a bug (let it show its traceback)."""
    if isinstance(exc, UserError | ConfigError):
        return str(exc)
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"configuration file {os.environ.get('SCIMJIT_CONFIG', '')}: not valid TOML: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read {exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, ScimError):
        return exc.detail + (f" ({exc.scim_type})" if exc.scim_type else "")
    if isinstance(exc, CommandError):  # Alembic: unknown revision, ...
        return f"database migration: {exc}"
    if isinstance(exc, sa.exc.ArgumentError):  # includes NoSuchModuleError (unknown dialect)
        return f"invalid database URL {database_url()}: {_first_line(exc)}; use sqlite:///PATH or postgresql://..."
    if isinstance(exc, ModuleNotFoundError) and _raised_by_sqlalchemy(exc):
        return (
            f"no driver for the database URL {database_url()} ({exc}); use sqlite:///PATH or postgresql://..."
        )
    if isinstance(exc, sa.exc.DBAPIError):
        if schema_missing(exc):
            return f"the database {database_url()} has no current scimjit schema: {UPGRADE_HINT}"
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            return f"cannot use the database {database_url()}: {_first_line(exc.orig or exc)}"
    return None


def require_current_schema(url: str) -> None:
    """For the long-running commands (serve, worker, sweep): refuse to start on an old or empty schema, instead
    of starting and then failing every request or loop."""
    from scimjit.store.db import Database
    from scimjit.store.migrate import current_revision, head_revision

    db = Database(url)
    try:
        current, head = current_revision(db), head_revision()
    finally:
        db.dispose()
    if current != head:
        where = "has no schema" if current is None else f"is at revision {current}, this scimjit needs {head}"
        raise UserError(f"the database schema is not current (the database {where}): {UPGRADE_HINT} first")
