"""Searching Users and Groups (RFC 7644 §3.4.2): filter, sort and page in SQL; only the page's rows leave the
database.

`totalResults` is an exact COUNT in the caller's read transaction (`Database.read` holds one snapshot for the
count and the page). The page is read first: when it is not full (and starts at the first match, or holds
some), it ends at the last match, so the count is known without a COUNT statement. That is every search for
one user by a unique attribute (`userName eq`, Entra's and Okta's lookup before each create). Rows are ordered by the sort key and then by primary key, a total order, so pages never
overlap or skip. A missing sort value sorts last ascending and first descending (RFC 7644 §3.4.2.3).

Index paging: `startIndex` (1-based; below 1 means 1) and `count` (negative means 0; 0 returns totalResults
only; capped at `max_page_size`) become OFFSET and LIMIT.

Cursor paging (RFC 9865), chosen by a `cursor` parameter ("" asks for the first page): keyset paging on
(sort value, pk), so page 1000 costs what page 1 does. A cursor is base64url (RFC 3986 unreserved
characters) of a MAC and the position of a boundary row. The MAC is keyed by the query (resource type, filter,
sortBy, sortOrder): a mangled cursor, or one from another query, is 400 `invalidCursor`. Cursors keep no
server state and never expire (so there is no `expiredCursor`); forging one gains nothing, because it holds
only a position and the filter is applied again on every page. `previousCursor` comes with every page but the
first, `nextCursor` with every page but the last. `startIndex` together with `cursor` is 400 `invalidValue`.

Bad `sortBy` / `sortOrder` are 400 `invalidValue`: RFC 7644 §3.12 names GET queries (§3.4.2) among the uses of
`invalidValue`, while `invalidPath` is PATCH's and `invalidFilter` belongs to the filter parameter.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from scimjit.scim.errors import ScimError, invalid_value
from scimjit.scim.filter import parse_filter
from scimjit.scim.identifiers import literal_key
from scimjit.scim.predicate import And, Compare, Not, Or, Predicate
from scimjit.scim.schema import USER_URN, AttrRef, Registry, ResourceType, UnknownAttribute
from scimjit.store.db import RawReader
from scimjit.store.filters import compile_filter, sort_key, table_of
from scimjit.store.prepared import Prepared

_MAC_SIZE = 12
MAX_START_INDEX = 2**53  # past any table's size, and within every SQL integer's range
_CURSOR = re.compile(r"[A-Za-z0-9_-]+")  # what `encode` writes: unpadded base64url
_AFTER, _BEFORE = "a", "b"
_INT64 = 2**63


@dataclass
class SearchParams:
    """A query's parameters as the client sent them (RFC 7644 §3.4.2, RFC 9865), and the server's limits."""

    filter: str | Predicate | None = None  # text, or a predicate parsed already
    sort_by: str | None = None
    sort_order: str | None = None
    start_index: int | None = None
    count: int | None = None  # None: max_page_size
    cursor: str | None = None  # None: index paging; "": the first page of cursor paging
    max_page_size: int = 1000
    max_filter_length: int = 4096
    max_filter_depth: int = 32
    max_filter_terms: int = 50


@dataclass(frozen=True, slots=True)
class Page:
    total: int  # every match, not just this page
    rows: list[sa.Row[Any]]  # full rows of `users` or `groups`, in order
    start_index: int | None  # the 1-based index of rows[0]; None for cursor pages
    next_cursor: str | None = None
    previous_cursor: str | None = None


def search(
    conn: sa.Connection,
    registry: Registry,
    rt: ResourceType,
    params: SearchParams,
    now_micros: int,
    *,
    data_as_text: bool = False,
) -> Page:
    """One page of the resources of `rt` matching `params`; ScimError 400 for bad parameters.
    `data_as_text`: each row's `data` is the stored JSON text where the driver gives it as text (SQLite),
    for a renderer that splices it (`store.users.encoded`); PostgreSQL's driver decodes JSONB regardless."""
    query = _Query.build(conn.dialect.name, registry, rt, params, now_micros, data_as_text=data_as_text)
    size = _page_size(params)
    if params.cursor is not None and params.start_index is not None:
        raise invalid_value("startIndex and cursor select different kinds of paging: send one of them")
    position = None if params.cursor is None else query.decode(params.cursor)
    if params.cursor is None:
        return _index_page(
            params,
            size,
            lambda offset: list(conn.execute(query.page_at(size, offset)).all()),
            lambda: _total(conn, query),
        )
    return _cursor_page(conn, query, position, size)


def _index_page(
    params: SearchParams, size: int, rows_at: Callable[[int], list[Any]], total: Callable[[], int]
) -> Page:
    """An index page (`startIndex`, `count`): its rows, and the count when the page does not tell it."""
    start = min(max(params.start_index or 1, 1), MAX_START_INDEX)
    rows = rows_at(start - 1) if size else []
    known = start - 1 + len(rows) if size and (rows or start == 1) and len(rows) < size else None
    return Page(total() if known is None else known, rows, start)


def index_plan(
    dialect: sa.Dialect,
    registry: Registry,
    rt: ResourceType,
    params: SearchParams,
    *,
    data_as_text: bool = False,
    columns: tuple[str, ...] | None = None,
) -> IndexPlan | None:
    """The statements of an index page of this query, compiled once, to run in a `Database.snapshot`
    (`IndexPlan.search`), or None (then `search` answers it): a cursor page, or a query seen for the first
    time, or one whose statements `Prepared` cannot run. `columns`: the names of the only columns the
    caller reads (each is 1-2 µs per row to fetch; default all).

    Why: building a search's statements and running them through SQLAlchemy's Connection cost about 0.8 ms
    of a 1 ms page of one user (`startIndex=5000&count=1`, bench/inprocess.py, py-spy), SQLite's own work
    0.14 ms. A query's statements (resource type, filter with its values, sort) are compiled on its second
    sighting, so a query seen once costs what it did; `now`, LIMIT and OFFSET are parameters. Only SQL text
    is kept, never a result: every page is read afresh (expired memberships vanish at once)."""
    if params.cursor is not None:
        return None
    predicate = _predicate(registry, rt, params)
    ref = _sort_ref(registry, rt, params.sort_by)
    descending = _descending(params.sort_order)
    key = (
        dialect.name,
        rt.name,
        _shape(predicate),
        ref and _ref_shape(ref),
        descending,
        data_as_text,
        columns,
    )
    cache = _PLANS.get(registry)
    if cache is None:
        cache = _PLANS.setdefault(registry, _PlanCache())
    return cache.get(key, lambda: IndexPlan.build(dialect, registry, rt, params, data_as_text, columns))


_NOW = sa.bindparam("now", type_=sa.BigInteger)


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """The two statements of an index page, compiled once: the page (`:size` rows from `:offset`) and the
    count, both at `:now`."""

    page: Prepared
    count: Prepared

    def search(self, reader: RawReader, params: SearchParams, now_micros: int) -> Page:
        """`search`'s answer, read in `reader`'s snapshot."""
        size = _page_size(params)
        return _index_page(
            params,
            size,
            lambda offset: reader.fetch(self.page, {"now": now_micros, "size": size, "offset": offset}),
            lambda: int(reader.fetch(self.count, {"now": now_micros})[0][0]),
        )

    @classmethod
    def build(
        cls,
        dialect: sa.Dialect,
        registry: Registry,
        rt: ResourceType,
        params: SearchParams,
        data_as_text: bool,
        columns: tuple[str, ...] | None,
    ) -> IndexPlan | None:
        now: Any = _NOW  # the filter's `live(now)` terms take a bind parameter as well as a value
        query = _Query.build(dialect.name, registry, rt, params, now, data_as_text=data_as_text)
        if columns is not None:
            query = dataclasses.replace(query, columns=tuple(c for c in query.columns if c.name in columns))
        size, offset = sa.bindparam("size", type_=sa.Integer), sa.bindparam("offset", type_=sa.Integer)
        plan = cls(Prepared(query.page_at(size, offset)), Prepared(_count(query)))  # type: ignore[arg-type]
        try:  # compiled now, so that a statement Prepared cannot run (an expanding IN) is found here
            for prepared in (plan.page, plan.count):
                prepared.compiled(dialect)
        except ValueError:
            return None
        return plan


class _PlanCache:
    """The plans of one registry's queries (an attribute's definition is part of its SQL), most recently used
    first: `PLANS` of them, each compiled on the query's second sighting among the last `SIGHTINGS`."""

    PLANS, SIGHTINGS = 256, 4096

    def __init__(self) -> None:
        self._plans: OrderedDict[Any, IndexPlan | None] = OrderedDict()
        self._seen: OrderedDict[Any, None] = OrderedDict()
        self._lock = threading.Lock()  # reads also run in the thread pool

    def get(self, key: Any, build: Callable[[], IndexPlan | None]) -> IndexPlan | None:
        with self._lock:
            if key in self._plans:
                self._plans.move_to_end(key)
                return self._plans[key]
            if key not in self._seen:
                self._seen[key] = None
                if len(self._seen) > self.SIGHTINGS:
                    self._seen.popitem(last=False)
                return None
            del self._seen[key]
        plan = build()
        with self._lock:
            self._plans[key] = plan
            if len(self._plans) > self.PLANS:
                self._plans.popitem(last=False)
        return plan


_PLANS: weakref.WeakKeyDictionary[Registry, _PlanCache] = weakref.WeakKeyDictionary()


def _shape(predicate: Predicate | None) -> Any:
    """A predicate as a hashable key, exact: values keep their type (1, 1.0 and True are equal in Python
    but not in SQL)."""
    if predicate is None:
        return None
    if isinstance(predicate, Compare):
        value = predicate.value
        return ("cmp", _ref_shape(predicate.ref), predicate.op, type(value).__name__, value)
    if isinstance(predicate, And):
        return ("and", _shape(predicate.left), _shape(predicate.right))
    if isinstance(predicate, Or):
        return ("or", _shape(predicate.left), _shape(predicate.right))
    if isinstance(predicate, Not):
        return ("not", _shape(predicate.operand))
    return ("path", _ref_shape(predicate.ref), _shape(predicate.inner))


def _ref_shape(ref: AttrRef) -> tuple[Any, ...]:
    return (ref.schema, ref.attr.name, ref.sub and ref.sub.name, ref.extension)


def user_name_lookup(
    registry: Registry, rt: ResourceType, params: SearchParams
) -> tuple[SearchParams, str | None]:
    """`params` with its filter parsed, and the userName key when the search is a lookup of one user by
    userName (`filter=userName eq "..."`, first page, no sort, no cursor): Entra's and Okta's question before
    each create. userName is unique by that key, so the answer is at most one user and its own count; the
    caller reads it with one prebuilt statement (`store.users.one_read`) instead of a search."""
    predicate = _predicate(registry, rt, params)
    parsed = dataclasses.replace(params, filter=predicate)
    if not (
        isinstance(predicate, Compare)
        and predicate.op == "eq"
        and isinstance(predicate.value, str)
        and predicate.ref.schema == USER_URN
        and predicate.ref.attr.name == "userName"
        and predicate.ref.sub is None
        and rt.name == "User"
        and params.cursor is None
        and not params.sort_by
        and not params.sort_order
        and (params.start_index or 1) <= 1
        and _page_size(params) > 0
    ):
        return parsed, None
    return parsed, literal_key(
        predicate.value
    ) or None  # a key PRECIS refuses matches none: the search says so


def _total(conn: sa.Connection, query: _Query) -> int:
    """totalResults: an exact COUNT, in the caller's transaction (the page's snapshot)."""
    return int(conn.execute(_count(query)).scalar_one())


def _count(query: _Query) -> sa.Select[Any]:
    count = sa.select(sa.func.count()).select_from(query.table)
    if query.filtered:  # `WHERE 1 = 1` would cost SQLite its fast whole-table count
        count = count.where(query.where)
    return count


def _cursor_page(
    conn: sa.Connection, query: _Query, position: tuple[str, list[Any]] | None, size: int
) -> Page:
    """A cursor page. From the first page, a page that is not full is every match, so it is the count too."""
    if size == 0:
        return Page(_total(conn, query), [], None)
    if position is None:
        stmt = query.page(size)
    elif position[0] == _AFTER:
        stmt = query.page(size, query.beyond(position[1]))
    else:
        stmt = query.page_before(position[1], size)
    rows = list(conn.execute(stmt).all())
    total = len(rows) if position is None and len(rows) < size else _total(conn, query)
    if not rows:
        return Page(total, [], None)
    first, last = query.positions(conn, rows[0], rows[-1])
    has_next = _exists(conn, query.where, query.beyond(last))
    has_previous = position is not None and _exists(conn, query.where, query.beyond(first, reverse=True))
    return Page(
        total,
        rows,
        None,
        query.encode(_AFTER, last) if has_next else None,
        query.encode(_BEFORE, first) if has_previous else None,
    )


def _exists(conn: sa.Connection, *conditions: sa.ColumnElement[bool]) -> bool:
    return bool(conn.execute(sa.select(sa.exists().where(*conditions))).scalar_one())


@dataclass(frozen=True, slots=True)
class _Term:
    """One ORDER BY term. A NULL value is the greatest: last ascending, first descending."""

    expr: sa.ColumnElement[Any]
    descending: bool
    nullable: bool

    def clause(self, reverse: bool) -> sa.ColumnElement[Any]:
        down = self.descending != reverse
        clause = self.expr.desc() if down else self.expr.asc()
        if not self.nullable:
            return clause
        return clause.nulls_first() if down else clause.nulls_last()

    def beyond(self, value: Any, reverse: bool) -> sa.ColumnElement[bool]:
        """Rows whose value comes strictly after `value` in this term's order (before it when reversed)."""
        down = self.descending != reverse
        if value is None:
            return self.expr.is_not(None) if down else sa.false()
        bound = sa.literal(value, self.expr.type)  # a bound parameter even for booleans
        past = self.expr < bound if down else self.expr > bound
        return sa.or_(past, self.expr.is_(None)) if self.nullable and not down else past

    def equal(self, value: Any) -> sa.ColumnElement[bool]:
        return self.expr.is_(None) if value is None else self.expr == sa.literal(value, self.expr.type)

    def on(self, expr: sa.ColumnElement[Any]) -> _Term:
        return _Term(expr, self.descending, self.nullable)


@dataclass(frozen=True, slots=True)
class _Query:
    """A search compiled once: the table, the WHERE clause, the order and the cursor key."""

    table: sa.Table
    columns: tuple[sa.ColumnElement[Any], ...]  # what a page selects: the table's columns
    where: sa.ColumnElement[bool]
    terms: tuple[_Term, ...]  # the sort key (when sortBy is given), then the primary key
    key_types: tuple[type, ...]  # what a cursor may carry as the sort value
    fingerprint: bytes
    filtered: bool  # False: every row matches (no filter)

    @classmethod
    def build(
        cls,
        dialect: str,
        registry: Registry,
        rt: ResourceType,
        params: SearchParams,
        now_micros: int,
        *,
        data_as_text: bool = False,
    ) -> _Query:
        table = table_of(rt)
        columns = tuple(
            sa.type_coerce(c, sa.Text).label(c.name) if data_as_text and c.name == "data" else c
            for c in table.c
        )
        predicate = _predicate(registry, rt, params)
        where = (
            sa.true()
            if predicate is None
            else compile_filter(predicate, rt, now_micros=now_micros, dialect=dialect)
        )
        descending = _descending(params.sort_order)
        ref = _sort_ref(registry, rt, params.sort_by)
        pk = _Term(table.c.pk, descending and ref is None, False)
        terms: tuple[_Term, ...] = (pk,)
        key_types: tuple[type, ...] = ()
        if ref is not None:
            key = sort_key(ref, rt, now_micros=now_micros, dialect=dialect)
            nullable = not isinstance(key, sa.Column) or key.nullable
            terms, key_types = (_Term(key, descending, bool(nullable)), pk), _key_types(ref)
        shape = repr((rt.name, predicate, ref and ref.full_path, descending)).encode()
        fingerprint = hashlib.sha256(shape).digest()
        return cls(table, columns, where, terms, key_types, fingerprint, predicate is not None)

    def page(self, size: int, *conditions: sa.ColumnElement[bool]) -> sa.Select[Any]:
        order = [term.clause(reverse=False) for term in self.terms]
        return sa.select(*self.columns).where(self.where, *conditions).order_by(*order).limit(size)

    def page_at(self, size: int, offset: int) -> sa.Select[Any]:
        """The index page `offset`.. of `size` rows, keys first: the matching primary keys are ordered and
        cut to the page (the filter's index holds them), then only the page's rows are read. Ordering whole
        rows instead made SQLite copy every match, JSON document and all, into its sorter: 50,000 rows for
        `name.familyName sw "Sm"` at a million users, for a page of 50. The order ends with the primary key,
        so the outer ORDER BY puts the same rows in the same order."""
        order = [term.clause(reverse=False) for term in self.terms]
        pk = self.table.c.pk
        keys = sa.select(pk).where(self.where).order_by(*order).limit(size).offset(offset)
        return sa.select(*self.columns).where(pk.in_(keys.scalar_subquery())).order_by(*order)

    def page_before(self, position: list[Any], size: int) -> sa.Select[Any]:
        """The `size` rows just before `position`, in forward order: the nearest ones are found in reverse
        order, then put back in order by the database."""
        keys = [term.expr.label(f"_k{i}") for i, term in enumerate(self.terms)]
        nearest = (
            sa.select(*self.columns, *keys)
            .where(self.where, self.beyond(position, reverse=True))
            .order_by(*(term.clause(reverse=True) for term in self.terms))
            .limit(size)
            .subquery()
        )
        order = [term.on(nearest.c[f"_k{i}"]).clause(reverse=False) for i, term in enumerate(self.terms)]
        return sa.select(*(nearest.c[c.name] for c in self.table.c)).order_by(*order)

    def beyond(self, position: list[Any], *, reverse: bool = False) -> sa.ColumnElement[bool]:
        """Rows strictly after `position` in the order (before it when `reverse`), lexicographically."""
        result: sa.ColumnElement[bool] | None = None
        for term, value in reversed(list(zip(self.terms, position, strict=True))):
            later = term.beyond(value, reverse)
            result = later if result is None else sa.or_(later, sa.and_(term.equal(value), result))
        assert result is not None
        return result

    def positions(
        self, conn: sa.Connection, first: sa.Row[Any], last: sa.Row[Any]
    ) -> tuple[list[Any], list[Any]]:
        """The order values of two rows of a page: the sort key is read back by primary key, because it may be
        computed (lower-cased, from JSON, from an element table) rather than a column of the row."""
        if len(self.terms) == 1:
            return [first.pk], [last.pk]
        pk = self.table.c.pk
        keys = dict(
            conn.execute(sa.select(pk, self.terms[0].expr).where(pk.in_([first.pk, last.pk]))).tuples().all()
        )
        return [keys[first.pk], first.pk], [keys[last.pk], last.pk]

    def encode(self, direction: str, position: list[Any]) -> str:
        payload = orjson.dumps([direction, *position])
        return base64.urlsafe_b64encode(self._mac(payload) + payload).rstrip(b"=").decode("ascii")

    def decode(self, cursor: str) -> tuple[str, list[Any]] | None:
        """(direction, position) of a cursor this query issued; None for "" (the first page)."""
        if cursor == "":
            return None
        if not _CURSOR.fullmatch(cursor):
            raise _invalid_cursor()
        try:
            raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
            mac, payload = raw[:_MAC_SIZE], raw[_MAC_SIZE:]
            decoded: Any = orjson.loads(payload) if hmac.compare_digest(mac, self._mac(payload)) else None
        except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
            raise _invalid_cursor() from None
        if not self._well_formed(decoded):
            raise _invalid_cursor()
        return decoded[0], decoded[1:]

    def _mac(self, payload: bytes) -> bytes:
        return hashlib.blake2b(payload, key=self.fingerprint, digest_size=_MAC_SIZE).digest()

    def _well_formed(self, decoded: Any) -> bool:
        """A MAC-checked payload is ours, but check its shape anyway: a bad value must not reach SQL."""
        if (
            not isinstance(decoded, list)
            or len(decoded) != 1 + len(self.terms)
            or decoded[0] not in (_AFTER, _BEFORE)
        ):
            return False
        *key, pk = decoded[1:]
        if not isinstance(pk, int) or isinstance(pk, bool) or not 0 <= pk < _INT64:
            return False
        return all(_is_key_value(value, self.key_types) for value in key)


def _is_key_value(value: Any, types: tuple[type, ...]) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, str) and "\x00" in value:
        return False
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        return False
    return isinstance(value, types)


def _invalid_cursor() -> ScimError:
    return ScimError(
        400, "the cursor is not one this query issued: start again with an empty cursor", "invalidCursor"
    )


def _page_size(params: SearchParams) -> int:
    count = params.max_page_size if params.count is None else params.count
    return max(0, min(count, params.max_page_size))


def _predicate(registry: Registry, rt: ResourceType, params: SearchParams) -> Predicate | None:
    text = params.filter
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        return text
    return parse_filter(
        registry,
        rt,
        text,
        max_length=params.max_filter_length,
        max_depth=params.max_filter_depth,
        max_terms=params.max_filter_terms,
    )


def _descending(sort_order: str | None) -> bool:
    if not sort_order:
        return False
    if sort_order.lower() not in ("ascending", "descending"):
        raise invalid_value(f"sortOrder must be ascending or descending, not {sort_order!r}")
    return sort_order.lower() == "descending"


def _sort_ref(registry: Registry, rt: ResourceType, sort_by: str | None) -> AttrRef | None:
    if not sort_by:
        return None
    try:
        ref = registry.resolve(rt, sort_by)
    except UnknownAttribute as exc:
        raise invalid_value(f"sortBy: {exc}") from None
    if ref.leaf.returned == "never":
        raise invalid_value(f"sortBy: {ref.full_path} cannot be sorted on")
    return ref


def _key_types(ref: AttrRef) -> tuple[type, ...]:
    """The Python types a sort value of `ref` comes back from the database as."""
    leaf = ref.leaf if ref.sub or not ref.attr.multi_valued else ref.attr.sub("value")
    kind = "integer" if ref.full_path == "meta.version" else (leaf.type if leaf else "string")
    if kind == "boolean":
        return (bool,)
    if kind == "dateTime":
        return (int,)
    if kind in ("integer", "decimal"):
        return (int, float)
    return (str,)
