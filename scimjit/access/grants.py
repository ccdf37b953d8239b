"""Grants: time-bound membership of one user in one group, created directly by an admin or by an approved
request.

A grant is a `grants` row plus, while it is active, a membership row with source `grant:<id>` that expires
when the grant does (`expires_at` is the same number in both rows; extending a grant updates both). So a grant
never touches the user's SCIM membership of the same group and vice versa: effective membership is "any live
source", and reads stop seeing an expired grant at the instant it ends, whether or not the sweeper has run.

Grant windows: a grant of a group whose policy has `windows` keeps a copy of them (`grants.windows`) and is
live only inside them. Its membership row exists only inside a window and expires at the window's end (or
the grant's, if sooner), so reads drop it at that instant exactly as they drop an expired grant; the
membership sweep sends the revokes. `window_opens_at` is the next window start: there the sweeper
(`reopen_due`) adds the row back with the next end and sends the grants.

Statuses: `scheduled` (starts later: the sweeper activates it at `startsAt`, creating its membership row),
`active`, `expired`, `revoked`. An active grant past its end is shown as `expired` even before the sweeper
records it. Every change writes its audit record in its transaction (`grant.create|activate|extend|revoke|
expire`), and its role grants / revokes through the deprovisioner's reconcile, also in that transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from scimjit.access import notify
from scimjit.clock import format_micros, to_micros
from scimjit.config import MAX_DURATION, parse_duration
from scimjit.config.conditions import Window
from scimjit.delivery import outbox
from scimjit.delivery.connectors.base import ACCESS_EXPIRING
from scimjit.entitlement import conditions, ledger
from scimjit.jiterrors import JitError
from scimjit.provisioning.deprovision import Deprovisioner, chunks, user_document
from scimjit.scim.resource import parse_datetime
from scimjit.store import admin, audit, memberships
from scimjit.store import groups as group_store
from scimjit.store import users as user_store
from scimjit.store.tables import Row, grants


class GrantStatus(StrEnum):
    """A grant's `status` column (stored, rendered and compared as the plain string)."""

    SCHEDULED = "scheduled"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


SCHEDULED = GrantStatus.SCHEDULED
ACTIVE = GrantStatus.ACTIVE
EXPIRED = GrantStatus.EXPIRED
REVOKED = GrantStatus.REVOKED
OPEN = (SCHEDULED, ACTIVE)
Grant = Row  # a whole `grants` row
SOURCE_PREFIX = "grant:"


def source(grant_id: str) -> str:
    """The membership `source` of a grant."""
    return f"{SOURCE_PREFIX}{grant_id}"


# ---------------------------------------------------------------- lookups and input


def find_user(conn: sa.Connection, ref: Any) -> Row:
    """A SCIM user by id, or else by userName (case-insensitively)."""
    if not isinstance(ref, str) or not ref:
        raise JitError(400, "invalid_request", "`user` must be a user's id or userName")
    row = user_store.find_profile(conn, ref)
    if row is None:
        raise JitError(404, "unknown_user", f"no user has the id or userName {ref!r}")
    return row


def find_group(conn: sa.Connection, ref: Any) -> Row:
    """A group by id, or else by displayName (case-insensitively; two groups of that name: refused)."""
    if not isinstance(ref, str) or not ref:
        raise JitError(400, "invalid_request", "`group` must be a group's id or displayName")
    found = group_store.find_by_ref(conn, ref)
    if not found:
        raise JitError(404, "unknown_group", f"no group has the id or displayName {ref!r}")
    if len(found) > 1:
        raise JitError(409, "ambiguous_group", f"several groups are named {ref!r}: use the group's id")
    return found[0]


def instant(value: Any, name: str) -> int:
    """An RFC 3339 date-time (or an aware datetime) as epoch microseconds."""
    parsed = parse_datetime(value)
    if parsed is None:
        raise JitError(
            400, "invalid_request", f"`{name}` must be an RFC 3339 date-time, e.g. 2030-01-01T08:00:00Z"
        )
    return to_micros(parsed)


def seconds(value: Any, name: str = "duration") -> float:
    """A duration: `"8h"`, `"90m"`, or a number of seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise JitError(400, "invalid_request", f'`{name}` must be a duration such as "8h" or seconds')
    try:
        result = parse_duration(value)
    except ValueError as exc:
        raise JitError(400, "invalid_request", f"`{name}`: {exc}") from None
    if result <= 0:
        raise JitError(400, "invalid_request", f"`{name}` must be positive")
    return result


def within_horizon(now_us: int, end_us: int, what: str) -> int:
    """`end_us`, when it is at most `MAX_DURATION` (100 years, as for every duration) after now.

    Each part may be in range and the sum not: a `startsAt` in 9999 plus a day, or a grant extended by a
    century again and again, ends past the last datetime and would fail far away (a 500 on every read)."""
    if end_us - now_us > int(MAX_DURATION * 1_000_000):
        raise JitError(400, "invalid_request", f"{what} must end within 100 years from now")
    return end_us


def window(
    now: datetime, *, duration: Any = None, expires_at: Any = None, starts_at: Any = None
) -> tuple[int, int]:
    """(start, end) in epoch microseconds from `duration` or `expiresAt`, and an optional `startsAt`
    (absent or past: now)."""
    now_us = to_micros(now)
    start = max(now_us, instant(starts_at, "startsAt")) if starts_at is not None else now_us
    if (duration is None) == (expires_at is None):
        raise JitError(400, "invalid_request", "give either `duration` or `expiresAt`")
    if duration is not None:
        end = start + int(seconds(duration) * 1_000_000)
    else:
        end = instant(expires_at, "expiresAt")
    if end <= start:
        raise JitError(400, "invalid_request", "the grant must end after it starts (and after now)")
    return start, within_horizon(now_us, end, "the grant")


# ---------------------------------------------------------------- operations


def create(
    conn: sa.Connection,
    deprov: Deprovisioner,
    *,
    user: Row,
    group: Row,
    starts_at: int,
    expires_at: int,
    justification: str | None,
    actor: str,
    now: datetime,
    request_id: str | None = None,
    http_request_id: str | None = None,
    source_name: str | None = None,
    source_ref: str | None = None,
) -> Grant:
    """Create a grant for the `user` row in the `group` row (from `find_user` / `find_group`); active at
    once unless `starts_at` is in the future. `source_name` / `source_ref` name the scheduling system and
    shift a grant comes from (access/schedules.py). Returns the grants row."""
    if not user.active:
        raise JitError(409, "inactive_user", f"user {user.user_name!r} is not active")
    now_us = to_micros(now)
    status = SCHEDULED if starts_at > now_us else ACTIVE
    policy = deprov.settings.policy_for(group.id, group.display_name)
    row = conn.execute(
        grants.insert()
        .values(
            windows=[w.summary() for w in policy.windows] if policy and policy.windows else None,
            id=str(uuid.uuid4()),
            user_id=user.id,
            group_id=group.id,
            status=status,
            starts_at=starts_at,
            expires_at=expires_at,
            justification=justification,
            created_by=actor,
            request_id=request_id,
            source=source_name,
            source_ref=source_ref,
            created_at=now_us,
            updated_at=now_us,
            version=1,
        )
        .returning(*grants.c)
    ).one()
    if status == ACTIVE:
        _open(conn, deprov, [(row, group)], now)
        if row.windows:  # _open set its next window start
            row = get(conn, row.id)
    _audit(
        conn,
        "grant.create",
        actor,
        row,
        now_us,
        http_request_id,
        userName=user.user_name,
        group=group.display_name,
        status=status,
        startsAt=_iso(starts_at),
        expiresAt=_iso(expires_at),
        justification=justification,
        requestId=request_id,
        source=source_name,
        shift=source_ref,
    )
    return row


def get(conn: sa.Connection, grant_id: str, *, for_update: bool = False) -> Grant:
    return load(conn, grants, grant_id, "grant", for_update=for_update)


def load(conn: sa.Connection, table: sa.Table, row_id: str, what: str, *, for_update: bool = False) -> Grant:
    """The row of `table` with this id (locked for update if asked), or 404 `not_found` naming `what`."""
    stmt = sa.select(table).where(table.c.id == row_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        raise JitError(404, "not_found", f"no {what} {row_id!r}")
    return row


def extend(
    conn: sa.Connection,
    deprov: Deprovisioner,
    grant_id: str,
    *,
    expires_at: int,
    actor: str,
    now: datetime,
    http_request_id: str | None = None,
) -> Grant:
    """Move the end of an open grant (later, or earlier but after now); its membership row follows."""
    now_us = to_micros(now)
    # The user's row before the grant's, the order a user DELETE takes them in (store.users.lock)
    user_store.lock(conn, [get(conn, grant_id).user_id])
    row = get(conn, grant_id, for_update=True)
    if row.status not in OPEN or row.expires_at <= now_us:
        raise JitError(409, "not_open", f"grant {grant_id} is {effective_status(row, now_us)}")
    if expires_at <= max(now_us, row.starts_at):
        raise JitError(400, "invalid_request", "the new end must be after now and after the start")
    updated = conn.execute(
        grants.update()
        .where(grants.c.id == grant_id)
        .values(expires_at=expires_at, notified_at=None, updated_at=now_us, version=grants.c.version + 1)
        .returning(*grants.c)
    ).one()
    follow_end(conn, updated, now)
    _audit(
        conn,
        "grant.extend",
        actor,
        updated,
        now_us,
        http_request_id,
        previous=_iso(row.expires_at),
        expiresAt=_iso(expires_at),
    )
    return updated


def revoke(
    conn: sa.Connection,
    deprov: Deprovisioner,
    grant_id: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    http_request_id: str | None = None,
) -> Grant:
    """End an open grant now: its membership row goes, and downstream roles with it (if no other source)."""
    now_us = to_micros(now)
    # The user's row before the grant's, the order a user DELETE takes them in (store.users.lock)
    user_store.lock(conn, [get(conn, grant_id).user_id])
    row = get(conn, grant_id, for_update=True)
    if row.status not in OPEN or row.expires_at <= now_us:
        raise JitError(409, "not_open", f"grant {grant_id} is {effective_status(row, now_us)}")
    updated = conn.execute(
        grants.update()
        .where(grants.c.id == grant_id)
        .values(status=REVOKED, updated_at=now_us, version=grants.c.version + 1)
        .returning(*grants.c)
    ).one()
    if row.status == ACTIVE:
        _close(conn, deprov, [updated], now)
    _audit(conn, "grant.revoke", actor, updated, now_us, http_request_id, reason=reason)
    return updated


def effective_status(row: Grant, now_us: int) -> str:
    """The status as of now: an active grant past its end is expired, whether or not the sweeper said so."""
    if row.status in OPEN and row.expires_at <= now_us:
        return EXPIRED
    return str(row.status)


def render(row: Grant, now_us: int) -> dict[str, Any]:
    """A grants row as the admin API shows it (the `Grant` admin resource type)."""
    return fix_status(admin.render_row("grants", row), now_us)


def fix_status(doc: dict[str, Any], now_us: int) -> dict[str, Any]:
    """`effective_status` for an already rendered grant."""
    if doc.get("status") in OPEN and "expiresAt" in doc:
        end = parse_datetime(doc["expiresAt"])
        if end is not None and to_micros(end) <= now_us:
            doc["status"] = EXPIRED
    return doc


def revoke_open(conn: sa.Connection, *, user_id: str | None, group_id: str | None, now_us: int) -> list[str]:
    """Revoke the open grants of this user or in this group (set-based); returns their ids."""
    cond = grants.c.user_id == user_id if user_id is not None else grants.c.group_id == group_id
    ended = conn.execute(
        grants.update()
        .where(cond, grants.c.status.in_(OPEN))
        .values(status=REVOKED, updated_at=now_us, version=grants.c.version + 1)
        .returning(grants.c.id)
    ).all()
    return [grant_id for (grant_id,) in ended]


# ---------------------------------------------------------------- sweeper steps


def _due(stmt: sa.Select[*tuple[Any, ...]], conn: sa.Connection) -> list[Row]:
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=grants)
    return list(conn.execute(stmt))


def _due_with_users_locked(stmt: sa.Select[*tuple[Any, ...]], conn: sa.Connection) -> list[Row]:
    """A batch of due grants that will change memberships: on PostgreSQL the users' rows are locked first,
    in the order a user DELETE takes them (user row, then its grants), so the sweep and a deprovisioning
    never wait on each other in opposite orders; the batch is then narrowed to the users it locked."""
    if conn.dialect.name == "postgresql":
        users_of = sorted({r.user_id for r in conn.execute(stmt)})
        user_store.lock(conn, users_of)
        stmt = stmt.where(grants.c.user_id.in_(users_of))
    return _due(stmt, conn)


def activate_due(conn: sa.Connection, deprov: Deprovisioner, now: datetime, limit: int) -> int:
    """Scheduled grants whose start has come: active, with their membership row (and role grants)."""
    now_us = to_micros(now)
    batch = (
        sa.select(grants)
        .where(grants.c.status == SCHEDULED, grants.c.starts_at <= now_us)
        .order_by(grants.c.starts_at)
        .limit(limit)
    )
    due = _due_with_users_locked(batch, conn)
    if not due:
        return 0
    group_rows = {g.id: g for g in group_store.names(conn, ids={r.group_id for r in due})}
    opening: list[tuple[Grant, Row]] = []
    for row in due:
        late = row.expires_at <= now_us or row.group_id not in group_rows
        status = EXPIRED if late else ACTIVE
        conn.execute(
            grants.update()
            .where(grants.c.id == row.id)
            .values(status=status, updated_at=now_us, version=grants.c.version + 1)
        )
        if not late:
            opening.append((row, group_rows[row.group_id]))
        _audit(
            conn, "grant.expire" if late else "grant.activate", "sweeper", row, now_us, None, status=status
        )
    _open(conn, deprov, opening, now, actor="sweeper")
    return len(due)


def expire_due(conn: sa.Connection, now: datetime, limit: int) -> int:
    """Active grants past their end: recorded as expired. Their membership rows expire at the same instant
    and the membership sweep (which writes the revoke events) deletes them."""
    now_us = to_micros(now)
    due = _due(
        sa.select(grants.c.id, grants.c.user_id, grants.c.group_id, grants.c.expires_at)
        .where(grants.c.status == ACTIVE, grants.c.expires_at <= now_us)
        .order_by(grants.c.expires_at)
        .limit(limit),
        conn,
    )
    if not due:
        return 0
    conn.execute(
        grants.update()
        .where(grants.c.id.in_([r.id for r in due]))
        .values(status=EXPIRED, updated_at=now_us, version=grants.c.version + 1)
    )
    for row in due:
        _audit(conn, "grant.expire", "sweeper", row, now_us, None, expiresAt=_iso(row.expires_at))
    return len(due)


def notify_due(conn: sa.Connection, deprov: Deprovisioner, now: datetime, limit: int) -> int:
    """`access.expiring` for active grants ending within the `expiry_notice` lead time, once per grant (and
    again after an extension). Sent to the `notify_applications` and to each application the group matters
    to where the user has an account, and to the user through the `[notifications]` channels (notify.py)."""
    lead = deprov.settings.expiry_notice
    if lead <= 0:
        return 0
    now_us = to_micros(now)
    due = _due(
        sa.select(grants)
        .where(
            grants.c.status == ACTIVE,
            grants.c.notified_at.is_(None),
            grants.c.expires_at > now_us,
            grants.c.expires_at <= now_us + int(lead * 1_000_000),
        )
        .order_by(grants.c.expires_at)
        .limit(limit),
        conn,
    )
    if not due:
        return 0
    user_rows = user_store.profiles(conn, {r.user_id for r in due})
    group_rows = {g.id: g for g in group_store.names(conn, ids={r.group_id for r in due})}
    held = ledger.roles_held(conn, {r.user_id for r in due})
    items: list[tuple[Mapping[str, Any], str | None]] = []
    for row in due:
        person, group = user_rows.get(row.user_id), group_rows.get(row.group_id)
        if person is None or group is None:
            continue
        targets = [a for a in deprov.settings.notify_applications if a in deprov.apps]
        targets += [
            a.name
            for a in deprov.apps_for_group(group.id, group.display_name)
            if (a.name, row.user_id) in held and a.name not in targets
        ]
        notice = {
            "id": row.id,
            "groupId": group.id,
            "groupName": group.display_name,
            "startsAt": _iso(row.starts_at),
            "expiresAt": _iso(row.expires_at),
            "justification": row.justification,
        }
        for app in targets:
            roles = held.get((app, row.user_id), [])
            event = outbox.new_event(
                ACCESS_EXPIRING,
                app,
                user_document(person),
                roles,
                now,
                grant=notice,
                expiresAt=notice["expiresAt"],
            )
            items.append((event, row.user_id))
        items += notify.access_expiring(deprov.settings, person, notice, row.expires_at, now, told=targets)
    outbox.enqueue_many(conn, items, now=now)
    conn.execute(grants.update().where(grants.c.id.in_([r.id for r in due])).values(notified_at=now_us))
    return len(due)


# ---------------------------------------------------------------- grant windows


def windows_of(row: Grant) -> tuple[Window, ...]:
    """The grant's copy of its policy's `windows` (checked when the configuration was loaded)."""
    return tuple(Window.model_validate(w) for w in row.windows or ())


def membership_span(row: Grant, now: datetime) -> tuple[int | None, int | None]:
    """(when its membership row expires, when the sweeper must add it back) for an active grant at `now`,
    in epoch microseconds. Without windows: (the grant's end, None). With windows, inside one: (the sooner
    of the window's end and the grant's, the next window start); outside: (None: no row, the next window
    start). The next start is None when it falls after the grant's end."""
    windows = windows_of(row)
    if not windows:
        return row.expires_at, None
    span = conditions.current_window(windows, now)
    ends = min(row.expires_at, to_micros(span[1])) if span else None
    nxt = conditions.next_start(windows, span[1] if span else now)
    opens = to_micros(nxt) if nxt is not None and to_micros(nxt) < row.expires_at else None
    return ends, opens


def follow_end(conn: sa.Connection, row: Grant, now: datetime) -> None:
    """An active grant's end moved (extend, a schedule's new shift end): its membership row follows, for a
    windowed grant to the sooner of its window's end and the new end, and its next window start with it (a
    reopen already due stays due: the sweeper is about to add the row)."""
    if not row.windows:
        memberships.set_expiry(conn, row.user_id, source(row.id), row.expires_at)
        return
    ends, opens = membership_span(row, now)
    if ends is not None:
        memberships.set_expiry(conn, row.user_id, source(row.id), ends)
    if row.window_opens_at is None or row.window_opens_at > to_micros(now):
        conn.execute(grants.update().where(grants.c.id == row.id).values(window_opens_at=opens))


def reopen_due(conn: sa.Connection, deprov: Deprovisioner, now: datetime, limit: int) -> int:
    """Active windowed grants whose next window has started: the membership row is back, with the window's
    end, and the role grants go out (run after the membership sweep, so the row the last window left has
    been deleted, its revokes sent)."""
    now_us = to_micros(now)
    batch = (
        sa.select(grants)
        .where(grants.c.status == ACTIVE, grants.c.window_opens_at <= now_us, grants.c.expires_at > now_us)
        .order_by(grants.c.window_opens_at)
        .limit(limit)
    )
    due = _due_with_users_locked(batch, conn)
    if not due:
        return 0
    group_rows = {g.id: g for g in group_store.names(conn, ids={r.group_id for r in due})}
    opening = [(r, group_rows[r.group_id]) for r in due if r.group_id in group_rows]
    conn.execute(  # a deleted group's grant is ended by end_access; never pick it up again
        grants.update().where(grants.c.id.in_([r.id for r in due])).values(window_opens_at=None)
    )
    _open(conn, deprov, opening, now, actor="sweeper")
    for row, _ in opening:
        _audit(conn, "grant.window", "sweeper", row, now_us, None, windowOpenedAt=_iso(row.window_opens_at))
    return len(due)


# ---------------------------------------------------------------- helpers


def _open(
    conn: sa.Connection,
    deprov: Deprovisioner,
    opening: list[tuple[Grant, Row]],
    now: datetime,
    actor: str = "jit",
) -> None:
    """Membership rows for grants becoming active, then role grants downstream (users with accounts)."""
    if not opening:
        return
    now_us = to_micros(now)
    user_store.lock(conn, [row.user_id for row, _ in opening])  # before membership rows: store.users.lock
    live: list[tuple[Grant, Row, int]] = []
    for row, group in opening:
        ends, opens = membership_span(row, now)
        if row.windows:
            conn.execute(grants.update().where(grants.c.id == row.id).values(window_opens_at=opens))
        if ends is not None:
            live.append((row, group, ends))
    memberships.add_sourced(
        conn,
        [
            {
                "group_pk": group.pk,
                "member_id": row.user_id,
                "source": source(row.id),
                "member_type": "User",
                "added_at": now_us,
                "expires_at": ends,
            }
            for row, group, ends in live
        ],
    )
    _reconcile(
        conn, deprov, [(row.user_id, group.id, group.display_name) for row, group, _ in live], now, actor
    )


def _close(conn: sa.Connection, deprov: Deprovisioner, closing: list[Grant], now: datetime) -> None:
    """Remove the membership rows of grants that end early, then revoke downstream what they gave."""
    user_store.lock(conn, [r.user_id for r in closing])  # before membership rows: store.users.lock
    for r in closing:
        memberships.remove_sourced(conn, r.user_id, source(r.id))
    names = {g.id: g.display_name for g in group_store.names(conn, ids={r.group_id for r in closing})}
    _reconcile(
        conn,
        deprov,
        [(r.user_id, r.group_id, names[r.group_id]) for r in closing if r.group_id in names],
        now,
    )


def _reconcile(
    conn: sa.Connection,
    deprov: Deprovisioner,
    changes: list[tuple[str, str, str]],
    now: datetime,
    actor: str = "jit",
) -> None:
    by_app: dict[str, list[str]] = {}
    for user_id, group_id, display_name in changes:
        for app in deprov.apps_for_group(group_id, display_name):
            by_app.setdefault(app.name, []).append(user_id)
    for name, user_ids in sorted(by_app.items()):  # application order: the lock order
        for chunk in chunks(sorted(set(user_ids))):
            deprov.reconcile(conn, deprov.apps[name], chunk, now, actor)


def _iso(micros: int | None) -> str | None:
    return format_micros(micros) if micros is not None else None


def _audit(
    conn: sa.Connection,
    action: str,
    actor: str,
    row: Row,
    now_us: int,
    http_request_id: str | None,
    **details: Any,
) -> None:
    record_access(conn, "Grant", action, actor, row, now_us, http_request_id, **details)


def record_access(
    conn: sa.Connection,
    resource_type: str,
    action: str,
    actor: str,
    row: Row,
    now_us: int,
    http_request_id: str | None,
    **details: Any,
) -> None:
    """Audit a grant or access-request event: who, which user and group, and the non-empty details."""
    audit.record(
        conn,
        actor=actor,
        action=action,
        outcome="success",
        resource_type=resource_type,
        resource_id=row.id,
        request_id=http_request_id,
        details={
            "userId": row.user_id,
            "groupId": row.group_id,
            **{k: v for k, v in details.items() if v is not None},
        },
        at_micros=now_us,
    )
