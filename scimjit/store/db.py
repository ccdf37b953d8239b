"""The database handle: engine setup per dialect, transactions, the cost bound of a statement, and where the
thread hops are.

Dialect differences live here (and in `dialect.py` for SQL expressions), nowhere else.

Thread hops. PostgreSQL work goes to the thread pool, where network waits overlap, except the hottest reads
(`fetch_async`: one statement, awaited on the event loop by `store.loop_reads`). SQLite answers most
queries in microseconds from the page cache, where a thread hop would cost more than the query, so its work
starts inline on the event loop, but with a short budget (`inline_budget`, 20 ms): a read that outgrows it is
aborted and run again in the thread pool, where the sqlite3 module releases the GIL inside `sqlite3_step` and
the loop goes on answering `/healthz`, `GET /Users/{id}` and the login hook. Only reads are retried (they
are idempotent): once the work opens a write transaction the budget is off for the rest of it, so a write is
never run twice. An aborted read has written nothing, so running it again is safe.

Transactions. `write()` is a write transaction (BEGIN IMMEDIATE on SQLite), `read()` a read-only one with one
snapshot for several statements (count + page), and `single()` no transaction at all, for work that is one
read statement: a single statement reads one snapshot on both databases, so it needs no BEGIN/COMMIT round
trip (the hottest reads, `GET /Users/{id}` and the `userName eq` lookup, are built that way).

Cost bound. Every statement has `statement_timeout` seconds (0: none). SQLite's progress handler checks the
deadline every `_PROGRESS_STEPS` virtual machine instructions; PostgreSQL gets its own `statement_timeout`
on each connection. Over it, the transaction rolls back whole and `read` / `write` raise the SCIM error
`400 tooMany` ("more than the server is willing to calculate", RFC 7644 §3.12), which the HTTP layers, the
JIT API and the CLI already render without a traceback.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event

from scimjit.scim.errors import ScimError
from scimjit.store.loop_reads import LoopReader, LoopReads
from scimjit.store.prepared import Prepared
from scimjit.store.wal import BACKSTOP_PAGES, Checkpointer

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_STATEMENT_TIMEOUT = 5.0  # seconds; `[server] statement_timeout`
DEFAULT_INLINE_BUDGET = 0.020  # seconds a SQLite read may hold the event loop before it moves to a thread
# How often (in SQLite VM instructions) the progress handler looks at the clock: roughly every 0.1-0.5 ms of
# work. Each call takes the GIL, and a query in a worker thread that asks for the GIL while the loop holds it
# waits up to the switch interval (5 ms) for it, so a small step slows that query and interrupts the loop
# for nothing: deadlines of milliseconds need no finer check.
_PROGRESS_STEPS = 50_000
UNBOUNDED = "scimjit_unbounded"  # execution option: no statement time limit (schema migrations)
_AUTOCOMMIT = (
    "scimjit_autocommit"  # execution option (SQLite): no BEGIN, for a single read statement (`single`)
)
# The options a kept connection goes back to after each use (`Database._after_kept_use`): every SQLite
# option that `write` and `single` set, at its default.
_KEPT_OPTIONS = {"scimjit_write": False, _AUTOCOMMIT: False}
_STATE = "scimjit_deadline"  # key of a SQLite connection's `_Deadline` in its pool record's info


def statement_too_costly(timeout: float) -> ScimError:
    """The refusal of a statement that ran past `statement_timeout`."""
    return ScimError(
        400,
        f"the query ran longer than the server's statement time limit ({timeout:g}s) and was stopped; "
        "narrow the filter (fewer or more selective terms, eq or sw instead of co)",
        "tooMany",
    )


@dataclass
class _Budget:
    """The inline budget of one `Database.run` on SQLite."""

    seconds: float
    armed: bool = True  # off once the work starts a write: a write is never retried
    spent: bool = False  # the progress handler stopped a statement on this budget


class _BudgetSpent(Exception):
    """A read outgrew the inline budget; `Database.run` runs the work again in the thread pool."""


_budget: ContextVar[_Budget | None] = ContextVar("scimjit_inline_budget", default=None)


class _Deadline:
    """A SQLite connection's progress handler: the deadline of the statement it is running."""

    __slots__ = ("at", "budget")

    def __init__(self) -> None:
        self.at = float("inf")
        self.budget: _Budget | None = None  # set when the budget, not the timeout, is the nearer limit

    def arm(self, timeout: float, budget: _Budget | None) -> None:
        now = time.monotonic()
        self.at = now + timeout if timeout > 0 else float("inf")
        self.budget = None
        if budget is not None and budget.armed and now + budget.seconds < self.at:
            self.at, self.budget = now + budget.seconds, budget

    def __call__(self) -> int:
        if time.monotonic() < self.at:
            return 0
        if self.budget is not None:
            self.budget.spent = True
        return 1  # non-zero: SQLite aborts the statement with "interrupted"


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

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        inline_budget: float = DEFAULT_INLINE_BUDGET,
    ) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.statement_timeout = statement_timeout
        self.inline_budget = inline_budget
        kwargs: dict[str, Any] = {
            "json_serializer": _json_dumps,
            "json_deserializer": orjson.loads,
            "echo": echo,
        }
        self._offload = False  # whether SQLite reads over the budget move to the thread pool
        # The main thread's own SQLite connection, where uvicorn runs the event loop (in every worker
        # process): all the work `run` does inline there, reads and writes, uses it (`_main_connection`).
        # Other threads (a test client's portal, the thread pool) check one out of the pool for each piece of
        # work: a connection kept per thread would stay checked out after its thread ended.
        self._kept: sa.Connection | None = None
        self._kept_busy = False
        self._wal: Checkpointer | None = None  # a SQLite file's checkpoints, off the committing thread
        if self.is_sqlite:
            path = sqlite_path(self.url)
            create_private_file(path)
            if path is not None:
                self._wal = Checkpointer(path)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if ":memory:" in self.url or self.url in ("sqlite://", "sqlite:///"):
                kwargs["poolclass"] = sa.pool.StaticPool  # one shared connection: it cannot go to a thread
            else:
                self._offload = inline_budget > 0
        else:
            # Every connection stays pooled: an overflow connection was closed at check-in whenever the pool
            # was full, so a load of more than `pool_size` requests at once opened and closed a PostgreSQL
            # backend (a process) per request or so. The same at most 2 x pool_size connections as before.
            kwargs.update(pool_size=2 * pool_size, max_overflow=0)
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine, statement_timeout)
        else:
            _configure_psycopg_json()
            _configure_postgresql(self.engine, statement_timeout)
            _ping_after_idle(self.engine)
            self._loop_reads = LoopReads(
                self.engine, pool_size, statement_timeout, _postgresql_limit(statement_timeout)
            )
        self.dialect = self.engine.dialect.name
        self._threads = ThreadPoolExecutor(2 * pool_size, thread_name_prefix="scimjit-db")

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction. On SQLite it starts with BEGIN IMMEDIATE so concurrent writers queue on the
        busy timeout instead of failing on a read-to-write lock upgrade."""
        budget = _budget.get()
        if budget is not None:
            budget.armed = False
        with self._bounded(), self._connection(scimjit_write=True) as conn, conn.begin():
            yield conn
        if self._wal is not None:
            self._wal.wrote()

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only transaction (one consistent snapshot for count + page). PostgreSQL's default READ
        COMMITTED takes a new snapshot per statement, so reads ask for REPEATABLE READ; SQLite's BEGIN already
        reads one snapshot."""
        options: dict[str, Any] = {} if self.is_sqlite else {"isolation_level": "REPEATABLE READ"}
        with self._bounded(), self._connection(**options) as conn, conn.begin():
            yield conn

    @contextmanager
    def single(self) -> Iterator[sa.Connection]:
        """A connection for work that is ONE read statement: it needs no transaction around it, since a single
        statement reads one snapshot on both databases. So no BEGIN/COMMIT round trip: SQLite runs it in
        autocommit (its own implicit read transaction), PostgreSQL in AUTOCOMMIT (no REPEATABLE READ set-up,
        no BEGIN, no ROLLBACK at check-in). The hottest reads use it (`GET /Users/{id}`: the user and its live
        groups in one statement). Only ever for reads: nothing written here would be in a transaction."""
        options: dict[str, Any] = {_AUTOCOMMIT: True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"}
        with self._bounded(), self._connection(**options) as conn:
            yield conn

    def _may_keep(self) -> bool:
        """Whether this work may use the kept connection: SQLite inline on the main thread's event loop (`run`
        within its budget, as uvicorn runs it), with no enclosing work using the connection already."""
        return (
            _budget.get() is not None
            and self._offload
            and not self._kept_busy
            and threading.current_thread() is threading.main_thread()
        )

    def _main_connection(self) -> sa.Connection:
        """The kept connection (see `_may_keep`), checked out of the pool the first time and kept.

        Why one for reads and writes alike: a SQLite connection empties its whole page cache when it starts
        a transaction and finds that another connection has written since, and reads the pages it needs
        again, from the WAL by a system call each. With writes on pooled connections and reads on a kept
        one, every read after a write started cold: the first login's user lookup took 178-195 µs in the
        server against 15 µs on a connection whose cache was whole (`make bench` L2, issue 13); on a copy of
        that database a read after another connection's commit took 108 µs, after its own 26 µs. The event
        loop does this work one piece at a time, so one connection serves it all and keeps its cache; it
        also saves the pool's check-out and check-in of every write."""
        conn = self._kept
        if conn is None:
            conn = self._kept = self.engine.connect()
        return conn

    @contextmanager
    def _connection(self, **options: Any) -> Iterator[sa.Connection]:
        """A SQLAlchemy connection with `options` for `write`, `read` and `single`: the kept one when
        `_may_keep` (its options back to the engine's afterwards), else a pooled one, returned afterwards."""
        if not self._may_keep():
            with self.engine.connect().execution_options(**options) as conn:
                yield conn
            return
        conn = self._main_connection()
        self._kept_busy = True
        try:
            yield conn.execution_options(**options)  # in place: a Connection's options are its own
        finally:
            self._kept_busy = False
            self._after_kept_use(conn)

    def _after_kept_use(self, conn: sa.Connection) -> None:
        """Leave the kept connection as the next piece of work expects it: the engine's options, outside any
        transaction. One that cannot be brought there is not kept (the pool gets its record back)."""
        try:
            conn.execution_options(**_KEPT_OPTIONS)
            if conn.invalidated:
                raise sa.exc.InvalidRequestError("the kept connection was invalidated")
            if conn.in_transaction():  # an error between BEGIN and COMMIT that nothing rolled back
                conn.rollback()
            dbapi = conn.connection.dbapi_connection
            if dbapi is not None and dbapi.in_transaction:  # a transaction the driver still has open
                dbapi.rollback()
        except Exception:
            self._forget_kept(invalidate=True)

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """Turn a statement stopped by its time limit into `400 tooMany` (or, for the inline budget, into
        `_BudgetSpent` for `run`), after the transaction inside has rolled back."""
        try:
            yield
        except sa.exc.OperationalError as exc:
            if not self._stopped(exc):
                raise
            budget = _budget.get()
            if budget is not None and budget.spent:
                raise _BudgetSpent from None
            raise statement_too_costly(self.statement_timeout) from None

    def _stopped(self, exc: sa.exc.OperationalError) -> bool:
        if self.is_sqlite:
            return "interrupted" in str(exc.orig)
        from psycopg.errors import QueryCanceled

        return isinstance(exc.orig, QueryCanceled)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking database work from async code: on SQLite inline within the budget, and a read that
        outgrows it again in the thread pool (see the module docstring); on PostgreSQL in the thread pool."""
        if not self.is_sqlite:
            return await self._in_thread(functools.partial(fn, *args, **kwargs))
        if not self._offload:
            return fn(*args, **kwargs)
        token = _budget.set(_Budget(self.inline_budget))
        try:
            return fn(*args, **kwargs)
        except _BudgetSpent:
            pass
        finally:
            _budget.reset(token)
        return await self._in_thread(functools.partial(_unbudgeted, functools.partial(fn, *args, **kwargs)))

    async def _in_thread(self, work: Callable[[], T]) -> T:
        """`work` in one of the database's threads, in a copy of the caller's context (the request id of the
        log, the budget). Its own pool, of as many threads as the database has connections: so no thread
        waits for a connection, and the hop costs a third of Starlette's `run_in_threadpool` under load (37
        against 108 µs of CPU per call, 32 calls at once; anyio's limiter and cancel scopes are the rest)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, contextvars.copy_context().run, work)

    def fetch(self, prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
        """The rows of ONE read statement, run on the DBAPI cursor without SQLAlchemy's Connection: the
        hottest reads (`GET /Users/{id}`, the `userName eq` lookup), where that machinery cost 20 times the
        query (`store.prepared`). Like `single`, no transaction: the statement reads one snapshot on its own.
        The statement limits hold as everywhere (the progress handler is armed, PostgreSQL's
        statement_timeout is the connection's), errors are SQLAlchemy's (so the 503 handling applies), a
        dead PostgreSQL connection is dropped from the pool, and the engine's `before_cursor_execute`
        listeners still see the statement (with no Connection), so statement counts and traces stay whole.

        SQLite inline on the main thread's event loop (`run` within its budget, as uvicorn runs it) uses the
        kept connection (`_main_connection`, which the loop's writes share): autocommit, every cursor read to
        its end, so it holds no read snapshot between statements and sees every commit. Anywhere else a
        pooled connection is checked out and returned.

        A connection the server closed (a restart, while it rested less than `PING_AFTER_IDLE`) is dropped
        and the statement, a read, runs once more on a fresh one; a second failure is the caller's."""
        try:
            with self._raw() as raw:
                return raw.fetch(prepared, params)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        with self._raw() as raw:
            return raw.fetch(prepared, params)

    async def fetch_async(self, prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
        """`fetch` from async code, for the hottest reads (`GET /Users/{id}`, the `userName eq` lookup): on
        PostgreSQL on the event loop itself (`store.loop_reads`: no thread hop, half the CPU of a read under
        load), on SQLite as `run(fetch)` runs it (inline within the budget)."""
        if self.is_sqlite:
            return await self.run(self.fetch, prepared, params)
        return await self._loop_reads.fetch(prepared, params)

    def snapshot_async(self) -> AbstractAsyncContextManager[LoopReader]:
        """PostgreSQL: `snapshot` on the event loop (`store.loop_reads`), its reads awaited with no thread
        hop. SQLite has none: its reads run inline already (`run`)."""
        if self.is_sqlite:
            raise RuntimeError("snapshot_async is PostgreSQL's; SQLite reads run inline (Database.run)")
        return self._loop_reads.snapshot()

    @contextmanager
    def snapshot(self) -> Iterator[RawReader]:
        """Several `Prepared` reads in ONE snapshot, on the DBAPI connection as `fetch` runs them: BEGIN
        (PostgreSQL: REPEATABLE READ, READ ONLY) ... ROLLBACK, sent by the driver, not through SQLAlchemy's
        transaction machinery (the login's two reads; `read()` cost more than they do). Reads only."""
        with self._raw() as raw:
            raw.execute("BEGIN" if self.is_sqlite else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", ())
            yield raw

    @contextmanager
    def _raw(self) -> Iterator[RawReader]:
        """A DBAPI connection for `fetch` / `snapshot`: on SQLite inline on the main thread's event loop, the
        kept connection (unless an enclosing read is using it: then a pooled one); else a pooled connection,
        returned afterwards."""
        kept = self._may_keep()
        fairy: Any = self._main_connection().connection if kept else self.engine.raw_connection()
        dbapi: Any = fairy.dbapi_connection
        reader = RawReader(self, fairy, kept)
        if kept:
            self._kept_busy = True
        try:
            if not self.is_sqlite:
                dbapi.autocommit = True  # client-side in psycopg 3: no round trip, no ROLLBACK at check-in
            yield reader
        finally:
            if kept:
                self._kept_busy = False
            try:
                if reader.dropped:
                    raise sa.exc.InvalidRequestError("the connection failed")
                dbapi.rollback()  # ends a `snapshot` (both drivers do nothing outside a transaction)
                if not self.is_sqlite:
                    dbapi.autocommit = False  # as SQLAlchemy's connections expect it back
            except Exception:
                # A connection that cannot say it is out of its transaction is not used again: a kept one
                # would otherwise read an old snapshot for ever.
                self._drop(reader)
            if not kept:
                fairy.close()

    def _drop(self, reader: RawReader, reason: BaseException | None = None) -> None:
        """Use the reader's connection no more (it failed): invalidated, and no longer kept if it was."""
        already, reader.dropped = reader.dropped, True
        if reader.kept:
            reader.kept = False
            self._forget_kept(invalidate=True, reason=reason)
        elif not already:
            with suppress(Exception):
                reader.fairy.invalidate(reason)

    def _forget_kept(self, *, invalidate: bool, reason: BaseException | None = None) -> None:
        """Stop keeping the kept connection; invalidated first when it failed, and returned to the pool."""
        conn, self._kept = self._kept, None
        if conn is None:
            return
        with suppress(Exception):
            if invalidate and not conn.invalidated:
                conn.invalidate(reason)
            conn.close()

    def dispose(self) -> None:
        if self._wal is not None:
            self._wal.close()
        self._forget_kept(invalidate=False)
        if not self.is_sqlite:
            self._loop_reads.close()
        self.engine.dispose()
        self._threads.shutdown(wait=False)


def execute(
    conn: sa.Connection, prepared: Prepared, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> list[Any]:
    """Run `prepared` in the caller's transaction (`read()` / `write()`) on its DBAPI cursor: for the
    fixed-shape statements every write runs (the audit record, a user's insert and value rows, a group's
    member add), where SQLAlchemy's execution path cost several times SQLite's own work. A list of
    parameter sets is an executemany. Returns the rows (RETURNING, SELECT), else []. The connection's
    `before_cursor_execute` listeners run as for any statement (so the statement time limit is armed and
    statement counts stay whole); a DBAPI error is raised as SQLAlchemy's (IntegrityError stays one, and the
    limit's "interrupted" reaches `Database.write`'s handling as usual)."""
    compiled = prepared.compiled(conn.dialect)
    many = not isinstance(params, Mapping)
    parameters: Any = (
        [compiled.parameters(p) for p in params] if many else compiled.parameters(params)  # type: ignore[arg-type]
    )
    return compiled.rows(_driver_execute(conn, compiled.sql, parameters, many))


def rows(source: sa.Connection | RawReader, prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
    """The rows of a `Prepared` read, in whichever its caller holds: a `Database.snapshot` reader or a
    transaction (`read()` / `write()`); for reads that serve a hot path and a transaction alike."""
    if isinstance(source, RawReader):
        return source.fetch(prepared, params)
    return execute(source, prepared, params)


def _driver_execute(conn: sa.Connection, sql: str, parameters: Any, many: bool = False) -> list[Any]:
    """`sql` on the DBAPI cursor of `conn`, announced to its listeners; errors wrapped as SQLAlchemy's (and
    a connection the database closed invalidated, as SQLAlchemy's own execution would)."""
    try:
        return _on_cursor(conn.connection, conn.dialect, conn, conn.dispatch, sql, parameters, many)
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            with suppress(Exception):
                conn.invalidate(exc.orig)
        raise


def _on_cursor(
    fairy: Any,
    dialect: sa.Dialect,
    conn: sa.Connection | None,
    dispatch: Any,
    sql: str,
    parameters: Any,
    many: bool,
) -> list[Any]:
    """THE driver-level execution of `execute`, `_driver_execute` and `RawReader`: the statement announced
    to the `before_cursor_execute` listeners (with `conn`, None outside a SQLAlchemy connection), run, its
    rows read to the end, the cursor closed; a DBAPI error raised as SQLAlchemy's wrapped one, saying
    whether the database closed the connection. It runs for every statement of the hot paths, so it is
    kept to the driver's own calls: the cursor from the DBAPI connection itself, the rows as the driver's
    list, the close without a context manager."""
    cursor = None
    try:
        # inside: a connection closed under us fails here, as a disconnect
        cursor = fairy.dbapi_connection.cursor()
        for listener in dispatch.before_cursor_execute:
            listener(conn, cursor, sql, parameters, None, many)
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        return cursor.fetchall() if cursor.description is not None else []
    except dialect.loaded_dbapi.Error as exc:
        invalidated = dialect.is_disconnect(exc, fairy.dbapi_connection, cursor)
        raise sa.exc.DBAPIError.instance(
            sql,
            parameters,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=invalidated,
            dialect=dialect,
        ) from exc
    finally:
        if cursor is not None:
            try:  # noqa: SIM105 - suppress() would cost a context manager per statement
                cursor.close()
            except Exception:  # noqa: S110 - a cursor that cannot close holds nothing to clean up
                pass


class RawReader:
    """Reads on one DBAPI connection (`Database.fetch` / `snapshot`)."""

    __slots__ = ("db", "dropped", "fairy", "kept")

    def __init__(self, db: Database, fairy: Any, kept: bool) -> None:
        self.db, self.fairy, self.kept = db, fairy, kept
        self.dropped = False  # the connection failed: invalidated, used no more

    def fetch(self, prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
        compiled = prepared.compiled(self.db.engine.dialect)
        return compiled.rows(self.execute(compiled.sql, compiled.parameters(params)))

    def execute(self, sql: str, parameters: Any) -> list[Any]:
        """`sql` on this connection (`_on_cursor`), its deadline armed; over the statement limit the usual
        refusal (or the inline budget's hand-off, as in `Database._bounded`); a connection the database
        closed stops being kept and leaves the pool."""
        db = self.db
        if db.is_sqlite:
            deadline = self.fairy.info.get(_STATE)
            if deadline is not None:
                deadline.arm(db.statement_timeout, _budget.get())
        try:
            return _on_cursor(self.fairy, db.engine.dialect, None, db.engine.dispatch, sql, parameters, False)
        except sa.exc.DBAPIError as exc:
            if isinstance(exc, sa.exc.OperationalError) and db._stopped(exc):
                budget = _budget.get()
                if budget is not None and budget.spent:
                    raise _BudgetSpent from None
                raise statement_too_costly(db.statement_timeout) from None
            if exc.connection_invalidated:
                db._drop(self, exc.orig)
                if not db.is_sqlite:  # the server went away: its other pooled connections are dead too
                    db.engine.dispose(close=False)
            raise


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


def _unbudgeted(work: Callable[[], T]) -> T:
    """`work` with no inline budget (in a worker thread): only the statement timeout bounds it."""
    token = _budget.set(None)
    try:
        return work()
    finally:
        _budget.reset(token)


def _configure_sqlite(engine: sa.Engine, statement_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (see Database.write).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=30000",
            "temp_store=MEMORY",
            # Memory per connection (issue 13: RSS <= 250 MB per process at a million users). Every page
            # mapped or cached counts in the process's resident set; the rest of the file is in the kernel's
            # page cache all the same. At 1,000,000 users (a 1.1 GB file), random reads of one user and its
            # groups cost 15.8-17.4 us with a 64 MB cache and 256 MB mapped (RSS 292 MB for the one
            # connection), 17.2 us with these (85 MB).
            "cache_size=-16384",
            "mmap_size=67108864",
            f"wal_autocheckpoint={BACKSTOP_PAGES}",  # a backstop: `store.wal` checkpoints in its own thread
        ):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()
        # SQLite's lower() folds ASCII only; use Python's so SQL and the indexed *_ci columns agree.
        dbapi_conn.create_function("lower", 1, _py_lower, deterministic=True)
        deadline = record.info[_STATE] = _Deadline()
        dbapi_conn.set_progress_handler(deadline, _PROGRESS_STEPS)

    @event.listens_for(engine, "before_cursor_execute")
    def _on_execute(conn: sa.Connection | None, *_args: Any) -> None:
        if conn is None:
            return  # `Database.fetch` announcing its statement: it arms the deadline itself
        deadline = conn.info.get(_STATE)
        if deadline is not None:
            if conn.get_execution_options().get(UNBOUNDED, False):
                deadline.arm(0, None)
            else:
                deadline.arm(statement_timeout, _budget.get())

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        if options.get(_AUTOCOMMIT, False):
            return  # `Database.single`: the statement is its own (implicit) transaction
        # on the driver: SQLAlchemy's exec_driver_sql cost ten times the BEGIN itself (every write pays it)
        _driver_execute(conn, "BEGIN IMMEDIATE" if options.get("scimjit_write", False) else "BEGIN", ())


def _postgresql_limit(statement_timeout: float) -> str | None:
    """The session setting that makes the server enforce the limit (None: no limit)."""
    if statement_timeout <= 0:
        return None
    return f"SET statement_timeout = {max(1, round(statement_timeout * 1000))}"


def _configure_postgresql(engine: sa.Engine, statement_timeout: float) -> None:
    """The server enforces the limit: a session setting made once per connection, so a statement pays no
    extra round trip. Migrations lift it for their own transaction (`store.migrate.upgrade`)."""
    setup = _postgresql_limit(statement_timeout)
    if setup is None:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(setup)
        dbapi_conn.commit()


PING_AFTER_IDLE = 1.0  # seconds a pooled PostgreSQL connection may rest before it is pinged at checkout


def _ping_after_idle(engine: sa.Engine) -> None:
    """Ping a pooled connection at checkout only when it has rested `PING_AFTER_IDLE` seconds, and replace
    it when the ping fails (SQLAlchemy's pessimistic checkout: `DisconnectionError` makes the pool try a
    fresh connection). `pool_pre_ping` pinged at every checkout, a round trip per request (and as many
    statements again for the server) to guard against what only a rest makes likely: a server restarted, a
    firewall's idle timeout. A connection that dies while busy fails its statement, the pool discards every
    connection of that moment (SQLAlchemy invalidates the pool on a disconnect) and that request answers
    503 with Retry-After, as in an outage."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["rested_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        rested = record.info.get("rested_since")
        if rested is None or time.monotonic() - rested < PING_AFTER_IDLE:
            return  # new (just connected) or busy moments ago
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:
            raise sa.exc.DisconnectionError("the pooled connection did not answer its ping") from exc


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
