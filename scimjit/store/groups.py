"""Group rows and their memberships. Members change by delta rows only; nothing loads a whole group to
change it, and reads of `members` happen only when the response wants them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from scimjit.scim.errors import invalid_value
from scimjit.scim.schema import GROUP_URN, JIT_GROUP_URN
from scimjit.store.db import dialect_insert, execute
from scimjit.store.dialect import in_list
from scimjit.store.memberships import SCIM_SOURCE, live
from scimjit.store.prepared import Prepared
from scimjit.store.promoted import group_columns
from scimjit.store.tables import Row, groups, memberships
from scimjit.store.users import ConcurrentUpdate, document, meta

# Hot statements are built once: constructing a statement and its cache key costs more than SQLite's answer.
_GET = sa.select(groups).where(groups.c.id == sa.bindparam("id"))
_GET_FOR_UPDATE = Prepared(_GET.with_for_update())
_MEMBER_FACTS = Prepared(  # for an add: which ids are groups, and which are live members already
    lambda dialect: sa.union_all(
        sa.select(groups.c.id.label("member_id"), sa.literal("group").label("fact")).where(
            in_list(dialect, groups.c.id, "group_ids")
        ),
        sa.select(memberships.c.member_id, sa.literal("live").label("fact")).where(
            memberships.c.group_pk == sa.bindparam("pk"),
            in_list(dialect, memberships.c.member_id, "member_ids"),
            live(sa.bindparam("now")),
        ),
    )
)
_LIVE_IDS = Prepared(
    lambda dialect: sa.select(memberships.c.member_id).where(
        memberships.c.group_pk == sa.bindparam("pk"),
        in_list(dialect, memberships.c.member_id, "ids"),
        live(sa.bindparam("now")),
    )
)
_LIVE_MEMBERS_UP_TO = Prepared(  # how many live members, counting no further than the limit: bounded work
    sa.select(sa.func.count().label("n")).select_from(
        sa.select(memberships.c.member_id)
        .where(memberships.c.group_pk == sa.bindparam("pk"), live(sa.bindparam("now")))
        .distinct()
        .limit(sa.bindparam("limit"))
        .subquery()
    )
)
_BUMP = Prepared(
    groups.update()
    .where(groups.c.pk == sa.bindparam("b_pk"), groups.c.version == sa.bindparam("b_old_version"))
    .values(version=sa.bindparam("b_new_version"), last_modified=sa.bindparam("b_modified"))
    .returning(*groups.c)
)
_ADD: dict[str, Prepared] = {}  # per dialect: insert, or revive a same-source row that has expired
_ADDED = ("group_pk", "member_id", "source", "member_type", "display", "added_at", "expires_at")


def _add_statement(conn: sa.Connection) -> Prepared:
    """INSERT ... ON CONFLICT DO UPDATE that only revives an expired row of the same source, so a re-add
    after expiry starts a fresh lifetime while a live row (and its TTL clock) is left alone."""
    stmt = _ADD.get(conn.dialect.name)
    if stmt is None:
        insert = dialect_insert(conn, memberships)
        stmt = insert.on_conflict_do_update(
            index_elements=[memberships.c.group_pk, memberships.c.member_id, memberships.c.source],
            set_={
                "added_at": insert.excluded.added_at,
                "expires_at": insert.excluded.expires_at,
                "display": insert.excluded.display,
                "member_type": insert.excluded.member_type,
            },
            where=sa.and_(
                memberships.c.expires_at.is_not(None), memberships.c.expires_at <= insert.excluded.added_at
            ),
        )
        stmt = _ADD[conn.dialect.name] = Prepared(stmt, _ADDED)
    return stmt


def get(conn: sa.Connection, group_id: str, *, for_update: bool = False) -> Any:
    if for_update:  # every group write starts here: compiled once, run on the driver (`db.execute`)
        rows = execute(conn, _GET_FOR_UPDATE, {"id": group_id})
        return rows[0] if rows else None
    return conn.execute(_GET, {"id": group_id}).first()


def find_by_ref(conn: sa.Connection, ref: str) -> list[Row]:
    """(pk, id, display_name, display_name_ci) of the group with id `ref`, or else of up to two groups with
    displayName `ref` (case-insensitively; two mean the name is ambiguous)."""
    cols = (groups.c.pk, groups.c.id, groups.c.display_name, groups.c.display_name_ci)
    row = conn.execute(sa.select(*cols).where(groups.c.id == ref)).first()
    if row is not None:
        return [row]
    return list(conn.execute(sa.select(*cols).where(groups.c.display_name_ci == ref.lower()).limit(2)).all())


def names(conn: sa.Connection, *, ids: Iterable[str] = (), pks: Iterable[int] = ()) -> list[Row]:
    """(pk, id, display_name) of the groups with these ids or these pks, in one query."""
    cond = groups.c.id.in_(set(ids)) if ids else groups.c.pk.in_(list(pks))
    return list(conn.execute(sa.select(groups.c.pk, groups.c.id, groups.c.display_name).where(cond)))


def insert(conn: sa.Connection, doc: Mapping[str, Any], now_micros: int) -> Any:
    return conn.execute(
        groups.insert()
        .values(
            id=str(uuid.uuid4()),
            data=dict(doc),
            version=1,
            created=now_micros,
            last_modified=now_micros,
            **group_columns(doc, JIT_GROUP_URN),
        )
        .returning(*groups.c)
    ).one()


def update(conn: sa.Connection, current: Any, doc: Mapping[str, Any] | None, now_micros: int) -> Any:
    """Store a new document (or just bump the version when only members changed), compare-and-set."""
    values: dict[str, Any] = {
        "version": current.version + 1,
        "last_modified": max(now_micros, current.last_modified + 1),
    }
    if doc is None:  # members changed only: the hot path of IdP membership PATCHes
        bump = {"b_pk": current.pk, "b_old_version": current.version, "b_new_version": values["version"]}
        bumped = execute(conn, _BUMP, {**bump, "b_modified": values["last_modified"]})
        row = bumped[0] if bumped else None
    else:
        values.update(data=dict(doc), **group_columns(doc, JIT_GROUP_URN))
        row = conn.execute(
            groups.update()
            .where(groups.c.pk == current.pk, groups.c.version == current.version)
            .values(**values)
            .returning(*groups.c)
        ).first()
    if row is None:
        raise ConcurrentUpdate(current.id)
    return row


def delete(conn: sa.Connection, current: Any) -> None:
    conn.execute(memberships.delete().where(memberships.c.group_pk == current.pk))
    conn.execute(memberships.delete().where(memberships.c.member_id == current.id))
    conn.execute(groups.delete().where(groups.c.pk == current.pk))


def _live_ids(conn: sa.Connection, group_pk: int, ids: Sequence[str], now_micros: int) -> set[str]:
    out: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        out.update(r[0] for r in execute(conn, _LIVE_IDS, {"pk": group_pk, "ids": chunk, "now": now_micros}))
    return out


def add_members(
    conn: sa.Connection,
    group: Any,
    member_ids: Iterable[str],
    now_micros: int,
    default_ttl: int | None = None,
    displays: Mapping[str, str] | None = None,
) -> list[str]:
    """Add SCIM-sourced memberships; returns the ids that became effective members. They expire after the
    group's own `membershipTTL`, else after `default_ttl` seconds (the configured default), else never.
    `displays` are the clients' `members.display` values, kept as sent."""
    ids = list(dict.fromkeys(i for i in member_ids if i))
    displays = displays or {}
    if not ids:
        return []
    if group.id in ids:
        raise invalid_value("a group cannot be a member of itself")
    # Ids that name no resource are accepted (as Users): RFC 7644 asks no referential integrity, and IdPs that
    # provision memberships and users concurrently (and the conformance tools) expect the add to succeed.
    # Such a member grants nothing: entitlement is checked against the user a login resolves to.
    group_ids: set[str] = set()
    already: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        params = {"group_ids": chunk, "member_ids": chunk, "pk": group.pk, "now": now_micros}
        for member_id, fact in execute(conn, _MEMBER_FACTS, params):
            (group_ids if fact == "group" else already).add(member_id)
    ttl = group.membership_ttl or default_ttl
    expires = now_micros + ttl * 1_000_000 if ttl else None
    rows = [
        {
            "group_pk": group.pk,
            "member_id": i,
            "source": SCIM_SOURCE,
            "member_type": "Group" if i in group_ids else "User",
            "display": displays.get(i),
            "added_at": now_micros,
            "expires_at": expires,
        }
        for i in ids
    ]
    execute(conn, _add_statement(conn), rows)
    return [i for i in ids if i not in already]


def remove_members(
    conn: sa.Connection, group: Any, member_ids: Iterable[str] | None, now_micros: int
) -> list[str]:
    """Remove SCIM-sourced memberships (all of them when `member_ids` is None); grants are untouched.
    Returns the ids that are no longer effective members."""
    stmt = memberships.delete().where(memberships.c.group_pk == group.pk, memberships.c.source == SCIM_SOURCE)
    if member_ids is not None:
        ids = list(dict.fromkeys(member_ids))
        if not ids:
            return []
        stmt = stmt.where(memberships.c.member_id.in_(ids))
    removed = [r[0] for r in conn.execute(stmt.returning(memberships.c.member_id))]
    if not removed:
        return []
    still = _live_ids(conn, group.pk, removed, now_micros)
    return [i for i in removed if i not in still]


def replace_members(
    conn: sa.Connection,
    group: Any,
    member_ids: Sequence[str],
    now_micros: int,
    default_ttl: int | None = None,
    displays: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Make the SCIM-sourced members exactly `member_ids`, touching only the difference: members that stay
    keep their rows (and so their TTL clock). Returns (became members, stopped being members)."""
    wanted = set(member_ids)
    current = {
        r[0]
        for r in conn.execute(
            sa.select(memberships.c.member_id).where(
                memberships.c.group_pk == group.pk, memberships.c.source == SCIM_SOURCE, live(now_micros)
            )
        )
    }
    gone = [i for i in current if i not in wanted]
    removed: list[str] = []
    for start in range(0, len(gone), 500):
        removed += remove_members(conn, group, gone[start : start + 500], now_micros)
    added = add_members(
        conn, group, [i for i in member_ids if i not in current], now_micros, default_ttl, displays
    )
    return added, removed


def members_of(
    conn: sa.Connection, group_pks: Iterable[int], now_micros: int, base_url: str
) -> dict[int, list[dict[str, Any]]]:
    """Live members of each group (sources merged) in one query on the membership table alone: no join to
    users, so a large group costs one index range scan."""
    pks = list(group_pks)
    out: dict[int, list[dict[str, Any]]] = {pk: [] for pk in pks}
    if not pks:
        return out
    stmt = (
        sa.select(
            memberships.c.group_pk,
            memberships.c.member_id,
            sa.func.min(memberships.c.member_type),
            sa.func.max(memberships.c.display),
        )
        .where(memberships.c.group_pk.in_(pks), live(now_micros))
        .group_by(memberships.c.group_pk, memberships.c.member_id)
        .order_by(memberships.c.group_pk, memberships.c.member_id)
    )
    for group_pk, member_id, member_type, display in conn.execute(stmt):
        endpoint = "Groups" if member_type == "Group" else "Users"
        member = {"value": member_id, "$ref": f"{base_url}/{endpoint}/{member_id}", "type": member_type}
        if display:
            member["display"] = display
        out[group_pk].append(member)
    return out


def members_up_to(
    conn: sa.Connection, group_pk: int, now_micros: int, base_url: str, limit: int
) -> list[dict[str, Any]] | None:
    """The group's live members if there are at most `limit`, else None, without reading more than
    `limit + 1` index entries: what a PATCH answer needs to choose between 200 with the group and 204."""
    (count,) = execute(conn, _LIVE_MEMBERS_UP_TO, {"pk": group_pk, "now": now_micros, "limit": limit + 1})
    if count.n > limit:
        return None
    return members_of(conn, [group_pk], now_micros, base_url)[group_pk]


def render(row: Any, base_url: str, members: list[dict[str, Any]] | None) -> dict[str, Any]:
    doc = document(GROUP_URN, row.id, row.data)
    if members:
        doc["members"] = members
    doc["meta"] = meta("Group", row, f"{base_url}/Groups/{row.id}")
    return doc
