"""Shared Signals out: scimjit as an SSF 1.0 transmitter, against a real receiver.

The receiver is an HTTP server on 127.0.0.1 that verifies every SET's signature against the JWKS it fetches from
the `jwks_uri` scimjit publishes in /.well-known/ssf-configuration, and checks `typ`, `iss`, `aud`, `jti` and
`toe`. SCIM changes go over HTTP to a real scimjit; the outbox is driven with `deliver_due`, by fresh
deliverers where a restarted worker is the point. On SQLite and PostgreSQL; frozen clock, no sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from scimjit.clock import FrozenClock
from scimjit.config import Settings
from scimjit.delivery import outbox
from scimjit.delivery.deliverer import Deliverer
from scimjit.delivery.signals import (
    ACCOUNT_DISABLED,
    ACCOUNT_ENABLED,
    ACCOUNT_PURGED,
    CREDENTIAL_CHANGE,
    POLL_URN,
    PUSH_URN,
    SESSION_REVOKED,
    VERIFICATION,
)
from scimjit.http.app import create_app
from scimjit.services import Services
from scimjit.store.db import Database
from scimjit.store.tables import audit_log
from scimjit.store.tables import outbox as outbox_table
from tests.jit_helpers import _QuietHandler, _serve
from tests.live_server import free_port, serve

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass
class Receiver:
    """An SSF push receiver (RFC 8935): verifies each SET against scimjit's published JWKS and keeps the valid
    ones; `script` holds statuses to answer first (a 503 outage, say)."""

    issuer: str
    aud: str
    authorization: str = "Bearer receiver-secret"
    url: str = ""
    sets: list[dict[str, Any]] = field(default_factory=list)  # verified claims, every delivery (repeats too)
    attempts: list[str] = field(default_factory=list)  # the jti of every request, answered or not
    rejected: list[str] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    kids: list[str] = field(default_factory=list)  # the signing key of each verified SET
    fetches: int = 0  # JWKS fetches
    _jwks: KeySet | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def jtis(self, type_: str | None = None) -> list[str]:
        return [s["jti"] for s in self.sets if type_ is None or type_ in s["events"]]

    def keys(self, refresh: bool = False) -> KeySet:
        if self._jwks is None or refresh:
            self.fetches += 1
            meta = httpx.get(f"{self.issuer}/.well-known/ssf-configuration").json()
            self._jwks = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
        return self._jwks

    def check(self, token: str, headers: Any) -> dict[str, Any]:
        assert headers.get("Content-Type") == "application/secevent+jwt"
        assert headers.get("Authorization") == self.authorization
        try:
            decoded = jwt.decode(token, self.keys(), algorithms=["ES256"])
        except (JoseError, ValueError):  # an unknown kid: the keys rotated, fetch them again
            decoded = jwt.decode(token, self.keys(refresh=True), algorithms=["ES256"])
        claims = dict(decoded.claims)
        assert decoded.header["typ"] == "secevent+jwt"
        self.kids.append(decoded.header["kid"])
        assert claims["iss"] == self.issuer and claims["aud"] == self.aud
        assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
        assert isinstance(claims["toe"], int) and isinstance(claims["iat"], int) and "exp" not in claims
        assert len(claims["events"]) == 1  # SSF: one event per SET
        return claims

    def handle(self, token: str, headers: Any) -> int:
        with self._lock:
            try:
                claims = self.check(token, headers)
            except AssertionError:
                self.rejected.append(token)
                return 400
            self.attempts.append(claims["jti"])
            if self.script:
                return self.script.pop(0)
            self.sets.append(claims)
            return 202


@contextmanager
def running(receiver: Receiver) -> Iterator[Receiver]:
    """Serve `receiver` on 127.0.0.1 until the block ends."""

    class Handler(_QuietHandler):
        def do_POST(self) -> None:
            token = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            status = receiver.handle(token, self.headers)
            body = b"" if status == 202 else b'{"err": "invalid_request", "description": "refused"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with _serve(Handler) as url:
        receiver.url = url + "/events"
        yield receiver


class Scimjit:
    def __init__(self, url: str, services: Services, clock: FrozenClock, admin: str) -> None:
        self.url = url
        self.services = services
        self.clock = clock
        self.scim = httpx.Client(base_url=f"{url}/scim/v2", headers={"Authorization": f"Bearer {admin}"})

    def receiver_client(self, name: str, *scopes: str) -> httpx.Client:
        token = self.services.tokens.create(name, list(scopes or ["ssf"]))
        return httpx.Client(base_url=f"{self.url}/ssf/v1", headers={"Authorization": f"Bearer {token}"})

    def user(self, user_name: str, **extra: Any) -> str:
        r = self.scim.post("/Users", json={"schemas": [USER], "userName": user_name, "active": True, **extra})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def patch(self, user_id: str, ops: list[dict[str, Any]]) -> None:
        r = self.scim.patch(f"/Users/{user_id}", json={"schemas": [PATCH], "Operations": ops})
        assert r.status_code == 200, r.text

    def deliverer(self) -> Deliverer:
        """A fresh deliverer: what a restarted worker process would use."""
        engine = self.services.engine
        return Deliverer(self.services.db, self.clock, engine.config, engine.connector_for)

    def deliver(self, deliverer: Deliverer | None = None) -> list[Any]:
        return asyncio.run((deliverer or self.deliverer()).drain())

    def outbox_rows(self) -> list[Any]:
        with self.services.db.read() as conn:
            return list(conn.execute(sa.select(outbox_table).order_by(outbox_table.c.id)))


@pytest.fixture
def scimjit(db: Database, clock: FrozenClock) -> Iterator[Scimjit]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0, base_url=base)
    services = Services.build(settings, db=db, clock=clock, deprovision=True)
    admin = services.tokens.create("test-admin", ["admin"])
    with serve(create_app(services=services), port) as url:
        yield Scimjit(url, services, clock, admin)


def receiver_for(scimjit: Scimjit, aud: str) -> AbstractContextManager[Receiver]:
    return running(Receiver(issuer=scimjit.url, aud=aud))


def push_stream(client: httpx.Client, receiver: Receiver, *events: str) -> str:
    r = client.post(
        "/stream",
        json={
            "delivery": {
                "method": PUSH_URN,
                "endpoint_url": receiver.url,
                "authorization_header": receiver.authorization,
            },
            "events_requested": list(events),
            "aud": receiver.aud,
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["stream_id"])


def add_subject(client: httpx.Client, stream_id: str, subject: dict[str, Any]) -> None:
    r = client.post("/subjects/add", json={"stream_id": stream_id, "subject": subject})
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------- push


def test_a_deactivated_user_gives_each_stream_one_account_disabled_set_across_an_outage_and_a_restart(
    scimjit,
):
    a_client, b_client = scimjit.receiver_client("risk-a"), scimjit.receiver_client("risk-b")
    with (
        receiver_for(scimjit, "https://a.example") as a,
        receiver_for(scimjit, "https://b.example") as b,
    ):
        stream_a = push_stream(a_client, a, ACCOUNT_DISABLED, SESSION_REVOKED)
        stream_b = push_stream(b_client, b, ACCOUNT_DISABLED)
        alice = scimjit.user("alice@example.com", emails=[{"value": "Alice@Example.com", "primary": True}])
        add_subject(a_client, stream_a, {"format": "email", "email": "alice@example.com"})
        add_subject(b_client, stream_b, {"format": "opaque", "id": alice})
        bob = scimjit.user("bob@example.com")  # nobody subscribed to bob

        scimjit.patch(alice, [{"op": "replace", "path": "active", "value": False}])
        scimjit.patch(bob, [{"op": "replace", "path": "active", "value": False}])
        rows = scimjit.outbox_rows()
        assert sorted(r.application for r in rows) == sorted([f"ssf:{stream_a}"] * 2 + [f"ssf:{stream_b}"])

        # receiver A is down (503) for its first SET; a worker claims B's and dies without answering
        a.script.append(503)
        crashed = scimjit.deliverer()
        with scimjit.services.db.write() as conn:
            leased = outbox.claim_due(conn, worker="dead", now=scimjit.clock.now(), lease=30, limit=100)
        assert len(leased) == 2  # one per (stream, user) at a time: A's second SET waits behind its first
        scimjit.clock.advance(31)  # the dead worker's lease runs out
        first = scimjit.deliver(crashed)
        assert sorted(r.status for r in first) == ["done", "pending"]
        scimjit.clock.advance(3600)  # past the backoff: a new worker (a restart) delivers the retry
        scimjit.deliver()
        scimjit.deliver()  # and another round finds nothing more to send

        assert (
            len(a.attempts) == 3 and a.attempts.count(a.attempts[0]) == 2
        )  # the 503'd SET, retried as itself
        assert sorted(len(s["events"]) for s in a.sets) == [1, 1]
        assert len(a.jtis(ACCOUNT_DISABLED)) == 1 and len(a.jtis(SESSION_REVOKED)) == 1
        assert len(set(a.jtis())) == len(a.jtis())
        (b_set,) = b.sets
        assert list(b_set["events"]) == [ACCOUNT_DISABLED] and b.attempts == [b_set["jti"]]
        (a_disabled,) = [s for s in a.sets if ACCOUNT_DISABLED in s["events"]]
        assert a_disabled["sub_id"] == {"format": "email", "email": "alice@example.com"}
        assert b_set["sub_id"] == {"format": "opaque", "id": alice}
        assert {s["txn"] for s in a.sets} == {b_set["txn"]}  # one change: one txn across SETs and streams
        assert a.rejected == [] and b.rejected == []
        assert {r.status for r in scimjit.outbox_rows()} == {"done"}


def test_no_stream_no_rows_and_a_refused_set_is_a_dead_letter(scimjit):
    alice = scimjit.user("alice@example.com")
    scimjit.patch(alice, [{"op": "replace", "path": "active", "value": False}])
    assert scimjit.outbox_rows() == []  # no stream: nothing written for a SCIM-only deployment

    client = scimjit.receiver_client("risk")
    with receiver_for(scimjit, "https://risk.example") as receiver:
        stream = push_stream(client, receiver, ACCOUNT_ENABLED)
        add_subject(client, stream, {"format": "opaque", "id": alice})
        receiver.script.append(400)  # RFC 8935: 400 {"err": ...} is the receiver refusing that SET
        scimjit.patch(alice, [{"op": "replace", "path": "active", "value": True}])
        (report,) = scimjit.deliver()
        assert report.status == "dead" and "HTTP 400" in (report.error or "")


def test_a_verification_set_carries_the_state_back_and_a_deleted_stream_drops_its_sets(scimjit):
    client = scimjit.receiver_client("risk")
    with receiver_for(scimjit, "https://risk.example") as receiver:
        stream = push_stream(client, receiver, ACCOUNT_DISABLED)
        r = client.post("/verify", json={"stream_id": stream, "state": "xyz-1"})
        assert r.status_code == 204
        scimjit.deliver()
        (verification,) = receiver.sets
        assert verification["events"] == {VERIFICATION: {"state": "xyz-1"}}
        assert verification["sub_id"] == {"format": "opaque", "id": stream}

        alice = scimjit.user("alice@example.com")
        add_subject(client, stream, {"format": "opaque", "id": alice})
        scimjit.patch(alice, [{"op": "replace", "path": "active", "value": False}])
        assert client.delete("/stream", params={"stream_id": stream}).status_code == 204
        (report,) = scimjit.deliver()
        assert report.status == "done" and report.result is not None and report.result.details["dropped"]
        assert len(receiver.sets) == 1


# ------------------------------------------------------------------------------------------- poll


def verify_polled(scimjit: Scimjit, sets: dict[str, str], aud: str) -> list[dict[str, Any]]:
    jwks = KeySet.import_key_set(httpx.get(f"{scimjit.url}/.well-known/jwks.json").json())
    out = []
    for jti, token in sets.items():
        decoded = jwt.decode(token, jwks, algorithms=["ES256"])
        assert decoded.header["typ"] == "secevent+jwt"
        claims = dict(decoded.claims)
        assert claims["jti"] == jti and claims["iss"] == scimjit.url and claims["aud"] == aud
        out.append(claims)
    return out


def test_a_poll_client_that_acknowledges_sees_nothing_twice(scimjit):
    client = scimjit.receiver_client("poller")
    events = [ACCOUNT_DISABLED, ACCOUNT_ENABLED, ACCOUNT_PURGED, CREDENTIAL_CHANGE, SESSION_REVOKED]
    r = client.post("/stream", json={"delivery": {"method": POLL_URN}, "events_requested": events})
    assert r.status_code == 201, r.text
    config = r.json()
    stream, aud = config["stream_id"], config["aud"]
    assert aud == "poller" and config["delivery"]["endpoint_url"] == f"{scimjit.url}/ssf/v1/poll/{stream}"
    assert sorted(config["events_delivered"]) == sorted(events)
    alice = scimjit.user("alice@example.com")
    add_subject(client, stream, {"format": "iss_sub", "iss": scimjit.url, "sub": alice})

    scimjit.patch(alice, [{"op": "replace", "path": "active", "value": False}])
    scimjit.patch(alice, [{"op": "replace", "path": "active", "value": True}])
    scimjit.patch(alice, [{"op": "replace", "path": "password", "value": "n3w-Passw0rd!"}])
    assert scimjit.scim.delete(f"/Users/{alice}").status_code == 204
    assert scimjit.outbox_rows() == []  # poll SETs wait in their own queue, not for the worker

    poll = f"/poll/{stream}"
    first = client.post(poll, json={"maxEvents": 2, "returnImmediately": True}).json()
    assert first["moreAvailable"] is True and len(first["sets"]) == 2
    again = client.post(poll, json={"maxEvents": 2, "returnImmediately": True}).json()
    assert again["sets"].keys() == first["sets"].keys()  # unacknowledged: handed out again, same jtis

    seen: list[dict[str, Any]] = verify_polled(scimjit, first["sets"], aud)
    answer = client.post(poll, json={"ack": list(first["sets"]), "maxEvents": 10}).json()
    assert answer["moreAvailable"] is False and not set(answer["sets"]) & set(first["sets"])
    seen += verify_polled(scimjit, answer["sets"], aud)
    last = client.post(poll, json={"ack": list(answer["sets"]), "returnImmediately": True}).json()
    assert last == {"sets": {}, "moreAvailable": False}

    # paused: SETs are held (none handed out), enabled: they come; disabled: what waited is dropped
    bob = scimjit.user("bob@example.com")
    add_subject(client, stream, {"format": "opaque", "id": bob})
    assert client.post("/status", json={"stream_id": stream, "status": "paused"}).status_code == 200
    scimjit.patch(bob, [{"op": "replace", "path": "active", "value": False}])
    assert client.post(poll, json={}).json() == {"sets": {}, "moreAvailable": False}
    client.post("/status", json={"stream_id": stream, "status": "enabled"})
    assert len(client.post(poll, json={}).json()["sets"]) == 2
    client.post("/status", json={"stream_id": stream, "status": "disabled"})
    client.post("/status", json={"stream_id": stream, "status": "enabled"})
    assert client.post(poll, json={}).json() == {"sets": {}, "moreAvailable": False}

    types = [next(iter(s["events"])) for s in seen]
    assert types == [ACCOUNT_DISABLED, SESSION_REVOKED, ACCOUNT_ENABLED, CREDENTIAL_CHANGE, ACCOUNT_PURGED]
    assert len({s["jti"] for s in seen}) == 5
    assert all(s["sub_id"] == {"format": "iss_sub", "iss": scimjit.url, "sub": alice} for s in seen)
    assert seen[3]["events"][CREDENTIAL_CHANGE]["credential_type"] == "password"


# ------------------------------------------------------------------------------------------- management


def test_stream_configuration_status_and_subjects(scimjit):
    meta = httpx.get(f"{scimjit.url}/.well-known/ssf-configuration").json()
    assert meta["issuer"] == scimjit.url and meta["jwks_uri"] == f"{scimjit.url}/.well-known/jwks.json"
    assert meta["delivery_methods_supported"] == [PUSH_URN, POLL_URN] and meta["default_subjects"] == "NONE"
    assert meta["configuration_endpoint"] == f"{scimjit.url}/ssf/v1/stream"
    client = scimjit.receiver_client("risk")
    with receiver_for(scimjit, "risk") as receiver:
        stream = push_stream(client, receiver, ACCOUNT_DISABLED, "urn:example:unknown")
        got = client.get("/stream", params={"stream_id": stream}).json()
        assert got["events_delivered"] == [ACCOUNT_DISABLED] and "authorization_header" not in got["delivery"]
        assert [s["stream_id"] for s in client.get("/stream").json()] == [stream]

        for bad in (
            {"method": {}},
            {"method": PUSH_URN},
            {"method": PUSH_URN, "endpoint_url": "http://x.example"},
        ):
            r = client.post(
                "/stream", json={"delivery": bad}
            )  # found by schemathesis: a dict method was a 500
            assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        r = client.patch("/stream", json={"stream_id": stream, "events_requested": [ACCOUNT_PURGED]})
        assert r.status_code == 200 and r.json()["events_delivered"] == [ACCOUNT_PURGED]
        assert r.json()["delivery"]["endpoint_url"] == receiver.url  # PATCH keeps what it was not sent
        r = client.put("/stream", json={"stream_id": stream, "delivery": {"method": POLL_URN}})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"  # the method cannot change
        r = client.put(
            "/stream",
            json={"stream_id": stream, "delivery": {"method": PUSH_URN, "endpoint_url": receiver.url}},
        )
        assert r.status_code == 200 and r.json()["events_requested"] == []  # PUT replaces
        with scimjit.services.db.read() as conn:
            from scimjit.store import ssf

            stored = ssf.get(conn, stream)
        assert stored is not None and stored.authorization_header is None

        assert client.get("/status", params={"stream_id": stream}).json() == {
            "stream_id": stream,
            "status": "enabled",
        }
        r = client.post("/status", json={"stream_id": stream, "status": "paused", "reason": "maintenance"})
        assert r.json() == {"stream_id": stream, "status": "paused", "reason": "maintenance"}
        assert client.post("/status", json={"stream_id": stream, "status": "off"}).status_code == 400

        bad = client.post("/subjects/add", json={"stream_id": stream, "subject": {"format": "phone_number"}})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_subject"
        foreign = {"format": "iss_sub", "iss": "https://elsewhere", "sub": "x"}
        assert client.post("/subjects/add", json={"stream_id": stream, "subject": foreign}).status_code == 400
        subject = {"format": "email", "email": "a@example.com"}
        add_subject(client, stream, subject)
        add_subject(client, stream, subject)  # idempotent
        remove = client.post("/subjects/remove", json={"stream_id": stream, "subject": subject})
        assert remove.status_code == 204
        remove = client.post("/subjects/remove", json={"stream_id": stream, "subject": subject})
        assert remove.status_code == 404

        assert client.delete("/stream", params={"stream_id": stream}).status_code == 204
        assert client.get("/stream", params={"stream_id": stream}).status_code == 404
        assert client.get("/stream").json() == []
    with scimjit.services.db.read() as conn:
        trail = conn.execute(
            sa.select(audit_log.c.action, audit_log.c.actor)
            .where(audit_log.c.resource_type == "SsfStream")
            .order_by(audit_log.c.id)
        ).all()
    assert [tuple(t) for t in trail] == [
        (action, "risk")
        for action in (
            "ssf.stream.create", "ssf.stream.update", "ssf.stream.update", "ssf.stream.status",
            "ssf.subject.add", "ssf.subject.add", "ssf.subject.remove", "ssf.stream.delete",
        )
    ]  # fmt: skip


def test_receivers_need_the_ssf_scope_and_see_only_their_own_streams(scimjit):
    anonymous = httpx.get(f"{scimjit.url}/ssf/v1/stream")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
    scim_only = scimjit.receiver_client("directory", "scim:read")
    assert scim_only.get("/stream").status_code == 403
    mine, theirs = scimjit.receiver_client("risk-a"), scimjit.receiver_client("risk-b")
    r = mine.post("/stream", json={"delivery": {"method": POLL_URN}, "events_requested": [ACCOUNT_DISABLED]})
    stream = r.json()["stream_id"]
    assert theirs.get("/stream").json() == []
    assert theirs.get("/stream", params={"stream_id": stream}).status_code == 404
    assert theirs.get("/status", params={"stream_id": stream}).status_code == 404
    assert theirs.patch("/stream", json={"stream_id": stream, "description": "x"}).status_code == 404
    assert theirs.post(f"/poll/{stream}", json={}).status_code == 404
    subject = {"format": "opaque", "id": "u1"}
    assert theirs.post("/subjects/add", json={"stream_id": stream, "subject": subject}).status_code == 404
    assert theirs.post("/verify", json={"stream_id": stream}).status_code == 404
    assert theirs.delete("/stream", params={"stream_id": stream}).status_code == 404
    assert mine.get("/stream", params={"stream_id": stream}).status_code == 200


def test_without_base_url_the_server_is_no_transmitter(db, clock):
    settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0)
    services = Services.build(settings, db=db, clock=clock)
    token = services.tokens.create("risk", ["ssf"])
    with serve(create_app(services=services)) as url:
        r = httpx.get(f"{url}/.well-known/ssf-configuration")
        assert r.status_code == 404 and r.json()["error"] == "ssf_not_configured"
        r = httpx.get(f"{url}/ssf/v1/stream", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404 and r.json()["error"] == "ssf_not_configured"


def test_a_paused_push_stream_holds_its_sets_and_a_key_rotation_is_followed_by_the_receiver(scimjit):
    client = scimjit.receiver_client("risk")
    with receiver_for(scimjit, "risk") as receiver:
        stream = push_stream(client, receiver, ACCOUNT_DISABLED, ACCOUNT_ENABLED)
        alice = scimjit.user("alice@example.com")
        add_subject(client, stream, {"format": "opaque", "id": alice})
        client.post("/status", json={"stream_id": stream, "status": "paused"})
        scimjit.patch(alice, [{"op": "replace", "path": "active", "value": False}])
        (held,) = scimjit.deliver()
        assert held.status == "pending" and receiver.attempts == []  # not sent while paused
        client.post("/status", json={"stream_id": stream, "status": "enabled"})
        scimjit.clock.advance(120)
        scimjit.deliver()
        (disabled,) = receiver.sets
        assert disabled["jti"] == held.event_id  # the outbox row's idempotency key is the SET's jti

        scimjit.services.engine.signer.rotate(immediately=True)  # a leaked key: the new one signs at once
        scimjit.patch(alice, [{"op": "replace", "path": "active", "value": True}])
        scimjit.deliver()
        assert [next(iter(s["events"])) for s in receiver.sets] == [ACCOUNT_DISABLED, ACCOUNT_ENABLED]
        assert receiver.rejected == [] and receiver.kids[0] != receiver.kids[-1]
        assert receiver.fetches == 2  # the JWKS again on meeting the new kid
