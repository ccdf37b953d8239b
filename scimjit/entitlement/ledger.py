"""The account ledger: which user has an account in which application, and what was last sent there.

One row per (application, user), enforced by a unique constraint: that constraint is what makes concurrent
first logins (two tabs, two replicas) create exactly one account, whatever the timing. `roles` and
`profile_hash` record what downstream was last told, so a later login can tell cheaply whether an
`account.update` is due.

Statuses: `pending` (creation queued or in flight), `active`, `disabled`, `deleted`, `failed` (creation hit a
permanent error; its event is dead and can be retried).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from scimjit.clock import from_micros, isoformat, to_micros
from scimjit.store.tables import accounts

PENDING = "pending"
ACTIVE = "active"
DISABLED = "disabled"
DELETED = "deleted"
FAILED = "failed"


def profile_hash(user: Mapping[str, Any]) -> str:
    """A fingerprint of the SCIM profile as sent downstream (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(user, option=orjson.OPT_SORT_KEYS)).hexdigest()


def get(conn: sa.Connection, application: str, user_id: str) -> Any:
    stmt = sa.select(accounts).where(accounts.c.application == application, accounts.c.user_id == user_id)
    return conn.execute(stmt).first()


def insert_pending(
    conn: sa.Connection,
    *,
    application: str,
    user_id: str,
    user_name: str,
    roles: Sequence[str],
    profile: str,
    now: datetime,
) -> int:
    """Claim the (application, user) slot. Raises IntegrityError when another login got there first."""
    now_us = to_micros(now)
    account_id: int = conn.execute(
        accounts.insert()
        .values(
            application=application,
            user_id=user_id,
            user_name=user_name,
            status=PENDING,
            roles=list(roles),
            profile_hash=profile,
            first_login_at=now_us,
            last_login_at=now_us,
            created_at=now_us,
            updated_at=now_us,
            version=1,
        )
        .returning(accounts.c.id)
    ).scalar_one()
    return account_id


def update(conn: sa.Connection, current: Any, now: datetime, **values: Any) -> bool:
    """Compare-and-set on `version`; False if a concurrent writer changed the row first."""
    done = conn.execute(
        accounts.update()
        .where(accounts.c.id == current.id, accounts.c.version == current.version)
        .values(version=current.version + 1, updated_at=to_micros(now), **values)
    )
    return done.rowcount == 1


def set_status(
    conn: sa.Connection,
    application: str,
    user_id: str,
    status: str,
    now: datetime,
    *,
    only_from: Sequence[str] = (),
    **values: Any,
) -> bool:
    """Unconditional status change (the worker recording a delivery result), optionally only from some
    statuses, so a late result cannot undo a newer decision."""
    cond = sa.and_(accounts.c.application == application, accounts.c.user_id == user_id)
    if only_from:
        cond = sa.and_(cond, accounts.c.status.in_(list(only_from)))
    done = conn.execute(
        accounts.update()
        .where(cond)
        .values(status=status, updated_at=to_micros(now), version=accounts.c.version + 1, **values)
    )
    return done.rowcount == 1


def remove(conn: sa.Connection, application: str, user_id: str, *, only_from: Sequence[str]) -> None:
    conn.execute(
        accounts.delete().where(
            accounts.c.application == application,
            accounts.c.user_id == user_id,
            accounts.c.status.in_(list(only_from)),
        )
    )


def list_accounts(
    conn: sa.Connection,
    *,
    application: str | None = None,
    user_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
    after_id: int = 0,
) -> list[dict[str, Any]]:
    stmt = sa.select(accounts).where(accounts.c.id > after_id).order_by(accounts.c.id).limit(limit)
    if application:
        stmt = stmt.where(accounts.c.application == application)
    if user_id:
        stmt = stmt.where(accounts.c.user_id == user_id)
    if status:
        stmt = stmt.where(accounts.c.status == status)
    return [render(r) for r in conn.execute(stmt)]


def render(row: Any) -> dict[str, Any]:
    def when(us: int | None) -> str | None:
        return isoformat(from_micros(us)) if us is not None else None

    return {
        "application": row.application,
        "userId": row.user_id,
        "userName": row.user_name,
        "downstreamId": row.downstream_id,
        "status": row.status,
        "roles": list(row.roles or ()),
        "firstLoginAt": when(row.first_login_at),
        "lastLoginAt": when(row.last_login_at),
        "createdAt": when(row.created_at),
        "updatedAt": when(row.updated_at),
    }
