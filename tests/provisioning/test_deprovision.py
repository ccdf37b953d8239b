"""Deprovisioning from SCIM writes: the listener writes the downstream events in the SCIM write's transaction,
only for applications the user has an account in (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from scimjit.entitlement import ledger
from scimjit.store.tables import access_requests, accounts, audit_log, grants
from tests.access_helpers import (
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
    return make_access(db, clock)


@pytest.fixture
def directory(db, clock, access):
    return Directory(db, clock, access)


@pytest.fixture
def alice(directory, db):
    """alice is in wiki-users, wiki-admins and chat-users, and has logged in to wiki only."""
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    directory.group("wiki-admins", [alice])
    directory.group("chat-users", [alice])
    give_account(db, "wiki", alice, ["admin"])
    clear_outbox(db)
    return alice


def test_deactivation_disables_only_the_accounts_the_user_has(db, directory, alice):
    directory.patch_user(alice, {"op": "replace", "path": "active", "value": False})
    assert summary(db) == [("account.disable", "wiki", "alice", None)]  # never logged in to chat: nothing
    assert account(db, "wiki", alice).status == ledger.DISABLED
    directory.patch_user(alice, {"op": "replace", "path": "active", "value": False})  # no change, no event
    assert len(events(db)) == 1

    directory.patch_user(alice, {"op": "replace", "path": "active", "value": True})
    assert summary(db)[1:] == [("account.enable", "wiki", "alice", None)]
    assert account(db, "wiki", alice).status == ledger.ACTIVE


def test_reactivation_does_not_enable_an_account_disabled_for_lost_entitlement(db, directory, alice):
    group = _group_id(db, "wiki-users")
    directory.remove(group, alice)
    assert account(db, "wiki", alice).status == ledger.DISABLED
    directory.patch_user(alice, {"op": "replace", "path": "active", "value": False})
    directory.patch_user(alice, {"op": "replace", "path": "active", "value": True})
    assert [t for t, *_ in summary(db)] == ["account.disable"]  # not entitled: the next login decides


def test_deleting_the_user_deletes_their_accounts_and_ends_their_grants(db, clock, directory, access, alice):
    with db.write() as conn:
        conn.execute(
            grants.insert().values(
                id="g1",
                user_id=alice,
                group_id="x",
                status="active",
                starts_at=0,
                expires_at=10**18,
                created_by="t",
                created_at=0,
                updated_at=0,
            )
        )
    directory.delete_user(alice)
    assert summary(db) == [("account.delete", "wiki", "alice", None)]
    assert account(db, "wiki", alice).status == ledger.DELETED
    with db.read() as conn:
        assert conn.execute(sa.select(grants.c.status)).scalar_one() == "revoked"


def test_deleting_a_group_revokes_its_grants_and_cancels_its_pending_requests(db, directory, alice):
    admins = _group_id(db, "wiki-admins")
    row = {"user_id": alice, "group_id": admins, "starts_at": 0, "created_at": 0}
    with db.write() as conn:
        conn.execute(
            grants.insert(),
            [
                {
                    **row,
                    "id": "open",
                    "status": "active",
                    "expires_at": 10**18,
                    "updated_at": 0,
                    "created_by": "t",
                },
                {
                    **row,
                    "id": "over",
                    "status": "expired",
                    "expires_at": 1,
                    "updated_at": 0,
                    "created_by": "t",
                },
            ],
        )
        conn.execute(
            access_requests.insert(),
            [
                {
                    **row,
                    "id": rid,
                    "status": status,
                    "duration_seconds": 60,
                    "justification": "j",
                    "requested_by": "alice",
                    "approvals": [],
                    "expires_at": 10**18,
                }
                for rid, status in (("asked", "pending"), ("refused", "denied"))
            ],
        )
    directory.delete_group(admins)
    with db.read() as conn:
        assert dict(conn.execute(sa.select(grants.c.id, grants.c.status)).all()) == {
            "open": "revoked",
            "over": "expired",
        }
        assert dict(conn.execute(sa.select(access_requests.c.id, access_requests.c.status)).all()) == {
            "asked": "cancelled",
            "refused": "denied",
        }
        audited = conn.execute(
            sa.select(audit_log.c.action, audit_log.c.resource_id).where(audit_log.c.actor == "scim")
        ).all()
    assert sorted(audited) == [("grant.revoke", "open"), ("request.cancel", "asked")]


def test_leaving_a_role_group_revokes_the_role_and_joining_grants_it(db, directory, alice):
    admins = _group_id(db, "wiki-admins")
    directory.remove(admins, alice)
    assert summary(db) == [("role.revoke", "wiki", "alice", "admin")]
    assert account(db, "wiki", alice).roles == []
    assert account(db, "wiki", alice).status == ledger.ACTIVE  # still entitled through wiki-users
    directory.add(admins, alice)
    assert summary(db)[1:] == [("role.grant", "wiki", "alice", "admin")]
    assert account(db, "wiki", alice).roles == ["admin"]


def test_losing_entitlement_applies_on_unentitled(db, clock):
    for policy, expected, status in (
        ("disable", ["account.disable"], ledger.DISABLED),
        ("delete", ["account.delete"], ledger.DELETED),
        ("keep", [], ledger.ACTIVE),
    ):
        with db.write() as conn:
            for table in ("memberships", "groups", "users", "accounts", "outbox"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
        access = make_access(db, clock, config(on_unentitled=policy))
        directory = Directory(db, clock, access)
        bob = directory.user("bob")
        group = directory.group("wiki-users", [bob])
        give_account(db, "wiki", bob)
        directory.remove(group, bob)
        assert [t for t, *_ in summary(db)] == expected, policy
        assert account(db, "wiki", bob).status == status


def test_a_user_who_never_logged_in_gets_nothing(db, directory):
    carol = directory.user("carol")
    group = directory.group("wiki-users", [carol])
    admins = directory.group("wiki-admins", [carol])
    directory.remove(admins, carol)
    directory.remove(group, carol)
    directory.patch_user(carol, {"op": "replace", "path": "active", "value": False})
    directory.delete_user(carol)
    assert events(db) == []


def test_deleting_a_group_answers_at_once_and_the_sweeper_fans_out(db, clock, directory, access):
    people = [directory.user(f"user{i}") for i in range(30)]
    group = directory.group("wiki-users", people)
    directory.group("wiki-admins", people[:10])
    for person in people[:20]:  # 20 logged in; 10 of them admins
        give_account(db, "wiki", person, ["admin"] if person in people[:10] else [])
    clear_outbox(db)

    directory.delete_group(group)
    assert events(db) == []  # nothing in the request: one set-based mark per application
    with db.read() as conn:
        marked = conn.execute(sa.select(sa.func.count()).where(accounts.c.recheck_at.is_not(None))).scalar()
    assert marked == 20

    report = access.sweeper.sweep_once()
    assert report.rechecked == 20 and report.disabled == 20
    assert sorted(e["user"]["userName"] for e in events(db, "account.disable")) == sorted(
        f"user{i}" for i in range(20)
    )
    assert events(db, "role.revoke") == []  # still in wiki-admins: the role stays, the account is disabled
    with db.read() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).where(accounts.c.recheck_at.is_not(None))).scalar() == 0
        )
        assert conn.execute(
            sa.select(audit_log.c.action).where(audit_log.c.action == "account.unentitled")
        ).first()
    assert access.sweeper.sweep_once().work == 0


def test_huge_membership_changes_are_left_to_the_sweeper(db, clock, directory, access):
    access.deprovisioner.inline_limit = 5
    people = [directory.user(f"u{i}") for i in range(8)]
    group = directory.group("wiki-admins", people)
    for person in people:
        give_account(db, "wiki", person)
    clear_outbox(db)
    directory.patch_group(group, {"op": "remove", "path": "members"})
    assert events(db) == []
    access.sweeper.sweep_once()
    assert len(events(db, "account.disable")) == 8  # not in wiki-users: unentitled


def test_configured_membership_ttl_and_the_scim_extension(db, clock):
    raw = config(jit='membership_ttl = { "contractors" = "1h" }')
    access = make_access(db, clock, raw)
    directory = Directory(db, clock, access)
    dave = directory.user("dave")
    contractors = directory.group("contractors", [dave])
    short = directory.group("short", [dave], membershipTTL=60)
    clock.advance(59)
    assert [m["value"] for m in directory.read_group(short)["members"]] == [dave]
    clock.advance(1)
    assert "members" not in directory.read_group(short)
    assert [g["display"] for g in directory.read_user(dave)["groups"]] == ["contractors"]
    clock.advance(3600 - 60)
    assert "members" not in directory.read_group(contractors)
    assert "groups" not in directory.read_user(dave)


def _group_id(db, name: str) -> str:
    from scimjit.store.tables import groups

    with db.read() as conn:
        return str(conn.execute(sa.select(groups.c.id).where(groups.c.display_name == name)).scalar_one())
