"""User rows: insert / update / delete with their promoted columns and value rows, and rendering to SCIM."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from scimjit.clock import format_micros
from scimjit.scim.errors import ScimError, uniqueness
from scimjit.scim.identifiers import literal_key
from scimjit.scim.schema import USER_URN, Registry, ResourceType
from scimjit.store.db import RawReader, execute, rows
from scimjit.store.dialect import POSTGRESQL, in_list
from scimjit.store.memberships import live
from scimjit.store.prepared import Prepared
from scimjit.store.promoted import user_columns, user_name_key, user_value_rows
from scimjit.store.tables import Row, groups, memberships, user_values, users

_TEXT_ARRAY = ARRAY(sa.Text)
KEEP = object()  # "leave the stored password hash as it is"


# Hot statements are built once: constructing a statement and its cache key costs more than SQLite's answer.
_GET = sa.select(users).where(users.c.id == sa.bindparam("id"))
_GET_FOR_UPDATE = Prepared(_GET.with_for_update())


def _groups_of_statement(dialect: str) -> Any:
    """The live groups of a page of users, one list parameter `ids`: a row per live membership, in the order
    `groups_of` gives them. No DISTINCT: a user's rows for one group (a membership per source) are adjacent
    in this order and `groups_of` keeps one.

    On SQLite the list is joined from, through the member index by name: `IN (SELECT value FROM
    json_each(...))` with DISTINCT built two temporary B-trees, 73-88 µs of a page of 50-100 users against
    21-38 µs as this join (issue 13, W3/W4), and `INDEXED BY` keeps the plan one index seek per listed user
    whatever statistics say (with `ANALYZE` taken while few memberships existed, SQLite would otherwise scan
    every group for each listed user)."""
    if dialect == POSTGRESQL:
        return (
            sa.select(memberships.c.member_id, groups.c.id, groups.c.display_name)
            .join(groups, groups.c.pk == memberships.c.group_pk)
            .where(in_list(dialect, memberships.c.member_id, "ids"), live(sa.bindparam("now")))
            .order_by(memberships.c.member_id, groups.c.display_name, groups.c.id)
        )
    return (
        sa.text(
            "SELECT memberships.member_id, groups.id, groups.display_name FROM json_each(:ids) AS listed"
            " JOIN memberships INDEXED BY ix_memberships_member_id_group_pk"
            " ON memberships.member_id = listed.value"
            " JOIN groups ON groups.pk = memberships.group_pk"
            " WHERE memberships.expires_at IS NULL OR memberships.expires_at > :now"
            " ORDER BY memberships.member_id, groups.display_name, groups.id"
        )
        .bindparams(sa.bindparam("ids", type_=sa.JSON), sa.bindparam("now", type_=sa.BigInteger))
        .columns(member_id=sa.String, id=sa.String, display_name=sa.String)
    )


_GROUPS_OF = Prepared(_groups_of_statement)


# A user and its live direct groups in ONE statement (so `Database.single`, no transaction, reads one
# snapshot): one row per live membership, ordered as `groups_of` orders them, or one row with NULL group
# columns for a user in no group. Liveness is `expires_at > now` at read time, as everywhere. Every
# membership row has its group (a foreign key, ON DELETE CASCADE), so two outer joins say it.
def _with_live_groups(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    joined = users.outerjoin(
        memberships, sa.and_(memberships.c.member_id == users.c.id, live(sa.bindparam("now")))
    ).outerjoin(groups, groups.c.pk == memberships.c.group_pk)
    return (
        sa.select(users, groups.c.id.label("gid"), groups.c.display_name.label("gname"))
        .select_from(joined)
        .where(where)
        .order_by(groups.c.display_name, groups.c.id)
    )


_GET_WITH_GROUPS = Prepared(_with_live_groups(users.c.id == sa.bindparam("id")))
_BY_NAME_WITH_GROUPS = Prepared(_with_live_groups(users.c.user_name_ci == sa.bindparam("key")))
_BY_ID = Prepared(_GET)
_BY_NAME = Prepared(sa.select(users).where(users.c.user_name_ci == sa.bindparam("key")))


_USER_NAME_OWNER = Prepared(sa.select(users.c.pk).where(users.c.user_name_ci == sa.bindparam("name")))
_PROMOTED = (
    "user_name",
    "user_name_ci",
    "external_id",
    "display_name_ci",
    "family_name_ci",
    "given_name_ci",
    "active",
)
_INSERTED = ("id", "data", "password_hash", "version", "created", "last_modified", *_PROMOTED)  # user_columns
_INSERT = Prepared(users.insert().returning(*users.c), _INSERTED)
_VALUE_COLUMNS = ("user_pk", "attr", "position", "type_ci", "value", "value_ci", "is_primary", "element")
_INSERT_VALUES = Prepared(user_values.insert(), _VALUE_COLUMNS)


def get(conn: sa.Connection, user_id: str, *, for_update: bool = False) -> Any:
    if for_update:  # every user write starts here: compiled once, run on the driver (`db.execute`)
        rows = execute(conn, _GET_FOR_UPDATE, {"id": user_id})
        return rows[0] if rows else None
    return conn.execute(_GET, {"id": user_id}).first()


def one_read(
    *, now_micros: int, with_groups: bool, user_id: str | None = None, key: str | None = None
) -> tuple[Prepared, dict[str, Any]]:
    """The ONE statement (and its parameters) that reads the user with this id, or with the PRECIS userName
    key `key` (unique), with its live direct groups when asked. Its caller runs it on the path it is on
    (`Database.fetch`, or `fetch_async` on the event loop: no transaction either way) and reads the rows with
    `one_found`."""
    if user_id is not None:
        if with_groups:
            return _GET_WITH_GROUPS, {"id": user_id, "now": now_micros}
        return _BY_ID, {"id": user_id}
    if with_groups:
        return _BY_NAME_WITH_GROUPS, {"key": key, "now": now_micros}
    return _BY_NAME, {"key": key}


def one_found(rows: Sequence[Any], with_groups: bool) -> tuple[Any, list[tuple[str, str]] | None] | None:
    """(the user's row, its live direct groups [(group id, displayName)] or None when not asked) from the
    rows of a `one_read` statement; None when there is no such user."""
    if not with_groups:
        return (rows[0], None) if rows else None
    return _one_with_groups(rows)


def _one_with_groups(rows: Sequence[Any]) -> tuple[Any, list[tuple[str, str]]] | None:
    """(user row, [(group id, displayName)]) from the rows of `_with_live_groups` for one user: a group with
    several live sources (SCIM and a grant) has adjacent rows, and is listed once."""
    if not rows:
        return None
    found: list[tuple[str, str]] = []
    for r in rows:
        if r.gid is not None and (not found or found[-1][0] != r.gid):
            found.append((r.gid, r.gname))
    return rows[0], found


def lock(conn: sa.Connection, user_ids: Iterable[str], *, members_of: int | None = None) -> None:
    """Take the row locks of these users (and of every member of group `members_of`) on PostgreSQL, in id
    order, in one statement. The user's row is the lock every write that decides a user's access takes before
    anything else of that user: SCIM user writes, the login's write, and every membership change (group
    writes, the sweeper's expiry, grants) before it touches membership rows. So a login that read memberships
    cannot commit an entitlement that a concurrent removal has already reconciled away, and a removal
    reconciles the account a concurrent first login created (docs/architecture.md). One statement in id order
    keeps two writers from waiting on each other in a cycle. SQLite needs nothing: its write transactions are
    serialized by BEGIN IMMEDIATE. Set-based: the rows never come back to Python."""
    if conn.dialect.name != "postgresql":
        return
    ids = sorted(set(user_ids))
    conds: list[sa.ColumnElement[bool]] = []
    if ids:
        conds.append(users.c.id == sa.any_(sa.bindparam("lock_ids", ids, type_=_TEXT_ARRAY)))
    if members_of is not None:
        conds.append(
            users.c.id.in_(sa.select(memberships.c.member_id).where(memberships.c.group_pk == members_of))
        )
    if not conds:
        return
    locked = (
        sa.select(users.c.pk).where(sa.or_(*conds)).order_by(users.c.id).with_for_update(of=users).subquery()
    )
    conn.execute(sa.select(sa.func.count()).select_from(locked))


# ------------------------------------------------------------------------ the JIT concerns' reads

_PROFILE = (users.c.id, users.c.user_name, users.c.active, users.c.data)


def find_profile(conn: sa.Connection, ref: str) -> Row | None:
    """(id, user_name, active, data) of the user with id `ref`, or else userName `ref` (compared by its PRECIS
    key): what events carry and what a grant needs."""
    row = conn.execute(sa.select(*_PROFILE).where(users.c.id == ref)).first()
    if row is None:
        key = literal_key(ref)
        if key is not None:
            row = conn.execute(sa.select(*_PROFILE).where(users.c.user_name_ci == key)).first()
    return row


def match_condition(attribute: str, value: Any) -> sa.ColumnElement[bool]:
    """The WHERE clause of the app's match rule, on indexed columns. `value` is a literal (the identifier key
    for userName, lower-cased for emails: see `entitlement.identity.match_value`) or a bind parameter."""
    if attribute == "userName":
        return users.c.user_name_ci == value
    if attribute == "externalId":
        return users.c.external_id == value
    if attribute == "id":
        return users.c.id == value
    if attribute == "emails.value":
        emails = sa.select(user_values.c.user_pk).where(
            user_values.c.attr == "emails", user_values.c.value_ci == value
        )
        return users.c.pk.in_(emails)
    raise ValueError(f"unsupported match attribute {attribute!r}")


def select_matching(
    attribute: str,
    value: Any,
    *,
    extra_columns: Sequence[sa.ColumnElement[Any]] = (),
    join: Callable[[sa.FromClause, sa.ColumnElement[str]], sa.FromClause] | None = None,
) -> sa.Select[*tuple[Any, ...]]:
    """(id, user_name, active, data, *extra_columns) of the users matching `match_condition`; `join(users,
    users.c.id)` extends the FROM (the login reads each user's account in the same statement)."""
    left: sa.FromClause = users if join is None else join(users, users.c.id)
    return sa.select(*_PROFILE, *extra_columns).select_from(left).where(match_condition(attribute, value))


def profiles(conn: sa.Connection, user_ids: Iterable[str]) -> dict[str, Row]:
    """(id, user_name, active, data) of each of these users that exists, by id, in one query."""
    return {p.id: p for p in conn.execute(sa.select(*_PROFILE).where(users.c.id.in_(set(user_ids))))}


def active_profiles(conn: sa.Connection, ids: sa.Select[Any], limit: int) -> list[Row]:
    """(id, user_name, active, data) of the active users among `ids` (a subquery of user ids), by userName,
    at most `limit`: one bounded query however large the set."""
    stmt = (
        sa.select(*_PROFILE)
        .where(users.c.id.in_(ids), users.c.active.is_(True))
        .order_by(users.c.user_name)
        .limit(limit)
    )
    return list(conn.execute(stmt))


def join_profile(
    left: sa.FromClause, user_id: sa.ColumnElement[str], prefix: str, *, outer: bool = False
) -> tuple[sa.Join, tuple[sa.Label[Any], ...]]:
    """`left` joined to the user each row names (an outer join keeps rows whose user is gone), and that
    user's columns labelled `prefix` + id / user_name / active / data."""
    on = users.c.id == user_id
    joined = left.outerjoin(users, on) if outer else left.join(users, on)
    return joined, tuple(c.label(f"{prefix}{c.name}") for c in _PROFILE)


def _check_user_name_free(conn: sa.Connection, user_name: str, own_pk: int | None) -> None:
    """409 uniqueness when another user's userName has the same PRECIS key ("KATE", fullwidth "kate" and
    "kate" are one name); 400 invalidValue when the name is one PRECIS refuses (U+212A)."""
    owners = execute(conn, _USER_NAME_OWNER, {"name": user_name_key(user_name)})
    if owners and owners[0].pk != own_pk:
        raise uniqueness(f"userName {user_name!r} is already taken")


def insert(
    conn: sa.Connection,
    registry: Registry,
    rt: ResourceType,
    doc: Mapping[str, Any],
    now_micros: int,
    password_hash: str | None = None,
) -> Any:
    _check_user_name_free(conn, doc["userName"], None)
    values = {
        "id": str(uuid.uuid4()),
        "data": dict(doc),
        "password_hash": password_hash,
        "version": 1,
        "created": now_micros,
        "last_modified": now_micros,
        **user_columns(doc),
    }
    (row,) = execute(conn, _INSERT, values)
    _write_value_rows(conn, registry, rt, row.pk, doc)
    return row


def update(
    conn: sa.Connection,
    registry: Registry,
    rt: ResourceType,
    current: Any,
    doc: Mapping[str, Any],
    now_micros: int,
    password_hash: Any = KEEP,
) -> Any:
    """Replace the stored document of `current` (a row read in this transaction) and bump its version."""
    if user_name_key(doc["userName"]) != current.user_name_ci:
        _check_user_name_free(conn, doc["userName"], current.pk)
    values: dict[str, Any] = {
        "data": dict(doc),
        "version": current.version + 1,
        "last_modified": max(now_micros, current.last_modified + 1),
        **user_columns(doc),
    }
    if password_hash is not KEEP:
        values["password_hash"] = password_hash
    row = conn.execute(
        users.update()
        .where(users.c.pk == current.pk, users.c.version == current.version)
        .values(**values)
        .returning(*users.c)
    ).first()
    if row is None:  # a concurrent writer won the compare-and-set
        raise ConcurrentUpdate(current.id)
    if _value_rows_differ(registry, rt, current.data, doc):
        conn.execute(user_values.delete().where(user_values.c.user_pk == current.pk))
        _write_value_rows(conn, registry, rt, current.pk, doc)
    return row


def delete(conn: sa.Connection, current: Any) -> None:
    conn.execute(memberships.delete().where(memberships.c.member_id == current.id))
    conn.execute(users.delete().where(users.c.pk == current.pk))


class ConcurrentUpdate(ScimError):
    """Another transaction changed the row between read and write (compare-and-set lost): 409, retry."""

    def __init__(self, resource_id: str) -> None:
        super().__init__(409, f"{resource_id} was changed by another request at the same time; retry")


def _write_value_rows(
    conn: sa.Connection, registry: Registry, rt: ResourceType, user_pk: int, doc: Mapping[str, Any]
) -> None:
    rows = user_value_rows(registry, rt, doc)
    if rows:
        execute(conn, _INSERT_VALUES, [{"user_pk": user_pk, **r} for r in rows])


def _value_rows_differ(
    registry: Registry, rt: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]
) -> bool:
    return user_value_rows(registry, rt, old) != user_value_rows(registry, rt, new)


def groups_of(
    source: sa.Connection | RawReader, user_ids: Iterable[str], now_micros: int
) -> dict[str, list[tuple[str, str]]]:
    """Live direct groups of each user: user id -> [(group id, displayName)], one query for a whole page, in
    the caller's transaction or `Database.snapshot`."""
    ids = list(user_ids)
    out: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
    if not ids:
        return out
    last = None
    for row in rows(source, _GROUPS_OF, {"ids": ids, "now": now_micros}):
        if row != last:  # not another source's row of the same membership (or a user listed twice)
            last = row
            out[row[0]].append((row[1], row[2]))
    return out


RENDERED = (
    "pk",
    "id",
    "data",
    "version",
    "created",
    "last_modified",
)  # the columns `render` and `encoded` read


def render(
    row: Any, base_url: str, group_list: list[tuple[str, str]] | None, data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The full SCIM representation of a user row (projection is applied afterwards); `data` when the row
    holds its document as text (`encoded`)."""
    doc = document(USER_URN, row.id, row.data if data is None else data)
    if group_list:
        doc["groups"] = _groups(base_url, group_list)
    doc["meta"] = meta("User", row, f"{base_url}/Users/{row.id}")
    return doc


def _groups(base_url: str, group_list: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [
        {"value": gid, "$ref": f"{base_url}/Groups/{gid}", "display": name, "type": "direct"}
        for gid, name in group_list
    ]


_HEAD = '{"schemas":["' + USER_URN + '"'  # how every stored user document starts (`scim.resource.normalise`)


def encoded(
    row: Any, base_url: str, group_list: list[tuple[str, str]] | None, guarded: tuple[str, ...]
) -> orjson.Fragment | None:
    """The JSON of `render(row, ...)`, byte for byte, made without decoding the stored document: a page of 100
    users decoded 100 documents to encode them again (a third of `startIndex=5000&count=100`). The stored
    text is spliced between the `schemas` and `id` the response starts with and the `groups` and `meta` it
    ends with. `row.data` is that text (SQLite; PostgreSQL's driver hands over the decoded JSONB).

    None when the text is not certainly what `render` would copy, and the caller renders the slow way:
    - it does not start with the core schema, or does not end the object (another writer's spelling);
    - a key of `guarded` (`scim.projection.guarded_needles`: attributes a default projection removes) appears;
    - it holds a key that starts with "urn:" that its `schemas` does not list (`render` lists the extensions
      the document holds, in their order; a stored `schemas` may also name an extension that holds nothing).
    A needle `"name":` can only match a key: in JSON text a `"` inside a string is escaped.

    It runs for every user of every page (3.4 µs of a page's ~7 µs per user before it was made lean, issue
    13): in the common case (the extensions listed are the ones held, in their order) the text after the
    `schemas` is scanned once (`_schemas`), the location reuses the id's JSON text, and a user never modified
    formats its one timestamp once."""
    text = row.data
    if type(text) is not str or not text.startswith(_HEAD) or text[-1] != "}":
        return None
    close = text.find("]", _HEAD_SIZE)
    if close < 0:
        return None
    for needle in guarded:
        if needle in text:
            return None
    if close != _HEAD_SIZE:
        schemas = _schemas(text, close)
        if schemas is None:
            return None
    elif text.find('"urn:', close) < 0:  # the core schema alone, and no extension held
        schemas = text[: close + 1]
    else:
        return None
    if text[close + 1] != "," and close + 2 != len(text):
        return None  # something other than `,"key":…` (or nothing) after the schemas
    ident = orjson.dumps(row.id).decode()
    created, modified = row.created, row.last_modified
    created_text = format_micros(created)
    modified_text = created_text if modified == created else format_micros(modified)
    groups = f',"groups":{orjson.dumps(_groups(base_url, group_list)).decode()}' if group_list else ""
    location = f"{_LOCATIONS.get(base_url) or _location_head(base_url)}{ident[1:]}"
    return orjson.Fragment(
        f'{schemas},"id":{ident}{text[close + 1 : -1]}{groups},"meta":{{"resourceType":"User",'
        f'"created":"{created_text}","lastModified":"{modified_text}",'
        f'"location":{location},"version":"W/\\"{int(row.version)}\\""}}}}'
    )


def _schemas(text: str, close: int) -> str | None:
    """The response's `schemas` member for a stored document that lists extensions (`text[:close]` is its
    stored `schemas` list); None when the list is not one the store writes, or when a `"urn:` appears after it
    that is not a listed extension's key. Usually one scan: the keys that start with `"urn:` are the listed
    extensions, in their order, and nothing else there starts so."""
    listed = text[_HEAD_SIZE:close]
    needles = _LISTED.get(listed) or _listed_needles(listed)  # the call: first sight, or not a valid list
    if needles is None:
        return None
    at = close
    for _urn, needle in needles:
        at = text.find('"urn:', at)
        if at < 0 or not text.startswith(needle, at):
            break
        at += len(needle)
    else:
        return text[: close + 1] if text.find('"urn:', at) < 0 else None
    held = sorted((at, urn) for urn, needle in needles if (at := text.find(needle, close)) >= 0)
    if text.count('"urn:', close) != len(held):
        return None
    return '{"schemas":' + orjson.dumps([USER_URN, *(urn for _, urn in held)]).decode()


_HEAD_SIZE = len(_HEAD)
_LISTED: dict[
    str, tuple[tuple[str, str], ...] | None
] = {}  # a stored schemas list's tail -> its (urn, needle)s
_LOCATIONS: dict[str, str] = {}  # base URL -> the JSON text of `{base}/Users/` without its closing quote


def _location_head(base_url: str) -> str:
    """`orjson.dumps(f"{base_url}/Users/{id}")` is this followed by the id's JSON text without its opening
    quote (JSON escapes character by character); a deployment has one or a few base URLs (bounded)."""
    found = _LOCATIONS.get(base_url)
    if found is None:
        found = orjson.dumps(f"{base_url}/Users/").decode()[:-1]
        if len(_LOCATIONS) < 64:
            _LOCATIONS[base_url] = found
    return found


def _listed_needles(listed: str) -> tuple[tuple[str, str], ...] | None:
    """The extensions a stored `schemas` lists after the core schema (`listed`: `,"urn:…","urn:…"`), each with
    the text its key starts with; None when `listed` is not such a list. A deployment has a handful of
    these lists, so they are remembered (a bounded few)."""
    found = _LISTED.get(listed, False)
    if found is not False:
        return found  # type: ignore[return-value]
    try:
        urns = orjson.loads(f"[{listed[1:]}]") if listed[0] == "," else None
    except orjson.JSONDecodeError:
        urns = None
    if (
        not isinstance(urns, list)
        or not all(isinstance(u, str) for u in urns)
        or orjson.dumps(urns).decode()[1:-1] != listed[1:]
    ):
        value = None
    else:
        value = tuple((u, orjson.dumps(u).decode()[:-1] + '":') for u in urns)
    if len(_LISTED) < 64:
        _LISTED[listed] = value
    return value


def document(core_urn: str, resource_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """`schemas` (the core schema and the extensions `data` holds), `id`, then the stored attributes in their
    order: the start of every User and Group representation. One pass over `data` (it runs for each
    resource of a page)."""
    doc: dict[str, Any] = {"schemas": None, "id": resource_id}
    extensions = []
    for key, value in data.items():
        if key == "schemas":
            continue
        doc[key] = value
        if key[:4] == "urn:" and key != core_urn:
            extensions.append(key)
    doc["schemas"] = [core_urn, *extensions]
    return doc


def meta(resource_type: str, row: Any, location: str) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": format_micros(row.created),
        "lastModified": format_micros(row.last_modified),
        "location": location,
        "version": f'W/"{row.version}"',
    }
