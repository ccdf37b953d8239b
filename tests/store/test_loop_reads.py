"""`Database.fetch_async`: the hottest reads awaited on the event loop (`store.loop_reads` on PostgreSQL, no
thread hop; `run(fetch)` on SQLite). The same rows as `fetch`, and the thread path's rules kept on real
PostgreSQL: bounded connections, the statement limit, listeners, recovery from a dead connection, and a
cancelled read never handing its connection to the next one.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from scimjit.scim.errors import ScimError
from scimjit.store import db as db_module
from scimjit.store.db import Database
from scimjit.store.prepared import Prepared
from tests.store.conftest import terminate_backend
from tests.store.test_fetch import _NAME_OF, _insert, _rename


def _pid_after(seconds: float) -> Prepared:
    """The backend that ran it, after the server has worked `seconds` on it (pg_sleep: a statement that
    holds its connection, as a slow read would)."""
    return Prepared(
        sa.text(f"SELECT pg_backend_pid() AS pid FROM pg_sleep({seconds})").columns(
            sa.column("pid", sa.Integer)
        )
    )


_PID = _pid_after(0)


def test_fetch_async_reads_what_fetch_reads_and_every_commit_at_once(db: Database) -> None:
    _insert(db, "u1", "alice")

    async def main() -> list[str]:
        names = []
        for name in ("bob", "carol"):
            _rename(db, "u1", name)  # committed elsewhere: seen by the very next read
            rows = await db.fetch_async(_NAME_OF, {"id": "u1"})
            assert rows == db.fetch(_NAME_OF, {"id": "u1"})
            assert rows[0].active is True and rows[0].data == {"userName": name}
            names.append(rows[0].user_name)
        assert await db.fetch_async(_NAME_OF, {"id": "nobody"}) == []
        return names

    assert asyncio.run(main()) == ["bob", "carol"]


def test_postgresql_reads_run_on_the_loop_and_are_announced(pg: Database) -> None:
    seen: list[tuple[str, str]] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append((threading.current_thread().name, statement))

    sa.event.listen(pg.engine, "before_cursor_execute", record)
    try:
        asyncio.run(pg.fetch_async(_NAME_OF, {"id": "u1"}))
    finally:
        sa.event.remove(pg.engine, "before_cursor_execute", record)
    assert len(seen) == 1 and "FROM users" in seen[0][1]
    assert seen[0][0] == threading.main_thread().name  # no thread hop
    assert pg.engine.pool.checkedout() == 0  # the thread path's pool was not touched


def test_more_reads_than_connections_wait_their_turn_on_pool_size_backends(pg: Database) -> None:
    """12 reads at once on a pool of 2: each answers, on one of exactly 2 backends, reused in turn."""

    async def main() -> list[int]:
        rows = await asyncio.gather(*(pg.fetch_async(_pid_after(0.02), {}) for _ in range(12)))
        return [r[0].pid for r in rows]

    pids = asyncio.run(main())
    assert len(pids) == 12 and len(set(pids)) == 2, pids


def test_a_read_over_the_statement_limit_is_400_too_many_and_the_connection_serves_on(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's statement_timeout on the loop's connections")
    limited = Database(db.test_url, pool_size=1, statement_timeout=0.05)  # type: ignore[attr-defined]

    async def main() -> tuple[int, int]:
        first = (await limited.fetch_async(_PID, {}))[0].pid
        with pytest.raises(ScimError) as caught:
            await limited.fetch_async(_pid_after(5), {})
        assert caught.value.status == 400 and caught.value.scim_type == "tooMany"
        return first, (await limited.fetch_async(_PID, {}))[0].pid

    try:
        before, after = asyncio.run(main())
    finally:
        limited.dispose()
    assert before == after  # stopped by the server, the connection was sound: kept


def test_a_connection_killed_while_it_rested_is_read_again_on_a_fresh_one(
    pg: Database, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rested in (3600.0, 0.0):  # not pinged: the read fails and runs again; pinged: replaced before use
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE", rested)

        async def main() -> tuple[int, int]:
            dead = (await pg.fetch_async(_PID, {}))[0].pid
            terminate_backend(db, dead)
            return dead, (await pg.fetch_async(_PID, {}))[0].pid

        dead, fresh = asyncio.run(main())
        assert fresh != dead, rested


def test_a_cancelled_read_does_not_hand_its_connection_on(pg: Database) -> None:
    """A client that left mid-read: the answer may still be on the wire, so the connection is closed; the
    next read gets another backend and its own answer."""

    slow_sql = _pid_after(2).compiled(pg.engine.dialect).sql

    async def main() -> tuple[int, int]:
        first = (await pg.fetch_async(_PID, {}))[0].pid
        slow: asyncio.Future[Any] | None = None

        def cancel_once_sent(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement == slow_sql and slow is not None:  # the statement is on its way: cancel mid-read
                asyncio.get_running_loop().call_soon(slow.cancel)

        sa.event.listen(pg.engine, "before_cursor_execute", cancel_once_sent)
        try:
            slow = asyncio.ensure_future(pg.fetch_async(_pid_after(2), {}))
            with pytest.raises(asyncio.CancelledError):
                await slow
        finally:
            sa.event.remove(pg.engine, "before_cursor_execute", cancel_once_sent)
        return first, (await pg.fetch_async(_PID, {}))[0].pid

    first, after = asyncio.run(main())
    assert after != first


def test_a_database_that_is_not_there_is_sqlalchemys_operational_error(db: Database) -> None:
    """So the HTTP layers answer 503 with Retry-After (tests/http/test_db_outage.py), as on the thread path."""
    if db.is_sqlite:
        pytest.skip("a PostgreSQL server that does not answer")
    url = sa.make_url(db.test_url).set(host="127.0.0.1", port=1)  # type: ignore[attr-defined]
    absent = Database(url.render_as_string(hide_password=False))
    try:
        with pytest.raises(sa.exc.OperationalError):
            asyncio.run(absent.fetch_async(_PID, {}))
    finally:
        absent.dispose()


def test_a_loop_snapshot_reads_one_snapshot_and_ends_it(pg: Database, db: Database) -> None:
    """The login's two reads (`Database.snapshot_async`): a commit made between them is not seen inside,
    and is seen at once after, on the same connection (ROLLBACK left no transaction open)."""
    _insert(db, "u1", "alice")

    async def main() -> tuple[list[str], str, int, int]:
        async with pg.snapshot_async() as reader:
            first = (await reader.fetch(_NAME_OF, {"id": "u1"}))[0].user_name
            inside = (await reader.fetch(_PID, {}))[0].pid
            _rename(db, "u1", "bob")  # committed elsewhere, mid-snapshot
            second = (await reader.fetch(_NAME_OF, {"id": "u1"}))[0].user_name
        after = (await pg.fetch_async(_NAME_OF, {"id": "u1"}))[0].user_name
        return [first, second], after, inside, (await pg.fetch_async(_PID, {}))[0].pid

    names, after, inside, reused = asyncio.run(main())
    assert names == ["alice", "alice"] and after == "bob"
    assert reused == inside  # the connection went back to the pool


def test_a_loop_snapshot_left_by_an_error_closes_its_connection(pg: Database) -> None:
    async def main() -> tuple[int, int]:
        with pytest.raises(ScimError):
            async with pg.snapshot_async() as reader:
                pid = (await reader.fetch(_PID, {}))[0].pid
                raise ScimError(400, "the caller's own refusal, mid-snapshot")
        return pid, (await pg.fetch_async(_PID, {}))[0].pid

    before, after = asyncio.run(main())
    assert after != before  # not handed on inside its open transaction


def test_sqlite_has_no_loop_snapshot(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's reads run inline")
    with pytest.raises(RuntimeError):
        db.snapshot_async()
