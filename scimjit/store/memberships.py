"""Group memberships: one row per (group, member, source); effective membership = any live source.

A row is live while `expires_at` is NULL or in the future. Every read applies `live(now)`, so an expired
membership disappears at the instant of expiry even if the sweeper is late.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from scimjit.store.tables import groups, memberships

SCIM_SOURCE = "scim"


def live(now_micros: int | sa.BindParameter[Any], table: sa.Table = memberships) -> sa.ColumnElement[bool]:
    """Rows not expired at `now_micros` (a value, or a bind parameter in statements built once)."""
    return sa.or_(table.c.expires_at.is_(None), table.c.expires_at > now_micros)


def group_ids_of_member(conn: sa.Connection, member_id: str, now_micros: int) -> list[tuple[str, str]]:
    """(group id, displayName) of every group the member is live in (direct membership), in name order."""
    stmt = (
        sa.select(groups.c.id, groups.c.display_name)
        .join(memberships, memberships.c.group_pk == groups.c.pk)
        .where(memberships.c.member_id == member_id, live(now_micros))
        .group_by(groups.c.id, groups.c.display_name)
        .order_by(groups.c.display_name, groups.c.id)
    )
    return [(r[0], r[1]) for r in conn.execute(stmt)]


def is_live_member(conn: sa.Connection, group_pks: Iterable[int], member_id: str, now_micros: int) -> bool:
    pks = list(group_pks)
    if not pks:
        return False
    stmt = (
        sa.select(sa.literal(1))
        .select_from(memberships)
        .where(memberships.c.group_pk.in_(pks), memberships.c.member_id == member_id, live(now_micros))
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def member_rows(conn: sa.Connection, group_pk: int, now_micros: int) -> list[Any]:
    """Live members of one group, one row per member (sources merged), with the earliest-known type."""
    stmt = (
        sa.select(memberships.c.member_id, sa.func.min(memberships.c.member_type).label("member_type"))
        .where(memberships.c.group_pk == group_pk, live(now_micros))
        .group_by(memberships.c.member_id)
        .order_by(memberships.c.member_id)
    )
    return list(conn.execute(stmt))
