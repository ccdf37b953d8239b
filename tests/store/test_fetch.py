"""`Database.fetch`, the hot reads' short cut past SQLAlchemy's Connection (issue 13): still exact, still bounded,
still recoverable. On SQLite and PostgreSQL, on real databases.

- The event loop's kept SQLite connection holds no snapshot between statements: a commit made elsewhere is
  seen by the very next read, and a full checkpoint is never blocked by it.
- A statement over the time limit is the usual `400 tooMany`; one over the inline budget moves to a thread.
- A connection the database dropped is a 503-class error once, then the pool's next connection answers.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from scimjit.scim.errors import ScimError
from scimjit.store.db import Database
from scimjit.store.prepared import Prepared
from scimjit.store.tables import users

_NAME_OF = Prepared(
    sa.select(users.c.user_name, users.c.active, users.c.data).where(users.c.id == sa.bindparam("id"))
)


def _counting(up_to: int) -> Prepared:
    """A statement that runs as long as it is let: `up_to` steps of a recursive CTE (seconds for 50 million)."""
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) SELECT count(*) AS n FROM c"
    return Prepared(sa.text(sql).bindparams(n=up_to).columns(sa.column("n", sa.Integer)))


_LONG = _counting(50_000_000)


def _insert(db: Database, uid: str, name: str) -> None:
    with db.write() as conn:
        conn.execute(
            users.insert().values(
                id=uid, user_name=name, user_name_ci=name.lower(), active=True, data={"userName": name},
                version=1, created=0, last_modified=0,
            )
        )  # fmt: skip


def _rename(db: Database, uid: str, name: str) -> None:
    with db.write() as conn:
        conn.execute(users.update().where(users.c.id == uid).values(user_name=name, data={"userName": name}))


def _on_loop(db: Database, fn: Any, *args: Any) -> Any:
    """`fn` run as the HTTP layer runs it: `Database.run` from the event loop (inline on SQLite)."""

    async def main() -> Any:
        return await db.run(fn, *args)

    return asyncio.run(main())


def test_fetch_reads_typed_rows_and_every_commit_at_once(db: Database) -> None:
    _insert(db, "u1", "alice")
    rows = _on_loop(db, db.fetch, _NAME_OF, {"id": "u1"})
    assert len(rows) == 1
    assert rows[0].user_name == "alice" and rows[0].active is True and rows[0].data == {"userName": "alice"}
    for name in ("bob", "carol", "dave"):  # each commit is seen by the next read on the same kept connection
        _rename(db, "u1", name)
        assert _on_loop(db, db.fetch, _NAME_OF, {"id": "u1"})[0].user_name == name
    assert _on_loop(db, db.fetch, _NAME_OF, {"id": "nobody"}) == []
    if db.is_sqlite:  # and it holds no read snapshot: a TRUNCATE checkpoint is not blocked by it
        assert db._wal is not None
        with db._wal.lock, db.engine.connect() as conn:  # (the checkpointer's thread is not running one)
            busy, _log, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        assert busy == 0


def test_fetch_announces_its_statement_to_the_engine_listeners(db: Database) -> None:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        _on_loop(db, db.fetch, _NAME_OF, {"id": "u1"})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert len(seen) == 1 and "FROM users" in seen[0]


def test_fetch_over_the_statement_limit_is_400_too_many(db: Database, tmp_path: Any) -> None:
    url = db.url if not db.is_sqlite else f"sqlite:///{tmp_path}/limited.db"
    limited = Database(url, statement_timeout=0.05, inline_budget=0)
    try:
        with pytest.raises(ScimError) as caught:
            _on_loop(limited, limited.fetch, _LONG, {})
        assert caught.value.status == 400 and caught.value.scim_type == "tooMany"
        assert limited.fetch(Prepared(sa.select(sa.literal(1).label("one"))), {})[0].one == 1  # usable after
    finally:
        limited.dispose()


def test_a_sqlite_fetch_over_the_inline_budget_finishes_in_a_thread(tmp_path: Any) -> None:
    """Over the 20 ms inline budget (here 1 ms) the read is stopped on the loop and run again in the pool: the
    answer comes, from the thread, and the time limit alone bounds it there."""
    db = Database(f"sqlite:///{tmp_path}/budget.db", statement_timeout=30, inline_budget=0.001)
    short = _counting(300_000)
    threads: list[str] = []

    def record(*_: Any) -> None:
        threads.append(threading.current_thread().name)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert _on_loop(db, db.fetch, short, {})[0].n == 300000
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
        db.dispose()
    main = threading.main_thread().name
    assert threads[0] == main and len(threads) == 2 and threads[1] != main, threads  # stopped, then again


def test_a_postgresql_connection_dropped_under_fetch_is_read_again_on_a_fresh_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection the server closed: replaced at checkout when it rested (the ping), else its read runs
    once more on a fresh connection. (A server that stays away is a 503: tests/http/test_db_outage.py.)"""
    if db.is_sqlite:
        pytest.skip("a server-side connection kill is PostgreSQL's")
    from scimjit.store import db as db_module

    _insert(db, "u1", "alice")
    probe = Database(db.url, pool_size=1)
    try:

        def kill_pooled() -> int:
            with probe.engine.connect() as conn:  # a pooled connection, checked out to learn its backend
                pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
                conn.rollback()
            with db.engine.connect() as admin:
                admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
                admin.commit()
            return pid

        def backends() -> set[int]:
            with db.engine.connect() as admin:
                return set(admin.exec_driver_sql("SELECT pid FROM pg_stat_activity").scalars())

        assert probe.fetch(_NAME_OF, {"id": "u1"})[0].user_name == "alice"
        dead = kill_pooled()
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 0.0)  # it rested: pinged at checkout, replaced
        assert probe.fetch(_NAME_OF, {"id": "u1"})[0].user_name == "alice"
        dead = kill_pooled()
        assert dead not in backends()
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 3600.0)  # busy moments ago: not pinged
        statements: list[str] = []
        sa.event.listen(probe.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        assert probe.fetch(_NAME_OF, {"id": "u1"})[0].user_name == "alice"  # failed once, read again
        assert len([s for s in statements if "FROM users" in s]) == 2 and "SELECT 1" not in statements
    finally:
        probe.dispose()


def test_a_snapshot_reads_one_state_and_leaves_none_behind(db: Database) -> None:
    """`Database.snapshot` (the login's two reads): a commit between its reads is seen by neither, and by the
    very next read after it, on the event loop's kept connection as on a pooled one."""
    _insert(db, "u1", "alice")

    def reads() -> tuple[str, str, str]:
        with db.snapshot() as snap:
            first = snap.fetch(_NAME_OF, {"id": "u1"})[0].user_name
            _rename(db, "u1", "bob")  # committed by another connection meanwhile
            second = snap.fetch(_NAME_OF, {"id": "u1"})[0].user_name
        return first, second, db.fetch(_NAME_OF, {"id": "u1"})[0].user_name

    assert _on_loop(db, reads) == ("alice", "alice", "bob")
    _rename(db, "u1", "carol")
    assert reads() == ("carol", "carol", "bob")  # not on the loop: a pooled connection, the same rule


def test_a_failed_read_in_a_snapshot_ends_it(db: Database) -> None:
    _insert(db, "u1", "alice")

    def failing() -> None:
        with db.snapshot() as snap:
            snap.fetch(_NAME_OF, {"id": "u1"})
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError):
        _on_loop(db, failing)
    _rename(db, "u1", "bob")
    assert _on_loop(db, db.fetch, _NAME_OF, {"id": "u1"})[0].user_name == "bob"  # no snapshot left open


_INSERT_USER = Prepared(
    users.insert(),
    ("id", "user_name", "user_name_ci", "active", "data", "version", "created", "last_modified"),
)


def _user_values(uid: str, name: str) -> dict[str, Any]:
    return {"id": uid, "user_name": name, "user_name_ci": name, "active": True, "data": {"userName": name},
            "version": 1, "created": 0, "last_modified": 0}  # fmt: skip


def test_execute_in_a_write_is_part_of_it_and_raises_sqlalchemy_errors(db: Database) -> None:
    """`db.execute` (the writes' hot statements on the driver): in the caller's transaction, a constraint
    violation is SQLAlchemy's IntegrityError (the uniqueness handling relies on it), and it rolls back whole."""
    from scimjit.store.db import execute

    with db.write() as conn:
        execute(conn, _INSERT_USER, _user_values("u1", "alice"))
    with pytest.raises(sa.exc.IntegrityError), db.write() as conn:
        execute(conn, _INSERT_USER, _user_values("u2", "bob"))
        execute(conn, _INSERT_USER, _user_values("u3", "alice"))  # user_name_ci is unique
    with pytest.raises(RuntimeError), db.write() as conn:
        execute(conn, _INSERT_USER, [_user_values("u4", "carol"), _user_values("u5", "dave")])  # executemany
        raise RuntimeError("the caller failed")
    assert [r.user_name for r in db.fetch(Prepared(sa.select(users.c.user_name)), {})] == ["alice"]


def test_execute_over_the_statement_limit_is_400_too_many(db: Database, tmp_path: Any) -> None:
    from scimjit.store.db import execute

    url = db.url if not db.is_sqlite else f"sqlite:///{tmp_path}/limited.db"
    limited = Database(url, statement_timeout=0.05, inline_budget=0)
    try:
        with pytest.raises(ScimError) as caught, limited.write() as conn:
            execute(conn, _LONG, {})
        assert caught.value.status == 400 and caught.value.scim_type == "tooMany"
    finally:
        limited.dispose()
