"""Access requests and their policies (SQLite and PostgreSQL, frozen clock): request -> approve -> grant ->
expire; no self-approval; N approvals; denial, lapse and eligibility never make a grant; auto-approval."""

from __future__ import annotations

import tomllib

import pytest
import sqlalchemy as sa

from scimjit.config import ConfigError
from scimjit.entitlement.policies import AccessSettings
from scimjit.jiterrors import JitError
from scimjit.store.tables import audit_log, grants
from tests.access_helpers import POLICY, Directory, clear_outbox, config, give_account, make_access, summary


@pytest.fixture
def access(db, clock):
    return make_access(db, clock, config(jit=POLICY.format(approvals=1)))


@pytest.fixture
def people(db, clock, access):
    """alice: engineer with a wiki account; bob and erin: SRE leads; olga: on call; mallory: neither."""
    d = Directory(db, clock, access)
    ids = {name: d.user(name) for name in ("alice", "bob", "erin", "olga", "mallory")}
    d.group("wiki-users", [ids["alice"], ids["olga"]])
    d.group("engineers", [ids["alice"], ids["bob"], ids["olga"]])
    d.group("sre-leads", [ids["bob"], ids["erin"]])
    d.group("oncall", [ids["olga"]])
    d.group("prod-admins")
    give_account(db, "wiki", ids["alice"])
    clear_outbox(db)
    return ids


def ask(access, user="alice", duration="4h", **kwargs):
    return access.create_request(
        user=user,
        group="prod-admins",
        duration=duration,
        justification="deploy 1.2",
        requested_by="t",
        **kwargs,
    )


def refused(fn, *args, **kwargs) -> JitError:
    with pytest.raises(JitError) as excinfo:
        fn(*args, **kwargs)
    return excinfo.value


def test_request_approve_grant_expire(db, clock, access, people):
    request = ask(access)
    assert request["status"] == "pending" and "grantId" not in request
    assert request["expiresAt"] == "2030-01-02T00:00:00Z"  # pending_ttl 24h
    clock.advance(60)
    approved = access.decide(request["id"], approver="bob", decision="approve", comment="ok", actor="t")
    assert approved["status"] == "approved"
    assert approved["approvals"][0]["approver"] == "bob"
    grant = access.get_grant(approved["grantId"])
    assert (grant["status"], grant["requestId"], grant["expiresAt"]) == (
        "active",
        request["id"],
        "2030-01-01T04:01:00Z",
    )
    assert summary(db) == [("role.grant", "wiki", "alice", "prod")]
    clock.advance(4 * 3600)
    access.sweeper.sweep_once()
    assert summary(db)[1:] == [("role.revoke", "wiki", "alice", "prod")]
    assert access.get_grant(approved["grantId"])["status"] == "expired"
    with db.read() as conn:
        trail = conn.execute(sa.select(audit_log.c.action).order_by(audit_log.c.id)).scalars().all()
    assert [a for a in trail if a.split(".")[0] in ("request", "grant")] == [
        "request.create",
        "grant.create",
        "request.approve",
        "grant.expire",
    ]


def test_self_approval_is_refused_and_audited(db, clock, access, people):
    request = ask(access, "bob")  # bob is an engineer and an approver
    error = refused(access.decide, request["id"], approver="bob", decision="approve", actor="bob-token")
    assert (error.status, error.reason) == (403, "self_approval")
    assert access.get_request(request["id"])["status"] == "pending"
    with db.read() as conn:
        row = conn.execute(sa.select(audit_log).where(audit_log.c.outcome == "refused")).one()
    assert (row.action, row.resource_id, row.details["reason"]) == (
        "request.approve",
        request["id"],
        "self_approval",
    )
    assert (
        access.decide(request["id"], approver="erin", decision="approve", actor="t")["status"] == "approved"
    )


def test_only_approvers_decide_and_each_once(db, clock, access, people):
    request = ask(access)
    assert refused(
        access.decide, request["id"], approver="mallory", decision="approve", actor="t"
    ).reason == ("not_an_approver")
    access.decide(request["id"], approver="bob", decision="approve", actor="t")
    assert (
        refused(access.decide, request["id"], approver="erin", decision="deny", actor="t").reason
        == "not_pending"
    )


def test_n_approvals(db, clock):
    access = make_access(db, clock, config(jit=POLICY.format(approvals=2)))
    d = Directory(db, clock, access)
    alice, bob, erin = d.user("alice"), d.user("bob"), d.user("erin")
    d.group("engineers", [alice])
    d.group("sre-leads", [bob, erin])
    d.group("prod-admins")
    request = ask(access)
    once = access.decide(request["id"], approver="bob", decision="approve", actor="t")
    assert once["status"] == "pending" and len(once["approvals"]) == 1
    assert refused(access.decide, request["id"], approver="bob", decision="approve", actor="t").reason == (
        "already_decided"
    )
    twice = access.decide(request["id"], approver="erin", decision="approve", actor="t")
    assert twice["status"] == "approved" and twice["grantId"]


def test_denied_or_lapsed_requests_never_become_grants(db, clock, access, people):
    denied = ask(access)
    assert (
        access.decide(denied["id"], approver="bob", decision="deny", comment="no", actor="t")["status"]
        == "denied"
    )
    lapsed = ask(access)
    clock.advance(24 * 3600)
    assert access.get_request(lapsed["id"])["status"] == "expired"  # at once, before the sweeper
    assert refused(access.decide, lapsed["id"], approver="bob", decision="approve", actor="t").reason == (
        "not_pending"
    )
    assert access.sweeper.sweep_once().requests_expired == 1
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(grants)).scalar() == 0


def test_policy_limits(db, clock, access, people):
    assert refused(ask, access, "mallory").reason == "not_eligible"
    assert refused(ask, access, duration="9h").reason == "too_long"
    assert (
        refused(
            access.create_request,
            user="alice",
            group="engineers",
            duration="1h",
            justification="x",
            requested_by="t",
        ).reason
        == "not_requestable"
    )
    error = refused(
        access.create_request,
        user="alice",
        group="prod-admins",
        duration="1h",
        justification=" ",
        requested_by="t",
    )
    assert error.reason == "invalid_request"


def test_auto_approval_for_short_on_call_requests(db, clock, access, people):
    quick = ask(access, "olga", duration="30m")
    assert quick["status"] == "approved"
    assert quick["approvals"][0]["approver"] == "policy:auto-approve"
    assert access.get_grant(quick["grantId"])["createdBy"] == "policy:auto-approve"
    assert ask(access, "olga", duration="2h")["status"] == "pending"  # longer than auto_approve allows
    assert ask(access, "alice", duration="30m")["status"] == "pending"  # not on call


def test_a_scheduled_request_becomes_a_scheduled_grant(db, clock, access, people):
    request = ask(access, duration="1h", starts_at="2030-01-01T09:00:00Z")
    grant = access.get_grant(
        access.decide(request["id"], approver="bob", decision="approve", actor="t")["grantId"]
    )
    assert (grant["status"], grant["startsAt"], grant["expiresAt"]) == (
        "scheduled",
        "2030-01-01T09:00:00Z",
        "2030-01-01T10:00:00Z",
    )
    assert summary(db) == []


def test_policy_configuration_is_validated():
    for bad, message in (
        ('[[jit.policies]]\nmax_duration = "1h"\napprovers = ["x"]', "group"),
        ('[[jit.policies]]\ngroup = "g"\napprovers = ["x"]', "max_duration"),
        ('[[jit.policies]]\ngroup = "g"\nmax_duration = "1h"', "approvers"),
        (
            '[[jit.policies]]\ngroup = "g"\nmax_duration = "1h"\napprovers = ["x"]\napprover = ["y"]',
            "unknown",
        ),
        (
            '[[jit.policies]]\ngroup = "g"\nmax_duration = "1h"\nauto_approve = { max_duration = "2h" }',
            "must not exceed",
        ),
        ('membership_ttl = { "g" = "0s" }', "at least 1s"),
        ('notify_applications = ["nope"]', "no application"),
    ):
        raw = tomllib.loads(bad if bad.startswith("[[") else f"[jit]\n{bad}")
        with pytest.raises(ConfigError, match=message):
            AccessSettings.from_raw(raw, ["wiki"])
