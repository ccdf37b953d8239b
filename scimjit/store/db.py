"""The database handle: engine setup per dialect, transactions, and where the thread hops are.

Dialect differences live here (and in `dialect.py` for SQL expressions), nowhere else.
SQLite answers in microseconds from the page cache, so its work runs inline on the event loop: a thread hop
would cost more than the query. PostgreSQL work goes to the thread pool, where network waits overlap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, ParamSpec, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from starlette.concurrency import run_in_threadpool

P = ParamSpec("P")
T = TypeVar("T")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def normalise_url(url: str) -> str:
    """Accept the plain `postgresql://` spelling and use psycopg 3 for it."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class Database:
    """One engine and the rules for using it."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {
            "json_serializer": _json_dumps,
            "json_deserializer": orjson.loads,
            "echo": echo,
        }
        if self.is_sqlite:
            create_private_file(sqlite_path(self.url))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if ":memory:" in self.url or self.url in ("sqlite://", "sqlite:///"):
                kwargs["poolclass"] = sa.pool.StaticPool
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _configure_psycopg_json()
        self.dialect = self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction. On SQLite it starts with BEGIN IMMEDIATE so concurrent writers queue on the
        busy timeout instead of failing on a read-to-write lock upgrade."""
        with self.engine.connect().execution_options(scimjit_write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only transaction (one consistent snapshot for count + page). PostgreSQL's default READ
        COMMITTED takes a new snapshot per statement, so reads ask for REPEATABLE READ; SQLite's BEGIN already
        reads one snapshot."""
        options: dict[str, Any] = {} if self.is_sqlite else {"isolation_level": "REPEATABLE READ"}
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            yield conn

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking database work from async code, inline on SQLite, in the thread pool otherwise."""
        if self.is_sqlite:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    def dispose(self) -> None:
        self.engine.dispose()


def sqlite_path(url: str) -> str | None:
    """The file a SQLite URL opens, or None for an in-memory database (or a `file:` URI, left to SQLite)."""
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def create_private_file(path: str | None) -> None:
    """Create the database file readable by its owner only (0600) before SQLite would create it 0644 under
    the usual umask: it holds token hashes, users and the audit trail. SQLite gives its `-wal` and `-shm`
    files the mode of the database file, so they are private too. An existing file is left as it is (its
    mode is the operator's choice)."""
    if path is None:
        return
    # It exists, or no such directory, a read-only place...: SQLite's own open reports those as usual.
    with suppress(OSError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (see Database.write).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=30000",
            "temp_store=MEMORY",
            "cache_size=-65536",
            "mmap_size=268435456",
        ):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()
        # SQLite's lower() folds ASCII only; use Python's so SQL and the indexed *_ci columns agree.
        dbapi_conn.create_function("lower", 1, _py_lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("scimjit_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _py_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


_psycopg_configured = False


def _configure_psycopg_json() -> None:
    global _psycopg_configured
    if _psycopg_configured:
        return
    from psycopg.types.json import set_json_dumps, set_json_loads

    set_json_loads(orjson.loads)
    set_json_dumps(_json_dumps)
    _psycopg_configured = True


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT construct, which has `on_conflict_do_nothing` / `on_conflict_do_update`."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def insert_ignoring_conflicts(conn: sa.Connection, table: sa.Table) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` in the connection's dialect."""
    return dialect_insert(conn, table).on_conflict_do_nothing()
