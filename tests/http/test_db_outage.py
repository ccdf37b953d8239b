"""A database outage is a 503 with Retry-After, not a 500, and the server recovers by itself (issue 9).

PostgreSQL is shared with other test runs, so it is never stopped: the server under test reaches it through a
TCP forwarder run here, which can be cut (every open connection dropped, new ones closed on arrival) and
restored. SQLite's "database is locked" (a writer holding the lock past the busy timeout) is the other way the
database is unavailable; it is produced for real with a zero busy timeout.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import orjson
import pytest
import sqlalchemy as sa
from starlette.requests import Request

from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.http.responses import database_unavailable_handler
from scimjit.services import Services
from scimjit.store.db import Database
from tests.jit_helpers import LocalIssuer, WebhookReceiver, add_group, add_user, wiki_config
from tests.live_server import serve

ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"


class CuttableProxy:
    """A TCP forwarder 127.0.0.1:<port> -> PostgreSQL that can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.accepted = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                client.close()  # the database is "down": the connection closes at once
                continue
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones, like a database that went away."""
        self.up = False
        with self._lock:
            dropping, self._open = self._open, []
        for s in dropping:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@contextmanager
def server_through_proxy(
    db: Database, clock, issuer: LocalIssuer
) -> Iterator[tuple[str, CuttableProxy, dict]]:
    url = sa.make_url(db.test_url)  # type: ignore[attr-defined]
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = Database(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    try:
        with WebhookReceiver().running() as hook:
            raw = wiki_config(issuer.url, hook.url)
            settings = Settings.load(
                environ={},
                database_url=proxied.url,
                token_cache_seconds=0,
                document=raw,
            )
            services = Services.build(settings, db=proxied, clock=clock)
            tokens = {
                "admin": services.tokens.create("admin", ["admin"]),
                "wiki": services.tokens.create("wiki-app", ["login"], application="wiki"),
            }
            with serve(create_app(services=services)) as base:
                yield base, proxy, tokens
    finally:
        proxied.dispose()
        proxy.close()


def test_postgresql_going_away_answers_503_with_retry_after_and_recovers(db, clock, issuer):
    if db.is_sqlite:
        pytest.skip("the forwarder stands between the server and PostgreSQL")
    alice = add_user(db, "alice")
    add_group(db, "wiki-users", [alice])
    with server_through_proxy(db, clock, issuer) as (base, proxy, tokens):
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        app = {"Authorization": f"Bearer {tokens['wiki']}"}
        token = issuer.token(clock.now().timestamp(), preferred_username="alice")
        login = {"application": "wiki", "id_token": token}
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/scim/v2/Users", headers=admin).status_code == 200
            first = http.post("/jit/v1/logins", json=login, headers=app)
            assert first.status_code == 200, first.text
            assert first.json()["account"]["status"] == "created"

            proxy.cut()
            for _ in range(3):  # pooled connections are dead, and new ones fail: each probe is a 503
                users = http.get("/scim/v2/Users", headers=admin)
                assert users.status_code == 503, users.text
                assert users.headers["Retry-After"] == "5"
                assert users.headers["content-type"].startswith("application/scim+json")
                body = users.json()
                assert body["schemas"] == [ERROR_URN] and body["status"] == "503"
                assert "unavailable" in body["detail"]
                refused = http.post("/jit/v1/logins", json=login, headers=app)
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"] == "5"
                assert refused.json()["error"] == "unavailable" and refused.json()["detail"]
                assert "Traceback" not in users.text + refused.text
                for hot in (f"/scim/v2/Users/{alice}", '/scim/v2/Users?filter=userName eq "alice"'):
                    read = http.get(hot, headers=admin)  # the reads awaited on the loop (`store.loop_reads`)
                    assert read.status_code == 503 and read.headers["Retry-After"] == "5", read.text
                    assert read.json()["status"] == "503" and "Traceback" not in read.text

            proxy.restore()  # no restart: the pool replaces its dead connections (pool_pre_ping)
            users = http.get("/scim/v2/Users", headers=admin)
            assert users.status_code == 200, users.text
            assert [u["userName"] for u in users.json()["Resources"]] == ["alice"]
            assert http.get(f"/scim/v2/Users/{alice}", headers=admin).json()["userName"] == "alice"
            found = http.get('/scim/v2/Users?filter=userName eq "alice"', headers=admin).json()
            assert found["totalResults"] == 1 and found["Resources"][0]["id"] == alice
            again = http.post("/jit/v1/logins", json=login, headers=app)
            assert again.status_code == 200, again.text
            assert again.json()["account"]["status"] == "existing"


def _request(path: str) -> Request:
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    return Request(scope)


def test_sqlite_database_is_locked_is_a_503(tmp_path):
    """A writer holding SQLite's lock past the busy timeout: the real error, rendered by the real handler."""
    url = f"sqlite:///{tmp_path}/locked.db"
    holder = sa.create_engine(url)
    impatient = sa.create_engine(url, connect_args={"timeout": 0})
    with holder.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.commit()
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        with pytest.raises(sa.exc.OperationalError) as locked, impatient.connect() as other:
            other.exec_driver_sql("BEGIN IMMEDIATE")
        conn.rollback()
    holder.dispose()
    impatient.dispose()
    assert "database is locked" in str(locked.value)

    scim = asyncio.run(database_unavailable_handler(_request("/scim/v2/Users"), locked.value))
    assert scim.status_code == 503 and scim.headers["Retry-After"] == "1"
    body = orjson.loads(scim.body)
    assert body["schemas"] == [ERROR_URN] and body["status"] == "503" and "busy" in body["detail"]
    jit = asyncio.run(database_unavailable_handler(_request("/jit/v1/logins"), locked.value))
    assert jit.status_code == 503 and jit.headers["Retry-After"] == "1"
    assert orjson.loads(jit.body) == {"error": "unavailable", "detail": body["detail"]}
