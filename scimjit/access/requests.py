"""Access requests: a user asks for a group for a while, with a justification; approvers decide.

The group's policy (`[[jit.policies]]`, see policies.py) says who may ask (`eligible`), for how long at most
(`max_duration`), which requests are approved at once (`auto_approve`), who decides (`approvers`, never the
requester), how many approvals it takes (`approvals_required`) and how long a request may wait
(`pending_ttl`). An approved request becomes a grant in the same transaction; a denied, cancelled or lapsed one
never does. Eligibility and approver rights are live group memberships, checked when the request is made and
when each decision is taken.

Statuses: `pending`, `approved` (with `grantId`), `denied`, `expired` (no decision in time; a pending request
past its `expiresAt` is shown as expired at once and recorded so by the sweeper), `cancelled` (its user or
group was deleted). Audit: `request.create|approve|deny|expire|cancel`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from scimjit.access import grants, notify
from scimjit.clock import isoformat, to_micros
from scimjit.entitlement import conditions
from scimjit.entitlement.policies import Policy
from scimjit.jiterrors import JitError
from scimjit.provisioning.deprovision import Deprovisioner
from scimjit.store import admin, audit, memberships
from scimjit.store import groups as group_store
from scimjit.store import users as user_store
from scimjit.store.tables import Row, access_requests


class RequestStatus(StrEnum):
    """An access request's `status` column (stored, rendered and compared as the plain string)."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


PENDING = RequestStatus.PENDING
APPROVED = RequestStatus.APPROVED
DENIED = RequestStatus.DENIED
EXPIRED = RequestStatus.EXPIRED
CANCELLED = RequestStatus.CANCELLED
AccessRequest = Row  # a whole `access_requests` row
AUTO_APPROVER = "policy:auto-approve"


def is_member(conn: sa.Connection, user_id: str, refs: Sequence[str], now_us: int) -> bool:
    """Whether the user is a live member of any group named by `refs` (ids, or displayNames in any case)."""
    if not refs:
        return False
    stmt = memberships.live_groups(user_id, now_us, group_ids=refs, names_ci={r.lower() for r in refs})
    return conn.execute(stmt.limit(1)).first() is not None


class ConditionNotMet(JitError):
    """403 `condition_not_met`: the policy's conditions do not hold and it says `outside = "refuse"`;
    `unmet` names the condition, for the audit record of the refusal."""

    def __init__(self, unmet: conditions.Unmet) -> None:
        super().__init__(403, "condition_not_met", f"{unmet.condition}: {unmet.detail}")
        self.unmet = unmet


def policy_of(deprov: Deprovisioner, group: Row) -> Policy:
    policy = deprov.settings.policy_for(group.id, group.display_name)
    if policy is None:
        raise JitError(403, "not_requestable", f"group {group.display_name!r} has no access policy")
    return policy


def create(
    conn: sa.Connection,
    deprov: Deprovisioner,
    *,
    user: Row,
    group: Row,
    duration: float,
    starts_at: int | None,
    justification: Any,
    requested_by: str,
    now: datetime,
    http_request_id: str | None = None,
    client_ip: str | None = None,
) -> AccessRequest:
    """File a request of `user` (a row from `grants.find_user`) for `group`; approved at once when the
    policy's `auto_approve` covers it and its `conditions` hold at `now` for `client_ip` (the filer's
    address). Outside them it is refused (`ConditionNotMet`) or, with `outside = "approval"`, left to the
    approvers. Returns the access_requests row."""
    now_us = to_micros(now)
    policy = policy_of(deprov, group)
    if not user.active:
        raise JitError(403, "inactive_user", f"user {user.user_name!r} is not active")
    if policy.eligible and not is_member(conn, user.id, policy.eligible, now_us):
        raise JitError(
            403,
            "not_eligible",
            f"only members of {', '.join(policy.eligible)} may request {group.display_name!r}",
        )
    if not isinstance(justification, str) or not justification.strip():
        raise JitError(400, "invalid_request", "a `justification` is required")
    if duration > policy.max_duration:
        raise JitError(
            400, "too_long", f"{group.display_name!r} may be requested for at most {policy.max_duration:g}s"
        )
    if starts_at is not None and starts_at <= now_us:
        starts_at = None
    unmet = conditions.check(policy.conditions, now, client_ip)
    if unmet is not None and policy.outside == "refuse":
        raise ConditionNotMet(unmet)
    row = conn.execute(
        access_requests.insert()
        .values(
            id=str(uuid.uuid4()),
            user_id=user.id,
            group_id=group.id,
            status=PENDING,
            duration_seconds=int(duration),
            starts_at=starts_at,
            justification=justification.strip()[:4000],
            requested_by=requested_by,
            approvals=[],
            created_at=now_us,
            expires_at=now_us + int(policy.pending_ttl * 1_000_000),
            version=1,
        )
        .returning(*access_requests.c)
    ).one()
    _audit(
        conn,
        "request.create",
        requested_by,
        row,
        now_us,
        http_request_id,
        group=group.display_name,
        durationSeconds=int(duration),
        justification=row.justification,
        # outside the conditions with outside = "approval": which one, and that it waits for approvers
        conditionNotMet=unmet.to_json() if unmet else None,
        routedToApproval=True if unmet else None,
        clientIp=client_ip if unmet else None,
    )
    auto = policy.auto_approve
    if (
        unmet is None
        and auto is not None
        and duration <= auto.max_duration
        and (not auto.eligible or is_member(conn, user.id, auto.eligible, now_us))
    ):
        row = _approve(
            conn,
            deprov,
            row,
            user,
            group,
            AUTO_APPROVER,
            [_decision(AUTO_APPROVER, "approve", now, None)],
            now,
            http_request_id,
        )
    else:
        notify.request_created(conn, deprov.settings, row, user, group, policy)
    return row


def decide(
    conn: sa.Connection,
    deprov: Deprovisioner,
    request_id: str,
    *,
    approver: Row,
    decision: str,
    comment: Any,
    actor: str,
    now: datetime,
    http_request_id: str | None = None,
    decided_via: str = "operator",
) -> AccessRequest:
    """An approver's `approve` or `deny`. One denial ends the request; `approvals_required` distinct
    approvals approve it and create its grant. The requester can never decide their own request.
    `decided_via` (how the approver proved who they are: `console`, `admin-token`, `operator`) is kept on
    the decision (`via`) and in its audit record (`decidedVia`)."""
    now_us = to_micros(now)
    # The requester's row before the request's, the order a user DELETE takes them in (store.users.lock)
    user_store.lock(conn, [get(conn, request_id).user_id])
    row = get(conn, request_id, for_update=True)
    if row.status != PENDING:
        raise JitError(409, "not_pending", f"request {request_id} is {row.status}")
    if row.expires_at <= now_us:
        raise JitError(409, "not_pending", f"request {request_id} is expired")
    if approver.id == row.user_id:
        raise JitError(403, "self_approval", "nobody may decide their own request")
    found = group_store.names(conn, ids={row.group_id})
    group = found[0] if found else None
    if group is None:
        raise JitError(409, "unknown_group", f"the group of request {request_id} no longer exists")
    policy = policy_of(deprov, group)
    if not approver.active or not is_member(conn, approver.id, policy.approvers, now_us):
        raise JitError(
            403,
            "not_an_approver",
            f"only active members of {', '.join(policy.approvers) or '(nobody)'} decide",
        )
    approvals = list(row.approvals or [])
    if any(a.get("approverId") == approver.id for a in approvals):
        raise JitError(409, "already_decided", f"{approver.user_name!r} has already decided this request")
    if not isinstance(comment, str | None):
        raise JitError(400, "invalid_request", "`comment` must be a string")
    approvals.append(
        {
            **_decision(approver.user_name, decision, now, comment),
            "approverId": approver.id,
            "via": decided_via,
        }
    )
    if decision == "deny":
        updated = _update(conn, row, status=DENIED, approvals=approvals, decided_at=now_us)
        _audit(
            conn,
            "request.deny",
            actor,
            updated,
            now_us,
            http_request_id,
            approver=approver.user_name,
            decidedVia=decided_via,
            comment=comment,
        )
        notify.request_decided(
            conn, deprov.settings, updated, group, decided_by=approver.user_name, comment=comment
        )
        return updated
    yes = len({a.get("approverId") for a in approvals if a.get("decision") == "approve"})
    if yes < policy.approvals_required:
        updated = _update(conn, row, approvals=approvals)
        _audit(
            conn,
            "request.approve",
            actor,
            updated,
            now_us,
            http_request_id,
            approver=approver.user_name,
            decidedVia=decided_via,
            approvals=yes,
            required=policy.approvals_required,
        )
        return updated
    user = grants.find_user(conn, row.user_id)
    approved = _approve(
        conn,
        deprov,
        row,
        user,
        group,
        actor,
        approvals,
        now,
        http_request_id,
        approver.user_name,
        decided_via,
    )
    notify.request_decided(
        conn, deprov.settings, approved, group, decided_by=approver.user_name, comment=comment
    )
    return approved


def cancel(
    conn: sa.Connection,
    request_id: str,
    *,
    user_id: str,
    actor: str,
    now: datetime,
    http_request_id: str | None = None,
) -> AccessRequest:
    """The requester withdraws their own pending request (nobody else may: approvers deny)."""
    now_us = to_micros(now)
    row = get(conn, request_id, for_update=True)
    if row.user_id != user_id:
        raise JitError(403, "not_your_request", "only the requester may cancel a request")
    if row.status != PENDING or row.expires_at <= now_us:
        raise JitError(409, "not_pending", f"request {request_id} is no longer pending")
    updated = _update(conn, row, status=CANCELLED, decided_at=now_us)
    _audit(
        conn, "request.cancel", actor, updated, now_us, http_request_id, reason="cancelled by the requester"
    )
    return updated


def get(conn: sa.Connection, request_id: str, *, for_update: bool = False) -> AccessRequest:
    return grants.load(conn, access_requests, request_id, "access request", for_update=for_update)


def expire_due(conn: sa.Connection, now: datetime, limit: int) -> int:
    """Pending requests nobody decided in time: expired (never a grant)."""
    now_us = to_micros(now)
    stmt = (
        sa.select(access_requests.c.id, access_requests.c.user_id, access_requests.c.group_id)
        .where(access_requests.c.status == PENDING, access_requests.c.expires_at <= now_us)
        .order_by(access_requests.c.expires_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=access_requests)
    due = list(conn.execute(stmt))
    if not due:
        return 0
    conn.execute(
        access_requests.update()
        .where(access_requests.c.id.in_([r.id for r in due]))
        .values(status=EXPIRED, decided_at=now_us, version=access_requests.c.version + 1)
    )
    for row in due:
        _audit(conn, "request.expire", "sweeper", row, now_us, None)
    return len(due)


def render(row: AccessRequest, now_us: int) -> dict[str, Any]:
    return fix_status(admin.render_row("requests", row), now_us)


def fix_status(doc: dict[str, Any], now_us: int) -> dict[str, Any]:
    """A pending request past its `expiresAt` is expired, whether or not the sweeper recorded it yet."""
    if doc.get("status") == PENDING and "expiresAt" in doc:
        end = grants.parse_datetime(doc["expiresAt"])
        if end is not None and to_micros(end) <= now_us:
            doc["status"] = EXPIRED
    return doc


# ---------------------------------------------------------------- helpers


def _approve(
    conn: sa.Connection,
    deprov: Deprovisioner,
    row: Row,
    user: Row,
    group: Row,
    actor: str,
    approvals: list[dict[str, Any]],
    now: datetime,
    http_request_id: str | None,
    approver_name: str | None = None,
    decided_via: str | None = None,
) -> AccessRequest:
    now_us = to_micros(now)
    start = max(now_us, row.starts_at or now_us)
    grant = grants.create(
        conn,
        deprov,
        user=user,
        group=group,
        starts_at=start,
        expires_at=start + row.duration_seconds * 1_000_000,
        justification=row.justification,
        actor=actor,
        now=now,
        request_id=row.id,
        http_request_id=http_request_id,
    )
    updated = _update(conn, row, status=APPROVED, approvals=approvals, decided_at=now_us, grant_id=grant.id)
    _audit(
        conn,
        "request.approve",
        actor,
        updated,
        now_us,
        http_request_id,
        approver=approver_name or actor,
        grantId=grant.id,
        approved=True,
        **({"decidedVia": decided_via} if decided_via else {}),
    )
    return updated


def _update(conn: sa.Connection, row: AccessRequest, **values: Any) -> AccessRequest:
    updated = conn.execute(
        access_requests.update()
        .where(access_requests.c.id == row.id, access_requests.c.version == row.version)
        .values(version=row.version + 1, **values)
        .returning(*access_requests.c)
    ).first()
    if updated is None:
        raise JitError(409, "conflict", f"request {row.id} changed meanwhile; try again")
    return updated


def cancel_pending(
    conn: sa.Connection, *, user_id: str | None, group_id: str | None, now_us: int
) -> list[str]:
    """Cancel the pending requests of this user or for this group (set-based); returns their ids."""
    cond = (
        access_requests.c.user_id == user_id
        if user_id is not None
        else access_requests.c.group_id == group_id
    )
    cancelled = conn.execute(
        access_requests.update()
        .where(cond, access_requests.c.status == PENDING)
        .values(status=CANCELLED, decided_at=now_us, version=access_requests.c.version + 1)
        .returning(access_requests.c.id)
    ).all()
    return [request_id for (request_id,) in cancelled]


def end_access(conn: sa.Connection, user_id: str | None, group_id: str | None, now_us: int) -> None:
    """The user or group is gone (the deprovisioner's `end_access` hook): its open grants are revoked and its
    pending requests cancelled (their membership rows go with the user or group). Set-based; one audit
    record each."""
    ended = grants.revoke_open(conn, user_id=user_id, group_id=group_id, now_us=now_us)
    cancelled = cancel_pending(conn, user_id=user_id, group_id=group_id, now_us=now_us)
    for grant_id in ended:
        audit.record(
            conn,
            actor="scim",
            action="grant.revoke",
            outcome="success",
            resource_type="Grant",
            resource_id=grant_id,
            details={"reason": "user or group deleted"},
            at_micros=now_us,
        )
    for request_id in cancelled:
        audit.record(
            conn,
            actor="scim",
            action="request.cancel",
            outcome="success",
            resource_type="AccessRequest",
            resource_id=request_id,
            details={"reason": "user or group deleted"},
            at_micros=now_us,
        )


def _decision(approver: str, decision: str, now: datetime, comment: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"approver": approver, "decision": decision, "at": isoformat(now)}
    if comment:
        out["comment"] = comment[:2000]
    return out


def _audit(
    conn: sa.Connection,
    action: str,
    actor: str,
    row: Row,
    now_us: int,
    http_request_id: str | None,
    **details: Any,
) -> None:
    grants.record_access(conn, "AccessRequest", action, actor, row, now_us, http_request_id, **details)
