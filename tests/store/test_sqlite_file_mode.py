"""The SQLite database file (token hashes, users, the audit trail) is created readable by its owner only, and
so are the `-wal` and `-shm` files SQLite makes beside it; an existing file keeps the mode it has."""

from __future__ import annotations

import os
import stat

import sqlalchemy as sa

from scimjit.store.db import Database, sqlite_path
from scimjit.store.migrate import upgrade


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_sqlite_database_and_its_wal_and_shm_files_are_0600(tmp_path):
    old = os.umask(0o022)  # the usual umask, under which SQLite alone creates 0644
    try:
        path = tmp_path / "scimjit.db"
        db = Database(f"sqlite:///{path}")
        upgrade(db)
        with db.write() as conn:  # WAL mode: a write creates -wal and -shm
            conn.execute(sa.text("CREATE TABLE probe (x INTEGER)"))
            assert (tmp_path / "scimjit.db-wal").exists() and (tmp_path / "scimjit.db-shm").exists()
            modes = {p.name: mode(p) for p in tmp_path.iterdir()}
        db.dispose()
    finally:
        os.umask(old)
    assert modes == {"scimjit.db": 0o600, "scimjit.db-wal": 0o600, "scimjit.db-shm": 0o600}


def test_an_existing_file_keeps_its_mode_and_memory_databases_create_nothing(tmp_path, monkeypatch):
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    Database(f"sqlite:///{path}").dispose()
    assert mode(path) == 0o640
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://", "sqlite:///:memory:"):
        assert sqlite_path(url) is None
        Database(url).dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.db"]
