"""TTL memberships, grants and the sweeper, driven by a frozen clock (no sleeps), on SQLite and PostgreSQL:
expiry is visible to every read at the instant it happens; the sweeper writes the revokes; sources overlap;
grace periods; scheduled starts; expiry notices."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.entitlement import identity, ledger
from scimjit.jiterrors import JitError
from scimjit.store import groups as group_store
from scimjit.store import users as user_store
from scimjit.store.tables import audit_log, grants, memberships
from tests.access_helpers import (
    POLICY,
    Directory,
    account,
    clear_outbox,
    config,
    events,
    give_account,
    make_access,
    summary,
)


@pytest.fixture
def access(db, clock):
    return make_access(db, clock, config(jit=POLICY.format(approvals=1)))


@pytest.fixture
def directory(db, clock, access):
    return Directory(db, clock, access)


def _grant(access, user, group, **kwargs):
    return access.create_grant(user=user, group=group, actor="admin", **kwargs)


def _refs(db, access, user_id, now_us):
    app = access.engine.apps["wiki"]
    with db.read() as conn:
        return identity.member_refs(conn, app, user_id, now_us)


def test_ttl_expiry_is_visible_at_read_time_and_the_sweep_sends_the_revoke(db, clock, access, directory):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    admins = directory.group("wiki-admins", [alice], membershipTTL=3600)
    give_account(db, "wiki", alice, ["admin"])
    clear_outbox(db)

    clock.advance(3599)
    assert [m["value"] for m in directory.read_group(admins)["members"]] == [alice]
    assert "wiki-admins" in _refs(db, access, alice, to_micros(clock.now()))

    clock.advance(1)  # the instant of expiry; the sweeper has not run
    now_us = to_micros(clock.now())
    assert "members" not in directory.read_group(admins)
    assert [g["display"] for g in directory.read_user(alice)["groups"]] == ["wiki-users"]
    assert "wiki-admins" not in _refs(db, access, alice, now_us)  # the login hook's entitlement and roles
    with db.read() as conn:
        assert group_store.members_of(conn, [_pk(db, admins)], now_us, "") == {_pk(db, admins): []}
        assert user_store.groups_of(conn, [alice], now_us)[alice] == [(_id(db, "wiki-users"), "wiki-users")]
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(memberships)).scalar() == 2
        )  # not swept yet
    assert events(db) == []

    report = access.sweeper.sweep_once()
    assert (report.memberships_expired, report.revoked, report.events) == (1, 1, 1)
    assert summary(db) == [("role.revoke", "wiki", "alice", "admin")]
    assert account(db, "wiki", alice).roles == []
    assert access.sweeper.sweep_once().work == 0  # nothing twice
    with db.read() as conn:
        expired = conn.execute(
            sa.select(audit_log.c.details).where(audit_log.c.action == "membership.expire")
        )
        assert [d["expired"] for d in expired.scalars()] == [1]


def test_expiry_sends_nothing_for_users_without_an_account(db, clock, access, directory):
    people = [directory.user(f"u{i}") for i in range(5)]
    directory.group("wiki-users", people, membershipTTL=60)
    give_account(db, "wiki", people[0])
    clear_outbox(db)
    clock.advance(60)
    report = access.sweeper.sweep_once()
    assert report.memberships_expired == 5
    assert summary(db) == [("account.disable", "wiki", "u0", None)]


def test_overlapping_sources_a_grant_and_scim(db, clock, access, directory):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    admins = directory.group("wiki-admins", [alice])
    give_account(db, "wiki", alice, ["admin"])
    clear_outbox(db)

    grant = _grant(access, "alice", "wiki-admins", duration="1h")
    assert grant["status"] == "active"
    assert events(db) == []  # already an admin through SCIM: nothing changes downstream
    directory.remove(admins, alice)  # the IdP removes her; the grant keeps the membership alive
    assert events(db) == []
    assert [m["value"] for m in directory.read_group(admins)["members"]] == [alice]

    directory.add(admins, alice)  # back through SCIM; then the grant expires: SCIM keeps it
    clock.advance(3600)
    access.sweeper.sweep_once()
    assert events(db) == []
    with db.read() as conn:
        assert conn.execute(
            sa.select(memberships.c.source).where(memberships.c.group_pk == _pk(db, admins))
        ).scalars().all() == ["scim"]
        assert conn.execute(sa.select(grants.c.status)).scalar_one() == "expired"

    directory.remove(admins, alice)  # now the last source goes
    assert summary(db) == [("role.revoke", "wiki", "alice", "admin")]


def test_a_grant_expiring_while_scim_membership_also_expired_revokes_once(db, clock, access, directory):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    directory.group("wiki-admins", [alice], membershipTTL=600)
    give_account(db, "wiki", alice, ["admin"])
    _grant(access, "alice", "wiki-admins", duration="10m")
    clear_outbox(db)
    clock.advance(600)
    report = access.sweeper.sweep_once()
    assert report.memberships_expired == 2 and report.grants_expired == 1
    assert summary(db) == [("role.revoke", "wiki", "alice", "admin")]


def test_grace_period_and_a_re_add_inside_it(db, clock):
    access = make_access(db, clock, config(grace="1h"))
    directory = Directory(db, clock, access)
    bob = directory.user("bob")
    users = directory.group("wiki-users", [bob])
    give_account(db, "wiki", bob)
    clear_outbox(db)

    directory.remove(users, bob)
    row = account(db, "wiki", bob)
    assert (row.status, row.unentitled_since) == (ledger.ACTIVE, to_micros(clock.now()))
    assert events(db) == []
    clock.advance(1800)
    access.sweeper.sweep_once()
    assert events(db) == []

    directory.add(users, bob)  # inside the grace period: cancelled
    assert account(db, "wiki", bob).unentitled_since is None
    clock.advance(3600)
    access.sweeper.sweep_once()
    assert events(db) == []

    directory.remove(users, bob)
    clock.advance(3599)
    access.sweeper.sweep_once()
    assert events(db) == []
    clock.advance(1)
    report = access.sweeper.sweep_once()
    assert report.rechecked == 1 and report.disabled == 1
    assert summary(db) == [("account.disable", "wiki", "bob", None)]
    row = account(db, "wiki", bob)
    assert (row.status, row.unentitled_since, row.recheck_at) == (ledger.DISABLED, None, None)


def test_grace_period_after_a_ttl_expiry(db, clock):
    access = make_access(db, clock, config(grace="10m", on_unentitled="delete"))
    directory = Directory(db, clock, access)
    bob = directory.user("bob")
    directory.group("wiki-users", [bob], membershipTTL=60)
    give_account(db, "wiki", bob)
    clock.advance(60)
    access.sweeper.sweep_once()
    assert events(db, "account.delete") == []
    clock.advance(600)
    access.sweeper.sweep_once()
    assert summary(db, "account.delete") == [("account.delete", "wiki", "bob", None)]
    assert account(db, "wiki", bob).status == ledger.DELETED


def test_scheduled_start(db, clock, access, directory):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    prod = directory.group("prod-admins")
    give_account(db, "wiki", alice)
    clear_outbox(db)
    start = clock.now().replace(hour=8)
    grant = access.create_grant(
        user=alice,
        group=prod,
        duration="2h",
        starts_at=start.isoformat(),
        actor="admin",
        justification="deploy",
    )
    assert grant["status"] == "scheduled" and grant["startsAt"] == "2030-01-01T08:00:00Z"
    assert "members" not in directory.read_group(prod)
    clock.advance(8 * 3600 - 1)
    assert access.sweeper.sweep_once().activated == 0
    clock.advance(1)
    report = access.sweeper.sweep_once()
    assert report.activated == 1
    assert access.get_grant(grant["id"])["status"] == "active"
    assert [m["value"] for m in directory.read_group(prod)["members"]] == [alice]
    assert summary(db) == [("role.grant", "wiki", "alice", "prod")]
    clock.advance(2 * 3600)
    assert access.get_grant(grant["id"])["status"] == "expired"  # before the sweeper says so
    access.sweeper.sweep_once()
    assert summary(db)[1:] == [("role.revoke", "wiki", "alice", "prod")]
    with db.read() as conn:
        actions = (
            conn.execute(
                sa.select(audit_log.c.action)
                .where(audit_log.c.resource_type == "Grant")
                .order_by(audit_log.c.id)
            )
            .scalars()
            .all()
        )
    assert actions == ["grant.create", "grant.activate", "grant.expire"]


def test_extend_and_revoke_early(db, clock, access, directory):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    prod = directory.group("prod-admins")
    give_account(db, "wiki", alice)
    clear_outbox(db)
    grant = _grant(access, "alice", "prod-admins", duration="1h", justification="incident 42")
    assert summary(db) == [("role.grant", "wiki", "alice", "prod")]
    extended = access.extend_grant(grant["id"], duration="1h", actor="admin")
    assert extended["expiresAt"] == "2030-01-01T02:00:00Z"
    clock.advance(3600)
    access.sweeper.sweep_once()
    assert [m["value"] for m in directory.read_group(prod)["members"]] == [alice]
    assert len(events(db, "role.revoke")) == 0
    revoked = access.revoke_grant(grant["id"], actor="admin", reason="done")
    assert revoked["status"] == "revoked"
    assert summary(db, "role.revoke") == [("role.revoke", "wiki", "alice", "prod")]
    assert "members" not in directory.read_group(prod)
    with pytest.raises(JitError) as excinfo:
        access.revoke_grant(grant["id"], actor="admin")
    assert excinfo.value.reason == "not_open"


def test_expiry_notice_goes_out_once_before_the_end(db, clock):
    raw = config(jit='expiry_notice = "15m"\nnotify_applications = ["chat"]')
    access = make_access(db, clock, raw)
    directory = Directory(db, clock, access)
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    directory.group("prod-admins")
    give_account(db, "wiki", alice)
    clear_outbox(db)
    grant = _grant(access, "alice", "prod-admins", duration="1h")
    clock.advance(44 * 60 + 59)
    access.sweeper.sweep_once()
    assert events(db, "access.expiring") == []
    clock.advance(1)
    assert access.sweeper.sweep_once().notices == 1
    notices = events(db, "access.expiring")
    assert sorted(n["application"] for n in notices) == ["chat", "wiki"]
    assert notices[0]["grant"]["id"] == grant["id"] and notices[0]["expiresAt"] == "2030-01-01T01:00:00Z"
    access.sweeper.sweep_once()
    assert len(events(db, "access.expiring")) == 2  # once
    access.extend_grant(grant["id"], duration="1h", actor="admin")
    clock.advance(3600)
    access.sweeper.sweep_once()
    assert len(events(db, "access.expiring")) == 4  # again before the new end


def test_grant_input_is_checked(db, clock, access, directory):
    directory.user("alice")
    directory.group("prod-admins")
    for kwargs, reason in (
        ({"user": "nobody", "group": "prod-admins", "duration": "1h"}, "unknown_user"),
        ({"user": "alice", "group": "nope", "duration": "1h"}, "unknown_group"),
        ({"user": "alice", "group": "prod-admins"}, "invalid_request"),
        (
            {"user": "alice", "group": "prod-admins", "duration": "1h", "expires_at": "2031-01-01T00:00:00Z"},
            "invalid_request",
        ),
        ({"user": "alice", "group": "prod-admins", "duration": "soon"}, "invalid_request"),
        ({"user": "alice", "group": "prod-admins", "expires_at": "2029-01-01T00:00:00Z"}, "invalid_request"),
    ):
        with pytest.raises(JitError) as excinfo:
            access.create_grant(actor="admin", **kwargs)
        assert excinfo.value.reason == reason, kwargs


def _pk(db, group_id: str) -> int:
    from scimjit.store.tables import groups

    with db.read() as conn:
        return int(conn.execute(sa.select(groups.c.pk).where(groups.c.id == group_id)).scalar_one())


def _id(db, name: str) -> str:
    from scimjit.store.tables import groups

    with db.read() as conn:
        return str(conn.execute(sa.select(groups.c.id).where(groups.c.display_name == name)).scalar_one())


def test_a_sweep_purges_dead_sign_in_states_and_replay_values(db, clock, access):
    """Abandoned sign-in states and replay-cache values past expiry do not pile up: a sweep deletes them and
    keeps the live ones."""
    from scimjit.store import signin_states, used_once
    from scimjit.store.tables import signin_states as states_table
    from scimjit.store.tables import used_once as once_table

    now = clock.now()
    with db.write() as conn:
        signin_states.put(conn, "abandoned", "console", {}, now + timedelta(minutes=10))
        signin_states.put(conn, "live", "app:chat", {}, now + timedelta(hours=2))
        used_once.claim(conn, "id_token", "dead", now + timedelta(minutes=5), now)
        used_once.claim(conn, "id_token", "alive", now + timedelta(hours=2), now)
    clock.advance(3600)
    assert access.sweeper.sweep_once().single_use_purged == 2
    with db.read() as conn:
        assert [r.purpose for r in conn.execute(sa.select(states_table))] == ["app:chat"]
        assert conn.execute(sa.select(sa.func.count()).select_from(once_table)).scalar() == 1
    with db.write() as conn:
        assert signin_states.take(conn, "live", "app:chat", clock.now()) == {}
