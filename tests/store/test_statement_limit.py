"""The cost bound of one statement (`[server] statement_timeout`) and SQLite's inline budget, on both databases:
a statement past its time limit is stopped and refused as `400 tooMany`, its transaction rolled back whole; a
SQLite read over the inline budget is run again off the event loop, a write never twice.

The costly statements count to a billion: they would run for many seconds, so only the limit can end them
before the test's own patience (no sleeps, and nothing here measures time)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from scimjit.scim.errors import ScimError
from scimjit.store.db import Database
from scimjit.store.migrate import is_current
from scimjit.store.tables import tokens

_COSTLY = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
    "SELECT count(*) FROM c",
    "postgresql": "SELECT count(*) FROM generate_series(1, 1000000000)",
}
_MEDIUM = {  # a few thousand VM instructions: past a microsecond budget, far within any timeout
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT count(*) FROM c",
    "postgresql": "SELECT count(*) FROM generate_series(1, 20000)",
}


@pytest.fixture
def limited(db: Database) -> Iterator[Database]:
    """A second handle on the test database with a 100 ms statement time limit: the costly statement takes
    seconds, so it is stopped, while the medium one (a few ms) keeps a wide margin on a loaded CI machine (at
    10 ms it was once stopped too)."""
    handle = Database(db.test_url, statement_timeout=0.1)  # type: ignore[attr-defined]
    yield handle
    handle.dispose()


def _token_row(name: str) -> dict[str, object]:
    return {"id": name, "name": name, "secret_hash": f"hash-{name}", "scopes": ["scim:read"], "created_at": 0}


def test_a_read_past_the_time_limit_is_too_many(limited: Database) -> None:
    with pytest.raises(ScimError) as raised, limited.read() as conn:
        conn.exec_driver_sql(_COSTLY[limited.dialect]).scalar_one()
    exc = raised.value
    assert (exc.status, exc.scim_type) == (400, "tooMany")
    assert "time limit (0.1s)" in exc.detail
    with limited.read() as conn:  # the connection went back to the pool healthy
        assert conn.exec_driver_sql(_MEDIUM[limited.dialect]).scalar_one() == 20000


def test_a_write_past_the_time_limit_rolls_back_whole(limited: Database) -> None:
    with pytest.raises(ScimError) as raised, limited.write() as conn:
        conn.execute(tokens.insert().values(**_token_row("written-first")))
        conn.exec_driver_sql(_COSTLY[limited.dialect]).scalar_one()
    assert raised.value.scim_type == "tooMany"
    with limited.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tokens)).scalar_one() == 0


def test_migrations_are_not_bound_by_the_request_time_limit(limited: Database) -> None:
    from scimjit.store.migrate import upgrade

    upgrade(limited)  # at head already: runs the version check through the unbounded connection
    assert is_current(limited)


def test_a_sqlite_read_over_the_inline_budget_moves_to_the_thread_pool(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("PostgreSQL work always runs in the thread pool")
    handle = Database(db.test_url, inline_budget=1e-6)  # type: ignore[attr-defined]
    threads: list[str] = []

    def read() -> int:
        threads.append(threading.current_thread().name)
        with handle.read() as conn:
            return int(conn.exec_driver_sql(_MEDIUM["sqlite"]).scalar_one())

    try:
        assert asyncio.run(handle.run(read)) == 20000
    finally:
        handle.dispose()
    main = threading.current_thread().name
    assert threads[0] == main and threads[1] != main and len(threads) == 2, threads


def test_work_that_has_written_is_never_run_twice(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("PostgreSQL work always runs in the thread pool")
    handle = Database(db.test_url, inline_budget=1e-6)  # type: ignore[attr-defined]
    calls: list[str] = []

    def write_then_read() -> int:
        calls.append(threading.current_thread().name)
        with handle.write() as conn:
            conn.execute(tokens.insert().values(**_token_row("once")))
        with handle.read() as conn:  # over the budget, but after a write: finishes inline
            return int(conn.exec_driver_sql(_MEDIUM["sqlite"]).scalar_one())

    try:
        assert asyncio.run(handle.run(write_then_read)) == 20000
        with handle.read() as conn:
            assert conn.execute(sa.select(tokens.c.name)).scalars().all() == ["once"]
    finally:
        handle.dispose()
    assert calls == [threading.current_thread().name]
