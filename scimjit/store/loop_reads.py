"""PostgreSQL's hottest reads on the event loop: psycopg's `AsyncConnection`, with no hop to a thread.

Why: on PostgreSQL every `Database.run` hands its work to a thread and waits for it. Under load that hand-off
is most of a read. 32 concurrent one-row reads in one process (uvloop, psycopg 3.3, PostgreSQL on 127.0.0.1)
took 457 to 469 µs of the process's CPU per read through a thread pool, and 196 to 231 µs as `await`s on the loop
(issue 13, docs/benchmarks.md). Threads contend for the GIL on every wake-up; a coroutine waits on its
socket for free.

`LoopReads.fetch` runs ONE `Prepared` read statement, with no transaction, as `Database.fetch` does: the
statement reads one snapshot on its own, and autocommit means no BEGIN and no ROLLBACK. It keeps the rules
of the thread path:
- **bounded**: at most `size` connections per event loop (a request over that waits its turn on the loop);
  each has the server's `statement_timeout`, and a statement stopped by it is the usual `400 tooMany`;
- **announced**: the engine's `before_cursor_execute` listeners see the statement, so statement counts and
  traces stay whole;
- **recoverable**: a connection that rested `PING_AFTER_IDLE` is pinged before use, a connection the server
  closed is dropped with every idle one (the server went away), and the read runs once more on a fresh one;
  a second failure is SQLAlchemy's error, so the 503 handling applies;
- **never reused unsure**: a read that was cancelled (the client left) or failed outside SQL closes its
  connection, which may still have an answer on the wire.

Connections belong to one event loop, so there is a pool per loop (a test's `asyncio.run` makes its own).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import sqlalchemy as sa

from scimjit.store.prepared import Prepared


class _Pool:
    """The idle connections of one event loop, and the semaphore that bounds how many are out."""

    __slots__ = ("idle", "slots")

    def __init__(self, size: int) -> None:
        self.idle: list[tuple[Any, float]] = []  # (connection, since when it rests), most recent last
        self.slots = asyncio.Semaphore(size)


class LoopReads:
    """One-statement reads of a PostgreSQL engine on the running event loop (see the module docstring)."""

    def __init__(self, engine: sa.Engine, size: int, statement_timeout: float, setup: str | None) -> None:
        """`setup`: the statement that gives a new connection the server's time limit (`store.db`), if any."""
        self._engine = engine
        self._size = size
        self._statement_timeout = statement_timeout
        self._setup = setup
        self._connect_args, self._connect_kwargs = engine.dialect.create_connect_args(engine.url)
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()

    async def fetch(self, prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
        """The rows of `prepared`; a connection the server closed is replaced and the read runs once more."""
        dialect = self._engine.dialect
        compiled = prepared.compiled(dialect)
        parameters = compiled.parameters(params)
        pool = self._pool()
        async with pool.slots:
            try:
                return compiled.rows(await self._run(pool, compiled.sql, parameters))
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            return compiled.rows(await self._run(pool, compiled.sql, parameters))

    def close(self) -> None:
        """Close every idle connection of every loop (`Database.dispose`); synchronous, as dispose is: the
        socket is closed by libpq, with no round trip."""
        for pool in list(self._pools.values()):
            _close_all(pool)
        self._pools.clear()

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _Pool(self._size)
        return pool

    async def _run(self, pool: _Pool, sql: str, parameters: Any) -> list[tuple[Any, ...]]:
        """`sql` on a connection of `pool` (the caller holds a slot), which goes back to it afterwards unless
        anything but a clean SQL error happened on it."""
        from scimjit.scim.errors import ScimError

        conn = await self._checkout(pool)
        reusable = False
        try:
            rows = await self._execute(pool, conn, sql, parameters)
            reusable = True
            return rows
        except ScimError:  # stopped by the server's time limit: the connection itself is sound
            reusable = not conn.broken
            raise
        except sa.exc.DBAPIError as exc:
            reusable = not exc.connection_invalidated
            raise
        finally:
            _give_back(pool, conn, reusable)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[LoopReader]:
        """Several reads in ONE snapshot on one connection of the loop: BEGIN ISOLATION LEVEL REPEATABLE READ
        READ ONLY ... ROLLBACK, as `Database.snapshot` does it in a thread (the login's two reads). Not run
        again on a dead connection: its error is the caller's (503), as on the thread path. A snapshot left by
        an error or a cancellation closes its connection."""
        from psycopg import Error

        pool = self._pool()
        async with pool.slots:
            conn = await self._checkout(pool)
            reusable = False
            try:
                await self._execute(pool, conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", None)
                yield LoopReader(self, pool, conn)
                try:
                    await conn.rollback()
                except Error as exc:
                    raise self._wrapped(pool, conn, "ROLLBACK", None, exc) from exc
                reusable = True
            finally:
                _give_back(pool, conn, reusable)

    async def _execute(self, pool: _Pool, conn: Any, sql: str, parameters: Any) -> list[tuple[Any, ...]]:
        """`sql` on `conn`, announced to the engine's listeners, its rows read; the server's time limit is
        `400 tooMany`, any other driver error SQLAlchemy's (saying whether the server closed the
        connection, and then every idle one of `pool` is closed too: the server went away)."""
        from psycopg import Error
        from psycopg.errors import QueryCanceled
        from psycopg.pq import ExecStatus

        from scimjit.store.db import statement_too_costly

        try:
            cursor = conn.cursor()
            try:
                for listener in self._engine.dispatch.before_cursor_execute:
                    listener(None, cursor, sql, parameters, None, False)
                await cursor.execute(sql, parameters)
                # a read has rows (`cursor.description` would build its columns only to say so)
                return await cursor.fetchall() if cursor.pgresult.status == ExecStatus.TUPLES_OK else []
            finally:
                await cursor.close()
        except QueryCanceled:
            raise statement_too_costly(self._statement_timeout) from None
        except Error as exc:
            raise self._wrapped(pool, conn, sql, parameters, exc) from exc

    def _wrapped(
        self, pool: _Pool, conn: Any, sql: str, parameters: Any, exc: Exception
    ) -> sa.exc.StatementError:
        """psycopg's `exc` as SQLAlchemy's error, saying whether the server closed the connection; if it did,
        every idle connection of `pool` is closed too (the server went away)."""
        from psycopg import Error

        gone = bool(conn.closed or conn.broken)
        if gone:
            _close_all(pool)
        return sa.exc.DBAPIError.instance(
            sql, parameters, exc, Error, connection_invalidated=gone, dialect=self._engine.dialect
        )

    async def _checkout(self, pool: _Pool) -> Any:
        """An idle connection (pinged first if it rested `PING_AFTER_IDLE`, replaced if the ping fails), or a
        new one."""
        from psycopg import AsyncConnection, Error

        from scimjit.store import db as db_module

        while pool.idle:
            conn, since = pool.idle.pop()
            if conn.closed or conn.broken:
                continue
            if time.monotonic() - since < db_module.PING_AFTER_IDLE:
                return conn
            try:
                await conn.execute("SELECT 1")
                return conn
            except Error:
                _close(conn)
        try:
            conn = await AsyncConnection.connect(*self._connect_args, autocommit=True, **self._connect_kwargs)
            if self._setup is not None:
                await conn.execute(self._setup)
        except Error as exc:
            raise sa.exc.OperationalError("connect", {}, exc) from exc
        return conn


class LoopReader:
    """The reads of one `LoopReads.snapshot`."""

    __slots__ = ("_conn", "_owner", "_pool")

    def __init__(self, owner: LoopReads, pool: _Pool, conn: Any) -> None:
        self._owner, self._pool, self._conn = owner, pool, conn

    async def fetch(self, prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
        compiled = prepared.compiled(self._owner._engine.dialect)
        raw = await self._owner._execute(self._pool, self._conn, compiled.sql, compiled.parameters(params))
        return compiled.rows(raw)


def _give_back(pool: _Pool, conn: Any, reusable: bool) -> None:
    """Return `conn` to `pool`'s idle connections, or close it when it may still be mid-answer or broken."""
    if reusable:
        pool.idle.append((conn, time.monotonic()))
    else:
        _close(conn)


def _close(conn: Any) -> None:
    """Close a connection without a round trip (libpq closes the socket)."""
    with suppress(Exception):
        conn.pgconn.finish()


def _close_all(pool: _Pool) -> None:
    idle, pool.idle = pool.idle, []
    for conn, _since in idle:
        _close(conn)
