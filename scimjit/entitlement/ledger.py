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
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.store import users as user_rows
from scimjit.store.db import execute
from scimjit.store.prepared import Prepared
from scimjit.store.tables import Row, accounts


class AccountStatus(StrEnum):
    """An account's `status` column (stored, rendered and compared as the plain string)."""

    PENDING = "pending"
    ACTIVE = "active"
    DISABLED = "disabled"
    DELETED = "deleted"
    FAILED = "failed"


PENDING = AccountStatus.PENDING
ACTIVE = AccountStatus.ACTIVE
DISABLED = AccountStatus.DISABLED
DELETED = AccountStatus.DELETED
FAILED = AccountStatus.FAILED
LIVE_STATUSES = (ACTIVE, PENDING, DISABLED)  # an account downstream may still hold

Account = Row  # a whole `accounts` row


# The login's view of an account, read in the same statement as the user (see `identity.Lookups`).
SUBJECT_COLUMNS = (
    accounts.c.id.label("a_id"),
    accounts.c.status.label("a_status"),
    accounts.c.downstream_id.label("a_downstream_id"),
    accounts.c.roles.label("a_roles"),
    accounts.c.profile_hash.label("a_profile_hash"),
    accounts.c.last_login_at.label("a_last_login_at"),
    accounts.c.version.label("a_version"),
)


def outerjoin_accounts(left: sa.FromClause, user_id: sa.ColumnElement[str], application: str) -> sa.Join:
    """`left` joined to each row's account in `application` (if any): the login's single read."""
    return left.outerjoin(
        accounts, sa.and_(accounts.c.user_id == user_id, accounts.c.application == application)
    )


def profile_hash(user: Mapping[str, Any]) -> str:
    """A fingerprint of the SCIM profile as sent downstream (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(user, option=orjson.OPT_SORT_KEYS)).hexdigest()


# The first login's statements, compiled once (`store.prepared`): built and compiled per call they were most
# of the claim transaction's own CPU (py-spy of bench L2: SQLAlchemy's cache key and VALUES handling).
_GET = Prepared(
    sa.select(accounts).where(
        accounts.c.application == sa.bindparam("application"), accounts.c.user_id == sa.bindparam("user_id")
    )
)
_PENDING_COLUMNS = (
    "application",
    "user_id",
    "user_name",
    "status",
    "roles",
    "profile_hash",
    "first_login_at",
    "last_login_at",
    "created_at",
    "updated_at",
    "version",
)
_INSERT_PENDING = Prepared(accounts.insert().returning(accounts.c.id), _PENDING_COLUMNS)


def get(conn: sa.Connection, application: str, user_id: str) -> Account | None:
    """The (application, user) account row, or None (its columns read as `row.status`, `row.roles`, ...)."""
    found = execute(conn, _GET, {"application": application, "user_id": user_id})
    return found[0] if found else None


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
    (inserted,) = execute(
        conn,
        _INSERT_PENDING,
        {
            "application": application,
            "user_id": user_id,
            "user_name": user_name,
            "status": str(PENDING),
            "roles": list(roles),
            "profile_hash": profile,
            "first_login_at": now_us,
            "last_login_at": now_us,
            "created_at": now_us,
            "updated_at": now_us,
            "version": 1,
        },
    )
    account_id: int = inserted.id
    return account_id


def update(conn: sa.Connection, current: Account, now: datetime, **values: Any) -> bool:
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
    keys = tuple(sorted(values))
    params = {
        "w_application": application,
        "w_user_id": user_id,
        "v_status": str(status),
        "v_updated_at": to_micros(now),
        **{f"w_from_{i}": str(old) for i, old in enumerate(only_from)},
        **{f"v_{key}": values[key] for key in keys},
    }
    return len(execute(conn, _status_change(len(only_from), keys), params)) == 1


_STATUS_CHANGES: dict[tuple[int, tuple[str, ...]], Prepared] = {}


def _status_change(only_from: int, keys: tuple[str, ...]) -> Prepared:
    """`set_status`'s UPDATE for one shape (how many statuses it may change from, which other columns it
    sets), compiled once: built per call through SQLAlchemy it was the largest part of recording a first
    login's delivery (py-spy of bench L2: the cache key, the execution context). A handful of shapes exist."""
    prepared = _STATUS_CHANGES.get((only_from, keys))
    if prepared is None:
        where = [
            accounts.c.application == sa.bindparam("w_application"),
            accounts.c.user_id == sa.bindparam("w_user_id"),
        ]
        if only_from:
            where.append(accounts.c.status.in_([sa.bindparam(f"w_from_{i}") for i in range(only_from)]))
        sets = {
            key: sa.bindparam(f"v_{key}", type_=accounts.c[key].type)
            for key in ("status", "updated_at", *keys)
        }
        statement = (
            accounts.update()
            .where(*where)
            .values(version=accounts.c.version + 1, **sets)
            .returning(accounts.c.id)
        )
        prepared = _STATUS_CHANGES.setdefault((only_from, keys), Prepared(statement))
    return prepared


def remove(conn: sa.Connection, application: str, user_id: str, *, only_from: Sequence[str]) -> None:
    conn.execute(
        accounts.delete().where(
            accounts.c.application == application,
            accounts.c.user_id == user_id,
            accounts.c.status.in_(list(only_from)),
        )
    )


# ------------------------------------------------------------------------ deprovisioning and sweeps


def _lock(conn: sa.Connection, stmt: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
    """Row locks on PostgreSQL (SQLite serialises writers anyway)."""
    if conn.dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=skip_locked, of=accounts)
    return stmt


def of_user(conn: sa.Connection, user_id: str, statuses: Sequence[str]) -> list[Account]:
    """The user's accounts in these statuses, locked, in the lock order of `for_reconcile` (application,
    then id)."""
    stmt = (
        sa.select(accounts)
        .where(accounts.c.user_id == user_id, accounts.c.status.in_(list(statuses)))
        .order_by(accounts.c.application, accounts.c.id)
    )
    return list(conn.execute(_lock(conn, stmt)))


def for_reconcile(conn: sa.Connection, application: str, user_ids: Sequence[str]) -> list[Account]:
    """The live accounts of these users in `application`, locked, each with its user's `p_user_name`,
    `p_active`, `p_data` (an account of a deleted user is not returned: it is not reconciled)."""
    joined, person = user_rows.join_profile(accounts, accounts.c.user_id, "p_")
    stmt = (
        sa.select(accounts, *person)
        .select_from(joined)
        .where(
            accounts.c.application == application,
            accounts.c.user_id.in_(list(user_ids)),
            accounts.c.status.in_(LIVE_STATUSES),
        )
        # Lock order everywhere: application name, then account id (callers take applications in name
        # order), so sweepers, SCIM writes and grants never wait on each other in a cycle.
        .order_by(accounts.c.id)
    )
    return list(conn.execute(_lock(conn, stmt)).all())


def set_many(conn: sa.Connection, ids: Sequence[int], now_us: int, **values: Any) -> None:
    """One set-based UPDATE of these accounts (bumping `version`): a reconcile outcome shared by many."""
    conn.execute(
        accounts.update()
        .where(accounts.c.id.in_(list(ids)))
        .values(version=accounts.c.version + 1, updated_at=now_us, **values)
    )


def mark_recheck(
    conn: sa.Connection, application: str, user_ids: Sequence[str] | sa.Select[Any], now_us: int
) -> int:
    """Ask the sweeper to reconcile the live accounts of these users (a list, or a subquery of ids) in
    `application`, never later than already asked."""
    return conn.execute(
        accounts.update()
        .where(
            accounts.c.application == application,
            accounts.c.status.in_(LIVE_STATUSES),
            accounts.c.user_id.in_(user_ids if isinstance(user_ids, sa.Select) else list(user_ids)),
            sa.or_(accounts.c.recheck_at.is_(None), accounts.c.recheck_at > now_us),
        )
        .values(recheck_at=now_us)
    ).rowcount


def due_rechecks(conn: sa.Connection, now_us: int, limit: int) -> list[sa.Row[int, str, str]]:
    """(id, application, user_id) of up to `limit` accounts whose re-check is due, locked (skipping rows
    another sweeper holds)."""
    stmt = (
        sa.select(accounts.c.id, accounts.c.application, accounts.c.user_id)
        .where(accounts.c.recheck_at <= now_us)
        .order_by(accounts.c.recheck_at, accounts.c.id)
        .limit(limit)
    )
    return list(conn.execute(_lock(conn, stmt, skip_locked=True)).all())


def clear_rechecks(conn: sa.Connection, ids: Sequence[int], now_us: int) -> None:
    """Re-checks done: cleared unless reconcile re-armed them for later (a grace period still running)."""
    conn.execute(
        accounts.update()
        .where(accounts.c.id.in_(list(ids)), accounts.c.recheck_at <= now_us)
        .values(recheck_at=None)
    )


def idle(
    conn: sa.Connection,
    application: str,
    cutoff_us: int,
    limit: int,
    *,
    after: int = 0,
    lock: bool = False,
) -> list[Row]:
    """Up to `limit` active accounts of `application` (by id, after `after`) whose last login is before
    `cutoff_us` (an account that never logged in counts from `created_at`), with their user's `p_user_name`,
    `p_active`, `p_data`. Both halves of the test are ranges of the (application, status, last_login_at)
    index, so the idle scan never reads the whole ledger. Locked (skipping rows another writer holds) if
    asked: the sweeper's batch."""
    joined, person = user_rows.join_profile(accounts, accounts.c.user_id, "p_")
    stmt = (
        sa.select(accounts, *person)
        .select_from(joined)
        .where(
            accounts.c.application == application,
            accounts.c.status == ACTIVE,
            sa.or_(
                accounts.c.last_login_at < cutoff_us,
                sa.and_(accounts.c.last_login_at.is_(None), accounts.c.created_at < cutoff_us),
            ),
            accounts.c.id > after,
        )
        .order_by(accounts.c.id)
        .limit(limit)
    )
    if lock:
        return list(conn.execute(_lock(conn, stmt, skip_locked=True)).all())
    return list(conn.execute(stmt).all())


def last_seen(account: Row) -> int:
    """When the account was last used: its last login, or its creation if it never logged in."""
    return int(account.last_login_at if account.last_login_at is not None else account.created_at)


def roles_held(conn: sa.Connection, user_ids: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """(application, user id) -> roles, of these users' live accounts, in one query."""
    stmt = sa.select(accounts.c.application, accounts.c.user_id, accounts.c.roles).where(
        accounts.c.user_id.in_(set(user_ids)), accounts.c.status.in_(LIVE_STATUSES)
    )
    return {(a.application, a.user_id): list(a.roles or ()) for a in conn.execute(stmt)}


def downstream_ids(conn: sa.Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    """The downstream ids of these (application, user) accounts in one read (a worker's claimed round);
    accounts that do not exist are absent."""
    by_app: dict[str, set[str]] = {}
    for app, user in keys:
        by_app.setdefault(app, set()).add(user)
    if not by_app:
        return {}
    # application = … AND user_id IN (…) per application: the unique (application, user_id) index serves each
    # (SQLite scans the whole table for a row-value `(application, user_id) IN (VALUES …)`)
    rows = conn.execute(
        sa.select(accounts.c.application, accounts.c.user_id, accounts.c.downstream_id).where(
            sa.or_(
                *(
                    sa.and_(accounts.c.application == app, accounts.c.user_id.in_(sorted(users)))
                    for app, users in by_app.items()
                )
            )
        )
    )
    return {(app, user): downstream for app, user, downstream in rows}


def record_downstream_id(conn: sa.Connection, application: str, user_id: str, downstream_id: str) -> None:
    """Remember the downstream id a delivery reported, if the ledger has none yet."""
    conn.execute(
        accounts.update()
        .where(
            accounts.c.application == application,
            accounts.c.user_id == user_id,
            accounts.c.downstream_id.is_(None),
        )
        .values(downstream_id=downstream_id)
    )


# ------------------------------------------------------------------------ the reconciler's pages


def count(conn: sa.Connection, applications: Sequence[str]) -> int:
    stmt = sa.select(sa.func.count()).select_from(accounts).where(accounts.c.application.in_(applications))
    return int(conn.execute(stmt).scalar_one())


def page(conn: sa.Connection, applications: Sequence[str], after: int, limit: int) -> list[Row]:
    """The next `limit` accounts (by id) of these applications, unlocked, with their user's `u_id`,
    `u_user_name`, `u_active`, `u_data` (None when the user is gone). The application test is wrapped in
    coalesce() so SQLite walks the primary key (`id > after ... LIMIT n`) instead of the (application,
    user_id) index plus a sort of the whole application per batch). The batch is chosen first and joined to
    users after, so no planner joins the rest of the table before applying the LIMIT."""
    batch = (
        sa.select(accounts.c.id)
        .where(sa.func.coalesce(accounts.c.application, "").in_(list(applications)), accounts.c.id > after)
        .order_by(accounts.c.id)
        .limit(limit)
        .subquery("batch")
    )
    joined, person = user_rows.join_profile(
        accounts.join(batch, batch.c.id == accounts.c.id), accounts.c.user_id, "u_", outer=True
    )
    stmt = (
        sa.select(
            accounts.c.id,
            accounts.c.application,
            accounts.c.user_id,
            accounts.c.user_name,
            accounts.c.downstream_id,
            accounts.c.status,
            accounts.c.roles,
            accounts.c.version,
            *person,
        )
        .select_from(joined)
        .order_by(accounts.c.id)
    )
    return list(conn.execute(stmt).all())


def by_ids(conn: sa.Connection, ids: Sequence[int], *, lock: bool = False) -> list[Account]:
    """These accounts in id order (the lock order of deprovisioning); locked, skipping rows another writer
    holds, if asked."""
    stmt = sa.select(accounts).where(accounts.c.id.in_(list(ids))).order_by(accounts.c.id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(conn.execute(stmt).all())
