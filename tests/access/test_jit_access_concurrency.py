"""Many sweepers and many workers on one database: 10,000 memberships expire together (PostgreSQL; a smaller
run on SQLite), two sweepers and two workers run side by side in real threads, each with its own engine as
separate processes would have, and a real webhook receiver counts what arrives: every revoke is written once
and delivered once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from scimjit.access.service import Access
from scimjit.clock import to_micros
from scimjit.config import Settings
from scimjit.delivery.connectors.webhook import verify_signature
from scimjit.engine import JitEngine
from scimjit.scim.schema import USER_URN
from scimjit.store.tables import accounts, groups, memberships, outbox, users
from tests.access_helpers import config

pytestmark = pytest.mark.slow  # ~1 min on PostgreSQL: 10,000 real webhook deliveries


@dataclass
class Receiver:
    """A webhook receiver built for volume: HTTP/1.1 keep-alive, a deep accept queue, a thread per
    connection. It checks every signature and counts each idempotency key it sees more than once."""

    secret: str = "change-me"
    url: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    keys: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = verify_signature(
                    receiver.secret,
                    body,
                    self.headers.get("X-Scimjit-Signature"),
                    self.headers.get("X-Scimjit-Timestamp"),
                )
                with receiver.lock:
                    receiver.keys[self.headers.get("Idempotency-Key", "")] += 1
                    receiver.events.append(json.loads(body))
                    receiver.bad_signatures += not ok
                answer = b"{}"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 512
            daemon_threads = True

        server = Server(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            self.url = f"http://127.0.0.1:{server.server_address[1]}/events"
            yield self
        finally:
            server.shutdown()
            server.server_close()


def seed(db: Any, n: int, now_us: int, expires_us: int) -> None:
    """n users, all in wiki-users for good, all in wiki-admins until `expires_us`, all with a wiki account
    holding the `admin` role. Bulk-loaded with Core, as a big directory would be."""
    ids = [f"user-{i:05d}" for i in range(n)]
    with db.write() as conn:
        conn.execute(
            users.insert(),
            [
                {
                    "id": uid,
                    "user_name": uid,
                    "user_name_ci": uid,
                    "active": True,
                    "data": {"schemas": [USER_URN], "userName": uid, "active": True},
                    "version": 1,
                    "created": now_us,
                    "last_modified": now_us,
                }
                for uid in ids
            ],
        )
        pks = {}
        for name in ("wiki-users", "wiki-admins"):
            pks[name] = conn.execute(
                groups.insert()
                .values(
                    id=name,
                    display_name=name,
                    display_name_ci=name,
                    data={"displayName": name},
                    version=1,
                    created=now_us,
                    last_modified=now_us,
                )
                .returning(groups.c.pk)
            ).scalar_one()
        for name, until in (("wiki-users", None), ("wiki-admins", expires_us)):
            conn.execute(
                memberships.insert(),
                [
                    {
                        "group_pk": pks[name],
                        "member_id": uid,
                        "source": "scim",
                        "member_type": "User",
                        "added_at": now_us,
                        "expires_at": until,
                    }
                    for uid in ids
                ],
            )
        conn.execute(
            accounts.insert(),
            [
                {
                    "application": "wiki",
                    "user_id": uid,
                    "user_name": uid,
                    "status": "active",
                    "roles": ["admin"],
                    "created_at": now_us,
                    "updated_at": now_us,
                    "version": 1,
                }
                for uid in ids
            ],
        )


def test_two_sweepers_and_two_workers_deliver_each_revoke_exactly_once(db, clock):
    n = 10_000 if not db.is_sqlite else 2_000
    with Receiver().running() as hook:
        raw = config(hook.url, jit='worker_batch_size = 64\nsweep_batch_size = 500\noutbox_lease = "5m"')
        now_us = to_micros(clock.now())
        seed(db, n, now_us, now_us + 60_000_000)
        clock.advance(60)  # all 10,000 expire at this instant

        def engine() -> JitEngine:
            return JitEngine(Settings.load(environ={}, document=raw), db, clock)

        sweepers = [Access(engine()).sweeper for _ in range(2)]
        workers = [engine() for _ in range(2)]
        swept: list[int] = [0, 0]
        delivered: list[int] = [0, 0]
        errors: list[BaseException] = []
        sweeping_done = threading.Event()
        start = threading.Barrier(4)

        def sweep(i: int) -> None:
            try:
                start.wait()
                while True:
                    report = sweepers[i].sweep_once()
                    swept[i] += report.memberships_expired
                    if report.work == 0:
                        return
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        def work(i: int) -> None:
            async def loop() -> None:
                start.wait()
                while True:
                    reports = await workers[i].deliverer.deliver_due(worker=f"worker-{i}")
                    delivered[i] += len(reports)
                    if not reports and sweeping_done.is_set() and not pending():
                        break
                    if not reports:
                        await asyncio.sleep(0.01)  # a real worker's poll interval, shortened
                await workers[i].aclose()

            try:
                asyncio.run(loop())
            except BaseException as exc:
                errors.append(exc)

        def pending() -> int:
            with db.read() as conn:
                return int(
                    conn.execute(
                        sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status != "done")
                    ).scalar_one()
                )

        threads = [threading.Thread(target=sweep, args=(i,)) for i in range(2)]
        threads += [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads[:2]:
            t.join(timeout=300)
        sweeping_done.set()
        for t in threads[2:]:
            t.join(timeout=300)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)

        assert sum(swept) == n  # every membership row deleted by exactly one sweeper
        with db.read() as conn:
            written = conn.execute(
                sa.select(outbox.c.type, outbox.c.status, sa.func.count()).group_by(
                    outbox.c.type, outbox.c.status
                )
            ).all()
            roles = Counter(tuple(r) for r in conn.execute(sa.select(accounts.c.roles)).scalars())
        assert written == [("role.revoke", "done", n)]  # one event per user, all delivered
        assert roles == Counter({(): n})
        assert len(hook.events) == n and set(hook.keys.values()) == {1}  # once: no retry, no second worker
        assert hook.bad_signatures == 0
        assert Counter((e["type"], e["user"]["userName"], e["role"]) for e in hook.events) == Counter(
            {("role.revoke", f"user-{i:05d}", "admin"): 1 for i in range(n)}
        )
        assert sum(delivered) == n
