"""SQLite's WAL checkpoints on a thread of their own, off the request path.

Why. SQLite copies the write-ahead log back into the database file (a checkpoint) inside the COMMIT that takes
the log past `wal_autocheckpoint` pages (1,000 by default), in the thread that commits. On SQLite scimjit's
writes run on the event loop, so every few dozen writes one COMMIT also wrote up to 1,000 pages and fsynced
the file while every other request waited. Measured on a copy of the bench database (10,000 users; the
statements of one `POST /Users`: the user, its e-mail row, the audit row), COMMIT took 340 µs on average, p99
10 ms and up to 72 ms; with the checkpoint elsewhere, 153 µs, p99 0.4 ms.

How. Each file database has one `Checkpointer`. Its thread, started by the first write, waits until a write
has committed, runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own (a passive checkpoint takes
no lock that a reader or a writer waits for, and the sqlite3 module releases the GIL while it runs), then
rests `interval` seconds so a burst of writes shares one checkpoint. The connections that commit keep
SQLite's own checkpoint as a backstop at `BACKSTOP_PAGES`, should this thread ever fall behind. Every
process on the database checkpoints what it wrote; a checkpoint copies every committed page, whoever wrote
it, and two at once simply leave the work to the first.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import urllib.parse

log = logging.getLogger(__name__)

# The committing connections' own `wal_autocheckpoint`: 40 MB of log at 4 KB pages, 10x SQLite's default.
BACKSTOP_PAGES = 10_000
DEFAULT_INTERVAL = 0.05  # seconds between checkpoints while writes keep coming


class Checkpointer:
    """The WAL checkpoints of one SQLite file, run by a daemon thread after writes (see the module)."""

    def __init__(self, path: str, interval: float = DEFAULT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.writes = 0  # commits announced by `wrote`
        self.handled = 0  # of those, how many a finished checkpoint (or failed attempt) started after
        self.last: tuple[int, int, int] | None = None  # (busy, pages in the log, pages checkpointed)
        self._failing = False  # so a lasting failure is logged once, and its end once
        # Held while a checkpoint runs: whoever needs the log to themselves for a moment (a TRUNCATE
        # checkpoint, a test that asks whether anything else holds it) takes it and waits for none.
        self.lock = threading.Lock()
        self._due = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def wrote(self) -> None:
        """A write transaction committed: checkpoint soon. Cheap; called after every commit."""
        with self._done:
            self.writes += 1
        self._due.set()
        if self._thread is None:
            with self._start:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="scimjit-wal", daemon=True)
                    self._thread.start()

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until a checkpoint has been tried since every write so far (False on timeout): for tests,
        without sleeping."""
        with self._done:
            target = self.writes
            return self._done.wait_for(lambda: self.handled >= target, timeout)

    def close(self) -> None:
        """Stop the thread (after a checkpoint it is running). Commits go on being checkpointed by SQLite."""
        self._stop.set()
        self._due.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._due.wait()
                if self._stop.is_set():
                    return
                self._due.clear()
                with self._done:
                    covers = self.writes  # every commit announced so far is in the log this checkpoint reads
                with self.lock:
                    conn = self._checkpoint(conn)
                with self._done:
                    self.handled = covers
                    self._done.notify_all()
                if self._stop.wait(self.interval):
                    return
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """One passive checkpoint; the connection to use next time (None after a failure: open afresh)."""
        try:
            if conn is None:
                # mode=rw: a database file that went away is an error here, not a new empty file
                uri = f"file:{urllib.parse.quote(self.path)}?mode=rw"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            busy, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if not self._failing:  # SQLite's backstop still checkpoints: say so once, not every interval
                log.warning("WAL checkpoint of %s failed (SQLite's own goes on): %s", self.path, exc)
            self._failing = True
            if conn is not None:
                conn.close()
            return None
        if self._failing:
            log.warning("WAL checkpoint of %s works again", self.path)
        self._failing = False
        self.last = (busy, pages, copied)
        if busy or copied < pages:  # a reader's snapshot held some pages back: try again after the rest
            self._due.set()
        return conn
