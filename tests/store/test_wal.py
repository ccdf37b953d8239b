"""SQLite's WAL checkpoints run in `store.wal`'s thread, not inside the COMMIT of a request (SQLite only)."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading

import sqlalchemy as sa

from scimjit.store.db import Database
from scimjit.store.wal import BACKSTOP_PAGES, Checkpointer


def rows_in_the_database_file(path, tmp_path) -> int:
    """The probe rows the main database file holds by itself, without its write-ahead log."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return conn.execute("SELECT count(*) FROM probe").fetchone()[0]
    finally:
        conn.close()


def make(tmp_path) -> tuple[Database, object]:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.execute(sa.text("CREATE TABLE probe (n INTEGER, pad TEXT)"))
    assert db._wal is not None and db._wal.settle()
    return db, path


def write_rows(db: Database, count: int) -> None:
    for n in range(count):
        with db.write() as conn:
            conn.execute(sa.text("INSERT INTO probe VALUES (:n, :pad)"), {"n": n, "pad": "x" * 2000})


def test_committed_writes_reach_the_database_file_through_the_thread(tmp_path):
    db, path = make(tmp_path)
    try:
        write_rows(db, 50)  # about 100 pages: far below either automatic checkpoint, SQLite's or the backstop
        assert db._wal.settle()
        busy, pages, copied = db._wal.last
        assert busy == 0 and pages == copied > 0
        assert rows_in_the_database_file(path, tmp_path) == 50
    finally:
        db.dispose()


def test_without_the_thread_the_commits_leave_the_pages_in_the_log(tmp_path):
    """The control: the same writes with the checkpointer stopped stay in the -wal file, so the test above
    sees the thread's work, not SQLite's own checkpoint."""
    db, path = make(tmp_path)
    try:
        db._wal.close()
        write_rows(db, 50)
        assert rows_in_the_database_file(path, tmp_path) == 0
    finally:
        db.dispose()


def test_committing_connections_keep_only_a_backstop_checkpoint(tmp_path):
    db, _ = make(tmp_path)
    try:
        with db.write() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == BACKSTOP_PAGES
    finally:
        db.dispose()


def test_dispose_stops_the_thread_and_memory_databases_have_none(tmp_path):
    db, _ = make(tmp_path)
    thread = db._wal._thread
    assert thread is not None and thread.is_alive()
    db.dispose()
    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t is thread]
    memory = Database("sqlite://")
    assert memory._wal is None
    memory.dispose()


def test_a_failing_checkpoint_is_logged_once_and_its_recovery_once(tmp_path, caplog):
    target = tmp_path / "later.db"
    target.mkdir()  # a directory where the file should be: SQLite cannot open it
    checkpointer = Checkpointer(str(target), interval=0)
    caplog.set_level(logging.WARNING, logger="scimjit.store.wal")
    try:
        for _ in range(3):
            checkpointer.wrote()
            assert checkpointer.settle()
        assert [r.getMessage() for r in caplog.records if "failed" in r.getMessage()] == [
            f"WAL checkpoint of {target} failed (SQLite's own goes on): unable to open database file"
        ]
        target.rmdir()
        sqlite3.connect(target).execute("PRAGMA journal_mode=WAL").fetchall()
        checkpointer.wrote()
        assert checkpointer.settle()
        assert checkpointer.last is not None
        assert [r.getMessage() for r in caplog.records if "works again" in r.getMessage()] == [
            f"WAL checkpoint of {target} works again"
        ]
    finally:
        checkpointer.close()


def test_a_database_file_that_went_away_is_not_created_again(tmp_path, caplog):
    gone = tmp_path / "gone.db"
    checkpointer = Checkpointer(str(gone), interval=0)
    caplog.set_level(logging.WARNING, logger="scimjit.store.wal")
    try:
        checkpointer.wrote()
        assert checkpointer.settle()
    finally:
        checkpointer.close()
    assert not gone.exists() and checkpointer.last is None
    assert any("failed" in r.getMessage() for r in caplog.records)
