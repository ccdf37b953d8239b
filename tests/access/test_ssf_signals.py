"""Shared Signals for access that ends or changes per application: a grant that expires or is revoked, a role
revoked by a membership change (CAEP token-claims-change with the new roles), and an account disabled in an
application when its entitlement ends (CAEP session-revoked, scoped to the application). The SETs go to a poll
stream's queue in the transaction of the change; exactly one per change, none for unsubscribed users."""

from __future__ import annotations

from typing import Any

import pytest

from scimjit.clock import to_micros
from scimjit.delivery.signals import SESSION_REVOKED, TOKEN_CLAIMS_CHANGE
from scimjit.store import ssf
from scimjit.store.ssf import Stream
from tests.access_helpers import POLICY, Directory, clear_outbox, config, give_account, make_access, summary

ISSUER = "https://scim.example.com"


@pytest.fixture
def access(db, clock):
    raw = config(jit=POLICY.format(approvals=1))
    raw["server"] = {"base_url": ISSUER}
    return make_access(db, clock, raw)


@pytest.fixture
def directory(db, clock, access):
    return Directory(db, clock, access)


def poll_stream(db, clock, *events: str) -> str:
    now_us = to_micros(clock.now())
    stream = Stream(
        "s1", "risk", ssf.POLL, None, None, list(events), "risk", None, ssf.ENABLED, None, now_us, now_us
    )
    with db.write() as conn:
        ssf.insert(conn, stream)
    return stream.id


def subscribe(db, clock, stream_id: str, user_id: str) -> None:
    with db.write() as conn:
        ssf.add_subject(conn, stream_id, f"opaque:{user_id}", {"format": "opaque", "id": user_id}, 0)


def queued(db, stream_id: str) -> list[tuple[str, dict[str, Any]]]:
    with db.read() as conn:
        return [
            (next(iter(c["events"])), next(iter(c["events"].values())))
            for c in ssf.waiting(conn, stream_id, 100)
        ]


def test_an_expired_and_a_revoked_grant_each_change_the_roles_claim_once(db, clock, access, directory):
    stream = poll_stream(db, clock, TOKEN_CLAIMS_CHANGE, SESSION_REVOKED)
    alice, bob = directory.user("alice"), directory.user("bob")
    directory.group("wiki-users", [alice, bob])
    directory.group("prod-admins")
    directory.group("engineers", [alice, bob])
    directory.group("oncall", [alice, bob])
    give_account(db, "wiki", alice)
    give_account(db, "wiki", bob)
    subscribe(db, clock, stream, alice)  # bob has no subscriber
    access.engine.signals.invalidate()

    access.create_grant(user="alice", group="prod-admins", duration="1h", actor="admin")
    grant = access.create_grant(user="bob", group="prod-admins", duration="1h", actor="admin")
    assert queued(db, stream) == [
        (TOKEN_CLAIMS_CHANGE, {"event_timestamp": int(clock.now().timestamp()), "claims": {"roles": ["prod"]},
                               "initiating_entity": "policy", "application": "wiki"}),
    ]  # fmt: skip
    clear_outbox(db)
    with db.write() as conn:
        ssf.acknowledge(conn, stream, [c["jti"] for c in ssf.waiting(conn, stream, 100)])

    access.revoke_grant(grant["id"], actor="admin")  # bob's: nothing for the stream
    assert queued(db, stream) == []
    clock.advance(3600)
    access.sweeper.sweep_once()  # alice's expires
    assert ("role.revoke", "wiki", "alice", "prod") in summary(db)
    ((type_, body),) = queued(db, stream)
    assert type_ == TOKEN_CLAIMS_CHANGE and body["claims"] == {"roles": []} and body["application"] == "wiki"
    access.sweeper.sweep_once()
    assert len(queued(db, stream)) == 1  # nothing twice


def test_an_account_that_loses_its_entitlement_revokes_the_sessions_of_that_application(
    db, clock, access, directory
):
    stream = poll_stream(db, clock, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE)
    alice = directory.user("alice")
    users = directory.group("wiki-users", [alice])
    give_account(db, "wiki", alice)
    subscribe(db, clock, stream, alice)
    access.engine.signals.invalidate()

    directory.remove(users, alice)  # on_unentitled = disable, no grace period
    assert ("account.disable", "wiki", "alice", None) in summary(db)
    ((type_, body),) = queued(db, stream)
    assert type_ == SESSION_REVOKED and body["application"] == "wiki"
    assert body["reason_admin"] == {"en": "Access to application wiki ended"}


def test_an_idle_account_reclaimed_revokes_the_sessions_of_that_application(db, clock):
    """Idle reclaim ends an account downstream like lost entitlement does, so a subscriber hears the same CAEP
    session-revoked (scoped to the application), once, and nothing for users it did not subscribe to."""
    raw = config(jit=POLICY.format(approvals=1))
    raw["server"] = {"base_url": ISSUER}
    raw["applications"][0]["idle_after"] = "30d"
    access = make_access(db, clock, raw)
    directory = Directory(db, clock, access)
    stream = poll_stream(db, clock, SESSION_REVOKED)
    alice, bob = directory.user("alice"), directory.user("bob")
    directory.group("wiki-users", [alice, bob])
    give_account(db, "wiki", alice)  # created at the epoch, never logged in since: idle
    give_account(db, "wiki", bob)
    subscribe(db, clock, stream, alice)
    access.engine.signals.invalidate()
    clear_outbox(db)

    assert access.sweeper.sweep_once().idle_reclaimed == 2
    assert queued(db, stream) == [
        (SESSION_REVOKED, {"event_timestamp": int(clock.now().timestamp()), "initiating_entity": "policy",
                           "reason_admin": {"en": "Access to application wiki ended"}, "application": "wiki"}),
    ]  # fmt: skip
    assert access.sweeper.sweep_once().idle_reclaimed == 0
    assert len(queued(db, stream)) == 1
