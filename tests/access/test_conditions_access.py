"""Conditions of time and place on access policies, with a frozen clock (no sleeps), on SQLite and PostgreSQL:
a request outside the policy's conditions is refused (403 condition_not_met, audited, nothing written) or
routed to the approvers; a grant limited to windows is live only inside them (reads drop it at the boundary
instant, the sweep sends role.revoke, and at the next window start the sweep gives it back with role.grant)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from scimjit.jiterrors import JitError
from scimjit.store.tables import access_requests, audit_log, grants, memberships
from tests.access_helpers import Directory, clear_outbox, config, give_account, make_access, summary

OFFICE = '{ days = "Mon-Fri", from = "07:00", to = "19:00", tz = "Europe/Amsterdam" }'


def policy(extra: str) -> str:
    return f"""
[[jit.policies]]
group = "prod-admins"
max_duration = "8h"
approvers = ["sre-leads"]
auto_approve = {{ max_duration = "2h" }}
{extra}
"""


def setup(db, clock, extra: str):
    access = make_access(db, clock, config(jit=policy(extra)))
    directory = Directory(db, clock, access)
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    prod = directory.group("prod-admins")
    directory.group("sre-leads", [directory.user("sam")])
    give_account(db, "wiki", alice)
    clear_outbox(db)
    return access, directory, alice, prod


def ask(access, user, **kwargs):
    return access.create_request(
        user=user,
        group="prod-admins",
        duration=kwargs.pop("duration", "1h"),
        justification="incident 42",
        requested_by="alice",
        **kwargs,
    )


def groups_of(directory, user_id):
    return [g["display"] for g in directory.read_user(user_id).get("groups", [])]


def members_of(directory, group_id):
    return [m["value"] for m in directory.read_group(group_id).get("members", [])]


def refusals(db):
    with db.read() as conn:
        return conn.execute(
            sa.select(audit_log.c.action, audit_log.c.details).where(audit_log.c.outcome == "refused")
        ).all()


# ------------------------------------------------------------------------------ request conditions


def test_outside_the_window_a_request_is_refused_naming_the_condition(db, clock):
    clock.set(datetime(2030, 1, 5, 12, tzinfo=UTC))  # a Saturday
    access, _, alice, _ = setup(db, clock, f"conditions = {{ windows = [{OFFICE}] }}")
    with pytest.raises(JitError) as excinfo:
        ask(access, alice, client_ip="10.1.2.3")
    assert (excinfo.value.status, excinfo.value.reason) == (403, "condition_not_met")
    assert (
        excinfo.value.detail
        == "window: outside the allowed time window(s): Mon-Fri 07:00-19:00 Europe/Amsterdam"
    )
    with db.read() as conn:  # nothing half-written
        assert conn.execute(sa.select(sa.func.count()).select_from(access_requests)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(grants)).scalar() == 0
    [(action, details)] = refusals(db)
    assert action == "request.create"
    assert (
        details["condition"] == "window" and details["userId"] == alice and details["clientIp"] == "10.1.2.3"
    )

    clock.set(datetime(2030, 1, 7, 6, tzinfo=UTC))  # Monday 07:00 Amsterdam: inside, auto-approved
    assert ask(access, alice)["status"] == "approved"


def test_outside_the_networks_a_request_goes_to_the_approvers(db, clock):
    access, _, alice, _ = setup(db, clock, 'conditions = { networks = ["10.0.0.0/8"] }\noutside = "approval"')
    doc = ask(access, alice, client_ip="192.0.2.9")
    assert doc["status"] == "pending"  # auto_approve would have covered 1h; the network routed it
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(grants)).scalar() == 0
        [details] = conn.execute(
            sa.select(audit_log.c.details).where(audit_log.c.action == "request.create")
        ).scalars()
    assert details["routedToApproval"] is True
    assert details["conditionNotMet"]["condition"] == "network"
    assert details["clientIp"] == "192.0.2.9"
    assert ask(access, alice, client_ip="10.9.9.9")["status"] == "approved"  # inside: auto-approved


def test_a_request_without_an_address_never_meets_a_network_condition(db, clock):
    access, _, alice, _ = setup(db, clock, 'conditions = { networks = ["10.0.0.0/8"] }')
    with pytest.raises(JitError) as excinfo:
        ask(access, alice)  # e.g. the CLI: no client address
    assert excinfo.value.reason == "condition_not_met"
    assert "unknown" in excinfo.value.detail


# ------------------------------------------------------------------------------ grant windows


def test_a_windowed_grant_closes_at_the_boundary_and_reopens_at_the_next_start(db, clock):
    clock.set(datetime(2030, 1, 4, 17, 30, tzinfo=UTC))  # Friday 18:30 Amsterdam
    access, directory, alice, prod = setup(db, clock, f"windows = [{OFFICE}]")
    grant = access.create_grant(user=alice, group="prod-admins", duration="7d", actor="admin")
    assert grant["windows"] == [{"days": "Mon-Fri", "from": "07:00", "to": "19:00", "tz": "Europe/Amsterdam"}]
    assert "prod-admins" in groups_of(directory, alice)
    assert summary(db) == [("role.grant", "wiki", "alice", "prod")]
    clear_outbox(db)

    clock.set(datetime(2030, 1, 4, 17, 59, 59, 999999, tzinfo=UTC))
    assert members_of(directory, prod) == [alice]
    clock.set(datetime(2030, 1, 4, 18, tzinfo=UTC))  # 19:00 Amsterdam: the boundary instant, no sweep yet
    assert "prod-admins" not in groups_of(directory, alice)
    assert members_of(directory, prod) == []
    assert summary(db) == []

    report = access.sweeper.sweep_once()
    assert (report.memberships_expired, report.revoked) == (1, 1)
    assert summary(db) == [("role.revoke", "wiki", "alice", "prod")]
    assert access.get_grant(grant["id"])["status"] == "active"
    assert access.get_grant(grant["id"])["windowOpensAt"] == "2030-01-07T06:00:00Z"  # Monday 07:00
    clear_outbox(db)

    clock.set(datetime(2030, 1, 6, 12, tzinfo=UTC))  # Sunday: nothing to do
    assert access.sweeper.sweep_once().work == 0
    clock.set(datetime(2030, 1, 7, 6, tzinfo=UTC))  # Monday 07:00 Amsterdam
    assert members_of(directory, prod) == []  # back only once the sweeper has added it
    report = access.sweeper.sweep_once()
    assert report.windows_opened == 1
    assert summary(db) == [("role.grant", "wiki", "alice", "prod")]
    assert members_of(directory, prod) == [alice]
    assert access.sweeper.sweep_once().work == 0  # nothing twice
    with db.read() as conn:
        ends = conn.execute(
            sa.select(memberships.c.expires_at).where(memberships.c.source.like("grant:%"))
        ).scalar()
    assert ends == int(datetime(2030, 1, 7, 18, tzinfo=UTC).timestamp() * 1_000_000)


def test_a_grant_made_outside_its_window_starts_dormant(db, clock):
    clock.set(datetime(2030, 1, 5, 12, tzinfo=UTC))  # Saturday
    access, directory, alice, prod = setup(db, clock, f"windows = [{OFFICE}]")
    grant = access.create_grant(user=alice, group="prod-admins", duration="3d", actor="admin")
    assert grant["status"] == "active" and grant["windowOpensAt"] == "2030-01-07T06:00:00Z"
    assert members_of(directory, prod) == [] and summary(db) == []
    clock.set(datetime(2030, 1, 7, 6, tzinfo=UTC))
    access.sweeper.sweep_once()
    assert members_of(directory, prod) == [alice]
    # the grant ends Tuesday 2030-01-08 12:00 UTC: Monday's window is its last; no reopen after it
    clock.set(datetime(2030, 1, 7, 18, tzinfo=UTC))
    access.sweeper.sweep_once()
    assert "windowOpensAt" in access.get_grant(grant["id"])
    clock.set(datetime(2030, 1, 8, 6, tzinfo=UTC))  # Tuesday 07:00: back until the grant's own end
    access.sweeper.sweep_once()
    assert members_of(directory, prod) == [alice]
    with db.read() as conn:
        ends = conn.execute(
            sa.select(memberships.c.expires_at).where(memberships.c.source.like("grant:%"))
        ).scalar()
    assert ends == int(datetime(2030, 1, 8, 12, tzinfo=UTC).timestamp() * 1_000_000)
    assert "windowOpensAt" not in access.get_grant(grant["id"])


def test_a_windowed_grant_on_the_dst_day(db, clock):
    """Sunday 2030-03-31 (CET -> CEST): a daily 07:00-19:00 Amsterdam window is 05:00-17:00 UTC that day,
    after 06:00-18:00 UTC on Saturday."""
    clock.set(datetime(2030, 3, 30, 17, 59, tzinfo=UTC))
    daily = '{ days = "*", from = "07:00", to = "19:00", tz = "Europe/Amsterdam" }'
    access, directory, alice, prod = setup(db, clock, f"windows = [{daily}]")
    grant = access.create_grant(user=alice, group="prod-admins", duration="2d", actor="admin")
    clock.set(datetime(2030, 3, 30, 18, tzinfo=UTC))
    assert members_of(directory, prod) == []
    access.sweeper.sweep_once()
    assert access.get_grant(grant["id"])["windowOpensAt"] == "2030-03-31T05:00:00Z"
    clock.set(datetime(2030, 3, 31, 5, tzinfo=UTC))
    access.sweeper.sweep_once()
    assert members_of(directory, prod) == [alice]
    clock.set(datetime(2030, 3, 31, 17, tzinfo=UTC))
    assert members_of(directory, prod) == []


def test_extending_a_windowed_grant_keeps_the_window_end(db, clock):
    clock.set(datetime(2030, 1, 7, 12, tzinfo=UTC))  # Monday 13:00 Amsterdam
    access, directory, alice, prod = setup(db, clock, f"windows = [{OFFICE}]")
    grant = access.create_grant(user=alice, group="prod-admins", duration="2h", actor="admin")
    with db.read() as conn:
        ends = conn.execute(sa.select(memberships.c.expires_at)).scalars().all()
    assert int(datetime(2030, 1, 7, 14, tzinfo=UTC).timestamp() * 1_000_000) in ends
    access.extend_grant(grant["id"], expires_at="2030-01-09T12:00:00Z", actor="admin")
    clock.set(datetime(2030, 1, 7, 18, tzinfo=UTC))  # the window's end, not the grant's
    assert members_of(directory, prod) == []
    access.sweeper.sweep_once()
    assert access.get_grant(grant["id"])["windowOpensAt"] == "2030-01-08T06:00:00Z"


def test_a_schedule_moving_a_windowed_shifts_end_keeps_the_window(db, clock):
    """A shift's grant follows a new end from its schedule, but never past the group's window."""
    clock.set(datetime(2030, 1, 7, 12, tzinfo=UTC))  # Monday 13:00 Amsterdam
    access, directory, alice, prod = setup(db, clock, f"windows = [{OFFICE}]")

    def plan(ends: str):
        shift = {"id": "s1", "user": "alice", "group": "prod-admins", "startsAt": "2030-01-07T11:00:00Z"}
        return access.apply_schedule("rota", {"shifts": [{**shift, "endsAt": ends}]}, actor="rota")

    assert plan("2030-01-07T14:00:00Z")["created"] == 1
    assert members_of(directory, prod) == [alice]
    assert plan("2030-01-07T22:00:00Z")["updated"] == 1  # past the window's end (18:00 UTC)
    clock.set(datetime(2030, 1, 7, 18, tzinfo=UTC))
    assert members_of(directory, prod) == []  # the window closed it, before any sweep
