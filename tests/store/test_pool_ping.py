"""PostgreSQL's pool pings a connection at checkout only after it rested (`store.db.PING_AFTER_IDLE`), and
keeps its connections: no backend is opened and closed per request under load."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from scimjit.store import db as db_module
from scimjit.store.db import Database
from scimjit.store.prepared import Prepared
from tests.store.conftest import terminate_backend


def _backend(handle: Database) -> int:
    with handle.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_a_rested_connection_that_died_is_replaced_at_checkout(
    pg: Database, db: Database, monkeypatch
) -> None:
    pid = _backend(pg)
    terminate_backend(db, pid)  # the server went away while the connection rested in the pool
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 0.0)  # it has rested long enough to be pinged
    assert _backend(pg) != pid  # the ping failed, the pool connected anew, the read succeeded


def test_a_connection_busy_moments_ago_is_not_pinged(pg: Database, monkeypatch) -> None:
    """No `SELECT 1` before each statement: the round trip `pool_pre_ping` cost every request."""
    _backend(pg)
    statements: list[str] = []
    sa.event.listen(pg.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 3600.0)
    with pg.read() as conn:
        conn.exec_driver_sql("SELECT 2")
    assert pg.fetch(Prepared(sa.text("SELECT 3 AS three").columns(three=sa.Integer)), {})[0].three == 3
    assert not any("SELECT 1" in s for s in statements), statements


def test_a_connection_that_died_while_busy_fails_one_request_then_the_pool_recovers(
    pg: Database, db: Database, monkeypatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 3600.0)
    pid = _backend(pg)
    terminate_backend(db, pid)
    with pytest.raises(sa.exc.OperationalError), pg.read() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert _backend(pg) != pid


def test_more_requests_than_connections_reuse_the_same_backends(pg: Database) -> None:
    """12 threads on a pool of 4 (2 x pool_size): they wait their turn; no connection is opened and closed per
    request (the overflow connections of the old pool were, whenever more than pool_size were busy)."""
    seen: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def work() -> None:
        barrier.wait()
        for _ in range(20):
            with pg.engine.connect() as conn:
                pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            with lock:
                seen.add(pid)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert 1 <= len(seen) <= 4, seen
