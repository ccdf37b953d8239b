"""SCIM resource operations as single transactions: the HTTP layer and Bulk call these, nothing else writes
Users and Groups. Each write runs the change listener (JIT outbox events) inside the same transaction.

Async code runs them with `run_write`, which hashes a password the write sets before the write, off the
event loop (`PasswordToHash`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa

from scimjit.metrics import SCIM_IGNORED
from scimjit.scim.errors import ScimError, mutability, not_found, precondition_failed
from scimjit.scim.ignored import Ignored
from scimjit.scim.patch import PatchResult, apply_patch
from scimjit.scim.projection import Projection, guarded_needles
from scimjit.scim.resource import normalise
from scimjit.scim.schema import Registry
from scimjit.store import audit
from scimjit.store import groups as group_rows
from scimjit.store import users as user_rows
from scimjit.store.db import Database, RawReader
from scimjit.store.events import ChangeListener
from scimjit.store.passwords import hash_password_off_loop
from scimjit.store.query import Page

USER, GROUP = "User", "Group"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Context:
    """What one request's storage work needs."""

    db: Database
    registry: Registry
    listener: ChangeListener
    now_micros: int
    base_url: str
    projection: (
        Projection  # what the response wants: expensive parts (members, groups) are read only if wanted
    )
    actor: str | None = None  # the token name, for the audit trail
    request_id: str | None = None  # the HTTP request id, for the audit trail
    strict_attributes: bool = False  # the setting: unknown names in a write are 400, not ignored
    # group PATCH: render the members only if the group has at most this many, else answer without the
    # document (204); None renders as the projection says (Bulk, and requests naming `attributes`)
    members_cap: int | None = None
    patch_max_operations: int | None = None  # the setting: a PATCH with more operations is `tooMany`
    # password -> its stored hash, made before the write by `run_write` (a write never hashes: `PasswordToHash`)
    password_hashes: Mapping[str, str] = field(default_factory=dict)

    def ignored(self) -> Ignored:
        """A fresh record of what one write ignores (see `scim.ignored`)."""
        return Ignored(strict=self.strict_attributes)


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a write: the full representation (before projection) and its version."""

    document: dict[str, Any]
    version: int
    complete: bool = True  # False: `members` left out because the group is over `Context.members_cap`


class PasswordToHash(Exception):
    """A user write met a password that `Context.password_hashes` has no hash for, and wrote nothing: it is
    raised before the write transaction (POST, PUT) or inside it, which rolls back (PATCH, whose password is
    known only once the operations are applied). `run_write` hashes it and runs the write again.

    Why not hash where the password is found: scrypt takes hundreds of milliseconds and 128 MiB, which must
    not block the event loop (SQLite work runs inline on it) nor keep a transaction and its row lock open."""

    def __init__(self, password: str) -> None:
        super().__init__("the write sets a password that has not been hashed yet")  # never the password
        self.password = password


async def run_write(ctx: Context, fn: Callable[..., T], *args: Any) -> T:
    """`fn(ctx, *args)` from async code (`Database.run`), a password it sets hashed first in a worker thread."""
    while True:
        try:
            return await ctx.db.run(fn, ctx, *args)
        except PasswordToHash as needed:
            if needed.password in ctx.password_hashes:  # cannot happen: the lookup would have found it
                raise
            hashed = await hash_password_off_loop(needed.password)
            ctx = dataclasses.replace(ctx, password_hashes={**ctx.password_hashes, needed.password: hashed})


def _etag(version: int) -> str:
    return f'W/"{version}"'


def check_precondition(if_match: str | None, version: int) -> None:
    """`If-Match` (RFC 7644 §3.14): any listed tag must be current, `*` matches anything."""
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",")]
    current = _etag(version)
    if "*" in tags:
        return
    if not any(t == current or t == current[2:] for t in tags):
        raise precondition_failed(f"If-Match {if_match} does not match the current version {current}")


# ---------------------------------------------------------------- reads


def read_one(ctx: Context, kind: str, resource_id: str) -> tuple[dict[str, Any], int]:
    if kind == USER:
        return _read_user(ctx, resource_id)
    with ctx.db.read() as conn:
        row = group_rows.get(conn, resource_id)
        if row is None:
            raise not_found(f"Group {resource_id} not found")
        return render_groups(conn, ctx, [row])[0], row.version


def _read_user(ctx: Context, user_id: str) -> tuple[dict[str, Any], int]:
    """`GET /Users/{id}`, the hottest read: one statement (the user with its live groups), no transaction."""
    statement, params = _user_read(ctx, user_id=user_id)
    return _user_answer(ctx, user_id, ctx.db.fetch(statement, params))


async def read_user_async(ctx: Context, user_id: str) -> tuple[dict[str, Any], int]:
    """`read_one` of a user from the event loop: its one statement awaited there on PostgreSQL
    (`Database.fetch_async`), inline on SQLite as before."""
    statement, params = _user_read(ctx, user_id=user_id)
    return _user_answer(ctx, user_id, await ctx.db.fetch_async(statement, params))


def _user_read(ctx: Context, **which: str) -> tuple[Any, dict[str, Any]]:
    return user_rows.one_read(now_micros=ctx.now_micros, with_groups=ctx.projection.wants("groups"), **which)


def _user_answer(ctx: Context, user_id: str, rows: list[Any]) -> tuple[dict[str, Any], int]:
    found = user_rows.one_found(rows, ctx.projection.wants("groups"))
    if found is None:
        raise not_found(f"User {user_id} not found")
    row, group_list = found
    return user_rows.render(row, ctx.base_url, group_list), row.version


def lookup_user(ctx: Context, user_name_key: str) -> tuple[Page, list[dict[str, Any]]]:
    """The page of a `userName eq` search (`store.query.user_name_lookup`): the one user with that key, or
    none, and its own count, read by one statement with no transaction."""
    statement, params = _user_read(ctx, key=user_name_key)
    return _lookup_page(ctx, ctx.db.fetch(statement, params))


async def lookup_user_async(ctx: Context, user_name_key: str) -> tuple[Page, list[dict[str, Any]]]:
    """`lookup_user` from the event loop (`Database.fetch_async`), as `read_user_async` is `read_one`'s."""
    statement, params = _user_read(ctx, key=user_name_key)
    return _lookup_page(ctx, await ctx.db.fetch_async(statement, params))


def _lookup_page(ctx: Context, rows: list[Any]) -> tuple[Page, list[dict[str, Any]]]:
    found = user_rows.one_found(rows, ctx.projection.wants("groups"))
    if found is None:
        return Page(0, [], 1), []
    row, group_list = found
    return Page(1, [row], 1), [user_rows.render(row, ctx.base_url, group_list)]


def render_users(conn: sa.Connection | RawReader, ctx: Context, rows: list[Any]) -> list[dict[str, Any]]:
    memberships = (
        user_rows.groups_of(conn, [r.id for r in rows], ctx.now_micros)
        if ctx.projection.wants("groups")
        else {}
    )
    return [user_rows.render(r, ctx.base_url, memberships.get(r.id)) for r in rows]


def encode_users(
    conn: sa.Connection | RawReader, ctx: Context, rows: list[Any]
) -> list[orjson.Fragment | dict[str, Any]]:
    """A page of users read with `data_as_text` (`store.query.search`), for the response as it is: each user
    as its finished JSON where `users.encoded` can splice it, else rendered (and projected by the caller).
    Only for a default projection: the splice copies every stored attribute."""
    assert ctx.projection.is_default
    memberships = user_rows.groups_of(conn, [r.id for r in rows], ctx.now_micros)
    guarded = guarded_needles(ctx.registry, ctx.registry.resource_type(USER))
    out: list[orjson.Fragment | dict[str, Any]] = []
    for r in rows:
        group_list = memberships.get(r.id)
        spliced = user_rows.encoded(r, ctx.base_url, group_list, guarded)
        if spliced is not None:
            out.append(spliced)
        else:
            data = orjson.loads(r.data) if isinstance(r.data, str) else r.data
            out.append(user_rows.render(r, ctx.base_url, group_list, data))
    return out


def render_groups(conn: sa.Connection, ctx: Context, rows: list[Any]) -> list[dict[str, Any]]:
    members = (
        group_rows.members_of(conn, [r.pk for r in rows], ctx.now_micros, ctx.base_url)
        if ctx.projection.wants("members")
        else {}
    )
    return [group_rows.render(r, ctx.base_url, members.get(r.pk)) for r in rows]


# ---------------------------------------------------------------- users


def _split_password(ctx: Context, doc: dict[str, Any]) -> str | None:
    """The stored hash of the password `doc` sets (which leaves `doc`), made beforehand (`run_write`)."""
    password = doc.pop("password", None)
    if not (isinstance(password, str) and password):
        return None
    hashed = ctx.password_hashes.get(password)
    if hashed is None:
        raise PasswordToHash(password)
    return hashed


def _stored(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What goes into `data`: the document without server-managed attributes."""
    return {k: v for k, v in doc.items() if k not in ("id", "meta", "groups", "members", "password")}


def create_user(ctx: Context, body: Mapping[str, Any]) -> Written:
    rt = ctx.registry.resource_type(USER)
    ignored = ctx.ignored()
    doc = normalise(ctx.registry, rt, body, ignored=ignored)
    password_hash = _split_password(ctx, doc)
    with ctx.db.write() as conn:
        row = user_rows.insert(conn, ctx.registry, rt, _stored(doc), ctx.now_micros, password_hash)
        changed = _changed(None, _stored(doc)) | ({"password"} if password_hash else set())
        details = {"userName": row.user_name, "changed": changed}
        _audit(ctx, conn, "scim.user.create", USER, row.id, details, ignored)
    _count_ignored(USER, ignored)
    return Written(user_rows.render(row, ctx.base_url, None), row.version)  # a new user is in no group yet


def replace_user(ctx: Context, user_id: str, body: Mapping[str, Any], if_match: str | None) -> Written:
    rt = ctx.registry.resource_type(USER)
    _refuse_id_change(body, user_id)
    ignored = ctx.ignored()
    doc = normalise(ctx.registry, rt, body, ignored=ignored)
    password_hash = _split_password(ctx, doc)

    def change(current: Any) -> tuple[dict[str, Any], Any]:
        stored = _stored(doc)
        if "active" not in stored and "active" in current.data:
            # A PUT that leaves `active` out must not silently re-enable (or disable) a user: deprovisioning
            # state changes only when a client says so.
            stored["active"] = current.data["active"]
        return stored, password_hash or user_rows.KEEP

    return _write_user(ctx, user_id, if_match, change, "replace", ignored)


def patch_user(ctx: Context, user_id: str, body: Mapping[str, Any], if_match: str | None) -> Written:
    rt = ctx.registry.resource_type(USER)
    changed: set[str] = set()
    ignored = ctx.ignored()

    def change(current: Any) -> tuple[dict[str, Any] | None, Any]:
        before = {"schemas": current.data.get("schemas", [rt.schema]), "id": current.id, **current.data}
        result = apply_patch(ctx.registry, rt, before, body, ignored, ctx.patch_max_operations)
        changed.update(result.changed)
        if not result.changed:
            return None, user_rows.KEEP
        doc = dict(result.document)
        password_hash = _split_password(ctx, doc)
        return _stored(doc), password_hash or user_rows.KEEP

    return _write_user(ctx, user_id, if_match, change, "patch", ignored, changed)


def _write_user(
    ctx: Context,
    user_id: str,
    if_match: str | None,
    change: Callable[[Any], tuple[dict[str, Any] | None, Any]],
    verb: str,
    ignored: Ignored,
    changed: set[str] | None = None,  # the PATCH engine's account of what changed; PUT computes it here
) -> Written:
    rt = ctx.registry.resource_type(USER)
    with ctx.db.write() as conn:
        current = user_rows.get(conn, user_id, for_update=True)
        if current is None:
            raise not_found(f"User {user_id} not found")
        check_precondition(if_match, current.version)
        doc, password_hash = change(current)
        row = current
        if doc is not None and (doc != current.data or password_hash is not user_rows.KEEP):
            row = user_rows.update(conn, ctx.registry, rt, current, doc, ctx.now_micros, password_hash)
            ctx.listener.user_changed(conn, current, row)
        if changed is None:
            changed = _changed(current.data, doc or current.data) | (
                {"password"} if password_hash is not user_rows.KEEP else set()
            )
        details = {"userName": row.user_name, "changed": changed}
        _audit(ctx, conn, f"scim.user.{verb}", USER, row.id, details, ignored)
        written = Written(render_users(conn, ctx, [row])[0], row.version)
    _count_ignored(USER, ignored)
    return written


def delete_user(ctx: Context, user_id: str, if_match: str | None) -> None:
    with ctx.db.write() as conn:
        current = user_rows.get(conn, user_id, for_update=True)
        if current is None:
            raise not_found(f"User {user_id} not found")
        check_precondition(if_match, current.version)
        ctx.listener.user_deleted(conn, current)
        user_rows.delete(conn, current)
        _audit(ctx, conn, "scim.user.delete", USER, current.id, {"userName": current.user_name})


def _refuse_id_change(body: Mapping[str, Any], resource_id: str) -> None:
    given = next((v for k, v in body.items() if k.lower() == "id"), None)
    if given is not None and given != resource_id:
        raise mutability(f"id is readOnly: the body says {given!r}, the resource is {resource_id!r}")


# ---------------------------------------------------------------- groups


def _displays(members: Any) -> dict[str, str]:
    return {m["value"]: m["display"] for m in members or () if isinstance(m, Mapping) and m.get("display")}


def _member_ids(members: Any) -> list[str]:
    if not members:
        return []
    out = []
    for member in members:
        value = member.get("value") if isinstance(member, Mapping) else None
        if not isinstance(value, str) or not value:
            raise ScimError(400, "members: every member needs a string `value`", "invalidValue")
        out.append(value)
    return out


def create_group(ctx: Context, body: Mapping[str, Any]) -> Written:
    rt = ctx.registry.resource_type(GROUP)
    ignored = ctx.ignored()
    doc = normalise(ctx.registry, rt, body, ignored=ignored)
    member_ids = _member_ids(doc.get("members"))
    with ctx.db.write() as conn:
        row = group_rows.insert(conn, _stored(doc), ctx.now_micros)
        if ctx.listener.decides_access(row):
            user_rows.lock(conn, member_ids)
        added = group_rows.add_members(
            conn,
            row,
            member_ids,
            ctx.now_micros,
            ctx.listener.membership_ttl(row),
            _displays(doc.get("members")),
        )
        if added:
            ctx.listener.members_changed(conn, row, added, [])
        _audit_group(ctx, conn, "create", row, _changed(None, _stored(doc)), added, [], ignored)
        written = Written(render_groups(conn, ctx, [row])[0], row.version)
    _count_ignored(GROUP, ignored)
    return written


def replace_group(ctx: Context, group_id: str, body: Mapping[str, Any], if_match: str | None) -> Written:
    rt = ctx.registry.resource_type(GROUP)
    _refuse_id_change(body, group_id)
    ignored = ctx.ignored()
    doc = normalise(ctx.registry, rt, body, ignored=ignored)
    member_ids = _member_ids(doc.get("members"))
    with ctx.db.write() as conn:
        current = _group_for_write(conn, group_id, if_match)
        _lock_users(ctx, conn, current, doc.get("displayName"), member_ids, all_members=True)
        row = group_rows.update(conn, current, _stored(doc), ctx.now_micros)
        added, removed = group_rows.replace_members(
            conn,
            row,
            member_ids,
            ctx.now_micros,
            ctx.listener.membership_ttl(row),
            _displays(doc.get("members")),
        )
        _notify_group(ctx, conn, current, row, added, removed)
        changed = _changed(current.data, _stored(doc))
        _audit_group(ctx, conn, "replace", row, changed, added, removed, ignored)
        written = Written(render_groups(conn, ctx, [row])[0], row.version)
    _count_ignored(GROUP, ignored)
    return written


def patch_group(ctx: Context, group_id: str, body: Mapping[str, Any], if_match: str | None) -> Written:
    """Worked out inside the write transaction: IdPs PATCH the same group concurrently, and computing against
    a snapshot outside it turned into retries under that contention (measured: slower, with conflicts)."""
    rt = ctx.registry.resource_type(GROUP)
    ignored = ctx.ignored()
    with ctx.db.write() as conn:
        current = _group_for_write(conn, group_id, if_match)
        before = {"schemas": current.data.get("schemas", [rt.schema]), "id": current.id, **current.data}
        result = apply_patch(ctx.registry, rt, before, body, ignored, ctx.patch_max_operations)
        ops = result.member_ops
        _lock_users(
            ctx,
            conn,
            current,
            result.document.get("displayName"),
            [m for op in ops if op.action != "remove_all" for m in _member_ids(op.members)],
            all_members=any(op.action == "remove_all" for op in ops),
        )
        written = _write_group_patch(ctx, conn, current, result, ignored)
    _count_ignored(GROUP, ignored)
    return written


def _write_group_patch(
    ctx: Context, conn: sa.Connection, current: Any, result: PatchResult, ignored: Ignored
) -> Written:
    added, removed = _apply_member_ops(ctx, conn, current, result.member_ops)
    doc = _stored(result.document)
    row = current
    if doc != current.data or added or removed or result.member_ops:
        row = group_rows.update(conn, current, doc if doc != current.data else None, ctx.now_micros)
    _notify_group(ctx, conn, current, row, added, removed)
    _audit_group(ctx, conn, "patch", row, result.changed, added, removed, ignored)
    if (
        ctx.members_cap is not None
    ):  # a plain PATCH (scimjit.http.scim.resources): never a big group's members
        members = group_rows.members_up_to(conn, row.pk, ctx.now_micros, ctx.base_url, ctx.members_cap)
        return Written(group_rows.render(row, ctx.base_url, members), row.version, members is not None)
    return Written(render_groups(conn, ctx, [row])[0], row.version)


def _apply_member_ops(
    ctx: Context, conn: sa.Connection, group: Any, ops: list[Any]
) -> tuple[list[str], list[str]]:
    """Apply PATCH member ops in order; returns the net (added, removed) effective members. `remove_all`
    followed by `add` (a `replace members`) is applied as a difference, so members that stay keep their TTL."""
    added: dict[str, None] = {}
    removed: dict[str, None] = {}
    ttl = ctx.listener.membership_ttl(group)
    i = 0
    while i < len(ops):
        op = ops[i]
        newly: list[str] = []
        gone: list[str] = []
        if op.action == "remove_all" and i + 1 < len(ops) and ops[i + 1].action == "add":
            i += 1
            newly, gone = group_rows.replace_members(
                conn, group, _member_ids(ops[i].members), ctx.now_micros, ttl, _displays(ops[i].members)
            )
        elif op.action == "add":
            newly = group_rows.add_members(
                conn, group, _member_ids(op.members), ctx.now_micros, ttl, _displays(op.members)
            )
        else:
            ids = None if op.action == "remove_all" else _member_ids(op.members)
            gone = group_rows.remove_members(conn, group, ids, ctx.now_micros)
        for member in newly:  # back after an earlier removal in this PATCH: no net change
            if member in removed:
                del removed[member]
            else:
                added[member] = None
        for member in gone:
            if member in added:
                del added[member]
            else:
                removed[member] = None
        i += 1
    return list(added), list(removed)


def delete_group(ctx: Context, group_id: str, if_match: str | None) -> None:
    with ctx.db.write() as conn:
        current = _group_for_write(conn, group_id, if_match)
        _lock_users(ctx, conn, current, current.display_name, [], all_members=True)
        ctx.listener.group_deleted(conn, current)
        group_rows.delete(conn, current)
        _audit(ctx, conn, "scim.group.delete", GROUP, current.id, {"displayName": current.display_name})


def _group_for_write(conn: sa.Connection, group_id: str, if_match: str | None) -> Any:
    current = group_rows.get(conn, group_id, for_update=True)
    if current is None:
        raise not_found(f"Group {group_id} not found")
    check_precondition(if_match, current.version)
    return current


def _lock_users(
    ctx: Context,
    conn: sa.Connection,
    group: Any,
    new_name: Any,
    member_ids: list[str],
    *,
    all_members: bool,
) -> None:
    """Before a group write touches membership rows: lock the users whose access it may change (the members
    named, and every current member for a PUT, a `remove` of all, a rename or a delete), so it serializes with
    their logins (`store.users.lock`). Groups no application looks at take no lock."""
    renamed = new_name != group.display_name
    if not (renamed or ctx.listener.decides_access(group)):
        return
    user_rows.lock(conn, member_ids, members_of=group.pk if (all_members or renamed) else None)


def _notify_group(
    ctx: Context, conn: sa.Connection, before: Any, row: Any, added: list[str], removed: list[str]
) -> None:
    if row.display_name != before.display_name:
        ctx.listener.group_renamed(conn, before, row)
    _notify_members(ctx, conn, row, added, removed)


def _notify_members(
    ctx: Context, conn: sa.Connection, row: Any, added: list[str], removed: list[str]
) -> None:
    if added or removed:
        ctx.listener.members_changed(conn, row, added, removed)


# ---------------------------------------------------------------- audit


def _audit(
    ctx: Context,
    conn: sa.Connection,
    action: str,
    kind: str,
    resource_id: str,
    details: dict[str, Any],
    ignored: Ignored | None = None,
) -> None:
    """One audit record per SCIM write, in its transaction. Attribute names only: never values.

    `details.ignored` lists the unknown attribute paths and schema URNs the write ignored (present only when
    there were some, capped at `scim.ignored.MAX_NAMES`; `ignoredCount` is exact)."""
    if "changed" in details:
        details["changed"] = sorted(details["changed"])
    if ignored is not None and ignored.count:
        details["ignored"] = list(ignored.names)
        details["ignoredCount"] = ignored.count
    audit.record(
        conn,
        actor=ctx.actor,
        action=action,
        outcome="success",
        resource_type=kind,
        resource_id=resource_id,
        request_id=ctx.request_id,
        details=details,
        at_micros=ctx.now_micros,
    )


def _audit_group(
    ctx: Context,
    conn: sa.Connection,
    verb: str,
    row: Any,
    changed: set[str],
    added: list[str],
    removed: list[str],
    ignored: Ignored,
) -> None:
    """Group writes also record the net membership change (a PUT removes then re-adds unchanged members)."""
    net_added = [i for i in added if i not in set(removed)]
    net_removed = [i for i in removed if i not in set(added)]
    details: dict[str, Any] = {"displayName": row.display_name, "changed": changed - {"members"}}
    if net_added or net_removed:
        details["changed"] = details["changed"] | {"members"}
        details.update(
            membersAdded=len(net_added),
            membersRemoved=len(net_removed),
            addedIds=audit.capped(net_added),
            removedIds=audit.capped(net_removed),
        )
    _audit(ctx, conn, f"scim.group.{verb}", GROUP, row.id, details, ignored)


def _count_ignored(kind: str, ignored: Ignored) -> None:
    """After the commit: a rolled-back write ignored nothing that stayed."""
    if ignored.count:
        SCIM_IGNORED.labels(resource_type=kind).inc(ignored.count)


def _changed(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> set[str]:
    """Top-level attribute names whose value differs (extension attributes as `urn:...:name`)."""
    old: Mapping[str, Any] = before or {}
    names: set[str] = set()
    for key in (old.keys() | after.keys()) - {"schemas"}:
        if old.get(key) == after.get(key):
            continue
        if (
            key.startswith("urn:")
            and isinstance(old.get(key, {}), Mapping)
            and isinstance(after.get(key, {}), Mapping)
        ):
            a, b = old.get(key) or {}, after.get(key) or {}
            names |= {f"{key}:{n}" for n in a.keys() | b.keys() if a.get(n) != b.get(n)}
        else:
            names.add(key)
    return names
