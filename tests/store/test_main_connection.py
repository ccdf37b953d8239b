"""SQLite's main-thread connection (`Database._main_connection`, issue 13): the work `Database.run` does
inline on the event loop, reads and writes alike, runs on one kept connection, so a read after a write finds
its page cache whole; and that connection is always left as the next piece of work expects it: committed or
rolled back, with the engine's options, replaced when it failed. Work off the main thread, or nested inside
work holding the kept connection, takes a pooled one, as before. Real SQLite files; no mocks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scimjit.store.db import Database
from scimjit.store.migrate import upgrade
from scimjit.store.prepared import Prepared
from scimjit.store.tables import users

_NAME_OF = Prepared(sa.select(users.c.user_name).where(users.c.id == sa.bindparam("id")))


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path}/main.db")
    upgrade(db)
    yield db
    db.dispose()


def _on_loop(db: Database, fn: Any, *args: Any) -> Any:
    """`fn` as the HTTP layer runs it: `Database.run` from the event loop on the main thread."""

    async def main() -> Any:
        return await db.run(fn, *args)

    return asyncio.run(main())


def _insert(conn: sa.Connection, uid: str, name: str) -> None:
    conn.execute(
        users.insert().values(
            id=uid, user_name=name, user_name_ci=name.lower(), active=True, data={"userName": name},
            version=1, created=0, last_modified=0,
        )
    )  # fmt: skip


class _Seen:
    """The DBAPI connection and the statements of each statement the engine runs."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls: list[tuple[int, str]] = []

    def __enter__(self) -> _Seen:
        sa.event.listen(self.db.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_: Any) -> None:
        sa.event.remove(self.db.engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        self.calls.append((id(cursor.connection), " ".join(statement.split())))

    def connections(self) -> set[int]:
        return {c for c, _ in self.calls}

    def statements(self) -> list[str]:
        return [s for _, s in self.calls]


def test_reads_and_writes_on_the_loop_share_one_connection_and_see_each_other(sqlite: Database) -> None:
    db = sqlite

    def work() -> tuple[str, str, str]:
        with db.write() as conn:
            _insert(conn, "u1", "alice")
        fetched = db.fetch(_NAME_OF, {"id": "u1"})[0].user_name
        with db.read() as conn:
            read = conn.execute(sa.select(users.c.user_name).where(users.c.id == "u1")).scalar_one()
        with db.write() as conn:
            conn.execute(users.update().where(users.c.id == "u1").values(user_name="bob"))
        with db.single() as conn:
            single = conn.execute(sa.select(users.c.user_name).where(users.c.id == "u1")).scalar_one()
        return fetched, read, single

    with _Seen(db) as seen:
        assert _on_loop(db, work) == ("alice", "alice", "bob")
        assert _on_loop(db, db.fetch, _NAME_OF, {"id": "u1"})[0].user_name == "bob"  # a later request too
    assert len(seen.connections()) == 1, seen.calls
    # each kind of work began as it should on the shared connection: its options do not leak into the next
    begins = [s for s in seen.statements() if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN", "BEGIN IMMEDIATE"], seen.statements()


def test_a_failed_write_on_the_loop_leaves_the_connection_clean(sqlite: Database) -> None:
    db = sqlite
    _on_loop(db, _write, db, "u1", "alice")

    def failing() -> None:
        with db.write() as conn:
            _insert(conn, "u2", "bob")
            _insert(conn, "u3", "alice")  # user_name_ci is unique: IntegrityError

    with pytest.raises(sa.exc.IntegrityError):
        _on_loop(db, failing)
    kept = db._kept
    assert kept is not None and not kept.in_transaction()
    assert not kept.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]

    def raising() -> None:
        with db.write() as conn:
            _insert(conn, "u4", "carol")
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError):
        _on_loop(db, raising)
    _on_loop(db, _write, db, "u5", "dave")  # the next write takes the write lock: nothing was left holding it
    with db.engine.connect() as other:  # and a connection of its own sees exactly the committed rows
        names = other.execute(sa.select(users.c.user_name).order_by(users.c.user_name)).scalars().all()
    assert names == ["alice", "dave"]
    assert db._kept is kept  # still the one connection


def _write(db: Database, uid: str, name: str) -> None:
    with db.write() as conn:
        _insert(conn, uid, name)


def test_work_nested_in_work_on_the_kept_connection_takes_a_pooled_one(sqlite: Database) -> None:
    """A read inside a write on the loop cannot use the connection the write holds: it takes a pooled one and
    sees the committed state only; a write inside a snapshot likewise (and does not wait for itself)."""
    db = sqlite
    _on_loop(db, _write, db, "u1", "alice")

    def nested() -> tuple[list[Any], str, str]:
        with db.write() as conn:
            _insert(conn, "u2", "bob")
            inside = db.fetch(_NAME_OF, {"id": "u2"})  # not committed yet: another connection sees nothing
        with db.snapshot() as snap:
            before = snap.fetch(_NAME_OF, {"id": "u1"})[0].user_name
            with db.write() as conn:
                conn.execute(users.update().where(users.c.id == "u1").values(user_name="carol"))
        return inside, before, db.fetch(_NAME_OF, {"id": "u1"})[0].user_name

    with _Seen(db) as seen:
        inside, before, after = _on_loop(db, nested)
    assert inside == [] and before == "alice" and after == "carol"
    assert len(seen.connections()) == 2


def test_work_off_the_main_thread_uses_the_pool(sqlite: Database) -> None:
    db = sqlite
    _on_loop(db, _write, db, "u1", "alice")
    kept = db._kept
    found: list[int] = []

    def in_thread() -> None:
        async def main() -> None:
            def work() -> None:
                with db.write() as conn:
                    found.append(id(conn.connection.dbapi_connection))
                    conn.execute(users.update().where(users.c.id == "u1").values(user_name="bob"))

            await db.run(work)

        asyncio.run(main())

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert kept is not None and found and found[0] != id(kept.connection.dbapi_connection)
    assert _on_loop(db, db.fetch, _NAME_OF, {"id": "u1"})[0].user_name == "bob"


def test_a_kept_connection_that_failed_is_replaced(sqlite: Database) -> None:
    """The kept connection closed under it (as a failing driver would leave it): a write that meets it fails
    once, as on a pooled connection, and the next work gets a fresh connection and succeeds."""
    db = sqlite
    _on_loop(db, _write, db, "u1", "alice")
    kept = db._kept
    assert kept is not None
    kept.connection.dbapi_connection.close()  # type: ignore[union-attr]
    with pytest.raises(sa.exc.DBAPIError):
        _on_loop(db, _write, db, "u2", "bob")
    assert db._kept is None or db._kept is not kept
    _on_loop(db, _write, db, "u3", "carol")
    assert [r.user_name for r in _on_loop(db, db.fetch, Prepared(sa.select(users.c.user_name)), {})] == [
        "alice",
        "carol",
    ]
    kept = db._kept
    assert kept is not None
    kept.connection.dbapi_connection.close()  # type: ignore[union-attr]
    # a read that meets it is answered all the same: `fetch` runs a read once more on a fresh connection
    assert _on_loop(db, db.fetch, _NAME_OF, {"id": "u1"})[0].user_name == "alice"
    assert db._kept is not kept
    with _Seen(db) as seen:
        _on_loop(db, _write, db, "u4", "dave")
        assert _on_loop(db, db.fetch, _NAME_OF, {"id": "u4"})[0].user_name == "dave"
    assert len(seen.connections()) == 1  # and the work after it shares one connection again
