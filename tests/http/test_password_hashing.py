"""Passwords are hashed off the event loop, before the write transaction, at OWASP's scrypt cost (issue 11
§1b). Ordered by events, never timed: the hash is held inside its worker thread until the server has answered
other requests (a read, and a write to the very same user), which it can only do if neither the event loop nor
the user's row lock is held while hashing."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from scimjit.store import passwords
from scimjit.store.tables import users

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
LIVENESS = 20  # seconds: only so that a broken server fails the test instead of hanging it


class HeldHash:
    """`hashlib.scrypt`, held until `release()`, in whatever thread calls it; records the order of events.
    Calls after the release (later hashes, `verify_password`) run through unrecorded."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.released = threading.Event()
        self.events: list[str] = []
        self._real = hashlib.scrypt

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        if not self.released.is_set():
            self.started.set()
            self.released.wait(LIVENESS)
            self.events.append("hashed")
        return self._real(*args, **kwargs)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldHash]:
    hold = HeldHash()
    monkeypatch.setattr(hashlib, "scrypt", hold)
    yield hold
    hold.release()


def _in_thread(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(response=call()))
    thread.start()
    return thread, out


def _stored_hash(server, user_id: str) -> str:
    with server.services.db.read() as conn:
        return conn.execute(sa.select(users.c.password_hash).where(users.c.id == user_id)).scalar_one()


def test_the_server_answers_while_a_password_is_hashed(server, held):
    token = {"Authorization": f"Bearer {server.admin_token}"}
    other = server.client.post("/Users", json={"schemas": [USER], "userName": "other"}).json()
    thread, out = _in_thread(
        lambda: httpx.post(
            f"{server.scim}/Users",
            json={"schemas": [USER], "userName": "pw", "password": "t1meMa$heen"},
            headers=token,
            timeout=LIVENESS * 3,
        )
    )
    assert held.started.wait(LIVENESS)
    r = httpx.get(f"{server.scim}/Users/{other['id']}", headers=token, timeout=LIVENESS * 2)
    held.events.append("read answered")
    assert r.status_code == 200
    held.release()
    thread.join(LIVENESS * 2)
    assert held.events == ["read answered", "hashed"]
    created = out["response"]
    assert created.status_code == 201 and "password" not in created.json()
    stored = _stored_hash(server, created.json()["id"])
    assert stored.startswith("scrypt$131072$8$1$")  # OWASP: N=2^17, r=8, p=1
    assert passwords.verify_password("t1meMa$heen", stored)


def test_a_patch_holds_no_transaction_while_its_password_is_hashed(server, held):
    token = {"Authorization": f"Bearer {server.admin_token}"}
    user = server.client.post("/Users", json={"schemas": [USER], "userName": "pw2"}).json()
    set_password = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "password", "value": "N3w!pass"}],
    }
    thread, out = _in_thread(
        lambda: httpx.patch(
            f"{server.scim}/Users/{user['id']}", json=set_password, headers=token, timeout=LIVENESS * 3
        )
    )
    assert held.started.wait(LIVENESS)
    rename = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": "Two"}]}
    r = httpx.patch(f"{server.scim}/Users/{user['id']}", json=rename, headers=token, timeout=LIVENESS * 2)
    held.events.append("other write answered")
    assert r.status_code == 200  # the same user's row was not locked by the PATCH that is hashing
    held.release()
    thread.join(LIVENESS * 2)
    assert held.events == ["other write answered", "hashed"]
    assert out["response"].status_code == 200
    after = server.client.get(f"/Users/{user['id']}").json()
    assert after["displayName"] == "Two" and after["meta"]["version"] == 'W/"3"'  # both writes, in order
    assert passwords.verify_password("N3w!pass", _stored_hash(server, user["id"]))


def test_bulk_password_writes_hash_between_operations(server, held):
    token = {"Authorization": f"Bearer {server.admin_token}"}
    body = {
        "schemas": [BULK],
        "Operations": [
            {
                "method": "POST",
                "bulkId": f"u{i}",
                "path": "/Users",
                "data": {"schemas": [USER], "userName": f"bulk{i}", "password": f"pw-{i}-secret"},
            }
            for i in range(2)
        ],
    }
    thread, out = _in_thread(
        lambda: httpx.post(f"{server.scim}/Bulk", json=body, headers=token, timeout=LIVENESS * 3)
    )
    assert held.started.wait(LIVENESS)
    r = httpx.get(f"{server.scim}/ServiceProviderConfig", headers=token, timeout=LIVENESS * 2)
    held.events.append("read answered")
    assert r.status_code == 200
    held.release()
    thread.join(LIVENESS * 2)
    assert held.events == ["read answered", "hashed"]
    results = out["response"].json()["Operations"]
    assert [op["status"] for op in results] == ["201", "201"]
    for i, op in enumerate(results):
        stored = _stored_hash(server, op["location"].rsplit("/", 1)[1])
        assert stored.startswith("scrypt$131072$") and passwords.verify_password(f"pw-{i}-secret", stored)


def test_hashes_made_with_the_old_parameters_still_verify():
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"legacy", salt=salt, n=2**14, r=8, p=1, dklen=32)
    b64 = [base64.urlsafe_b64encode(x).rstrip(b"=").decode() for x in (salt, digest)]
    stored = "$".join(["scrypt", "16384", "8", "1", *b64])
    assert passwords.verify_password("legacy", stored) and not passwords.verify_password("other", stored)
