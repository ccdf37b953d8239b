"""Group memberships: one row per (group, member, source); effective membership = any live source.

A row is live while `expires_at` is NULL or in the future. Every read applies `live(now)`, so an expired
membership disappears at the instant of expiry even if the sweeper is late. This module is the one place
the JIT concerns (login, deprovisioning, grants, requests, the sweeper) read or write membership rows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from scimjit.store.db import insert_ignoring_conflicts
from scimjit.store.tables import groups, memberships

SCIM_SOURCE = "scim"


def live(now_micros: int | sa.BindParameter[Any], table: sa.Table = memberships) -> sa.ColumnElement[bool]:
    """Rows not expired at `now_micros` (a value, or a bind parameter in statements built once)."""
    return sa.or_(table.c.expires_at.is_(None), table.c.expires_at > now_micros)


def live_groups(
    members: str | Sequence[str] | sa.BindParameter[Any],
    now_micros: int | sa.BindParameter[Any],
    *,
    group_ids: Collection[str],
    names_ci: Collection[str],
    with_member: bool = True,
    constant_refs: bool = False,
) -> sa.Select[*tuple[Any, ...]]:
    """THE live-membership query: (member id, group id, lower-cased displayName) of the live direct
    memberships of `members` (one id, a list, or a bind parameter for statements built once) in the groups
    named by id (exactly) or by displayName (lower-cased). Login, deprovisioning and request checks all
    ask this. Without `with_member`, only (group id, lower-cased displayName). With `constant_refs` the ids and
    names are one bound value each rather than an expanding list, so the statement compiles once for good
    (`store.prepared.Prepared`: the login's lookup of an application's groups)."""
    member_cond = (
        memberships.c.member_id.in_(list(members))
        if isinstance(members, (list, tuple))
        else memberships.c.member_id == members
    )
    columns = (memberships.c.member_id,) if with_member else ()
    return (
        sa.select(*columns, groups.c.id, groups.c.display_name_ci)
        .join(groups, groups.c.pk == memberships.c.group_pk)
        .where(
            member_cond,
            live(now_micros),
            sa.or_(
                _one_of(groups.c.display_name_ci, names_ci, constant_refs),
                _one_of(groups.c.id, group_ids, constant_refs),
            ),
        )
    )


def _one_of(column: sa.ColumnElement[str], values: Collection[str], constant: bool) -> sa.ColumnElement[bool]:
    if not constant:
        return column.in_(sorted(values))
    if not values:
        return sa.false()
    return column.in_([sa.literal(v, column.type) for v in sorted(values)])


def live_members_of(refs: Collection[str], now_micros: int, *, exclude: str | None = None) -> sa.Select[str]:
    """The distinct ids of the live direct members of the groups named by `refs` (ids exactly, displayNames
    in any case), but `exclude`: a policy's approvers bar the requester, who are told of a new request."""
    stmt = (
        sa.select(memberships.c.member_id)
        .join(groups, groups.c.pk == memberships.c.group_pk)
        .where(
            live(now_micros),
            sa.or_(
                groups.c.display_name_ci.in_(sorted({r.lower() for r in refs})),
                groups.c.id.in_(sorted(refs)),
            ),
        )
        .distinct()
    )
    return stmt if exclude is None else stmt.where(memberships.c.member_id != exclude)


def live_member_ids(group_pk: int, now_micros: int) -> sa.Select[str]:
    """The ids of the group's live direct members, as a subquery for a set-based statement."""
    return sa.select(memberships.c.member_id).where(memberships.c.group_pk == group_pk, live(now_micros))


def expired_batch(now_micros: int, limit: int) -> sa.Select[int, str, str]:
    """Up to `limit` expired rows (group pk, member id, source), oldest expiry first: the sweeper's batch
    (the caller narrows and locks it, then hands it to `delete_keys`)."""
    m = memberships
    return (
        sa.select(m.c.group_pk, m.c.member_id, m.c.source)
        .where(m.c.expires_at <= now_micros)
        .order_by(m.c.expires_at)
        .limit(limit)
    )


def narrow_to_members(batch: sa.Select[int, str, str], member_ids: Sequence[str]) -> sa.Select[int, str, str]:
    return batch.where(memberships.c.member_id.in_(list(member_ids)))


def delete_keys(conn: sa.Connection, batch: sa.Select[int, str, str]) -> list[sa.Row[int, str, str]]:
    """Delete the rows `batch` selects (by full key); returns (group pk, member id, source) of each."""
    m = memberships
    key = sa.tuple_(m.c.group_pk, m.c.member_id, m.c.source)
    return list(
        conn.execute(m.delete().where(key.in_(batch)).returning(m.c.group_pk, m.c.member_id, m.c.source))
    )


def add_sourced(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert membership rows of a non-SCIM source (a grant), ignoring ones already there."""
    if rows:
        conn.execute(insert_ignoring_conflicts(conn, memberships), list(rows))


def set_expiry(conn: sa.Connection, member_id: str, source: str, expires_at: int) -> None:
    conn.execute(
        memberships.update()
        .where(memberships.c.source == source, memberships.c.member_id == member_id)
        .values(expires_at=expires_at)
    )


def remove_sourced(conn: sa.Connection, member_id: str, source: str) -> None:
    """Delete one member's rows of one source (by member first: the (member_id, group_pk) index, not a scan
    for the source)."""
    conn.execute(
        memberships.delete().where(memberships.c.member_id == member_id, memberships.c.source == source)
    )
