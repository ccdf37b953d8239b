"""Admin views over the engine's own tables (audit log, accounts, grants, requests, outbox), queried with
SCIM filters, sorting and paging, all in SQL.

Each view is described as a SCIM resource type in `schemas/admin/` (a registry of its own: the SCIM
discovery endpoints never show these), so filters are parsed and type-checked by the same parser as
`/Users` (`scimjit.scim.filter`) and compiled by the same compiler (`store.compile`), so every operator means
what it means on `/Users`. The tables are flat, one column per attribute: `_ViewColumns` maps an attribute to
its column, with `dateTime` values stored as epoch microseconds; JSON columns (details, roles, payload, ...)
and multi-valued attributes are returned but not filterable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import sqlalchemy as sa

from scimjit.clock import format_micros
from scimjit.scim.errors import invalid_filter, invalid_value
from scimjit.scim.filter import parse_filter
from scimjit.scim.predicate import Compare, Predicate
from scimjit.scim.schema import DEFAULT_SCHEMAS_DIR, Attribute, AttrRef, Registry, ResourceType, load_registry
from scimjit.store.compile import Operand, Unsupported, Where, compile_predicate, sortable
from scimjit.store.db import Database
from scimjit.store.tables import Row, access_requests, accounts, audit_log, grants, outbox

MAX_OFFSET = 2**62
ADMIN_SCHEMAS_DIR = DEFAULT_SCHEMAS_DIR / "admin"  # `schemas/admin/`, found through the package


@dataclass(frozen=True, slots=True)
class View:
    """One admin listing: a table seen as the resource type `resource_type`."""

    resource_type: str
    table: sa.Table
    key: str  # the primary key column: the tie-breaker that makes every sort order total

    def column(self, attribute: str) -> sa.Column[Any]:
        return self.table.c[_snake(attribute)]


VIEWS: dict[str, View] = {
    "audit": View("AuditEvent", audit_log, "id"),
    "accounts": View("Account", accounts, "id"),
    "grants": View("Grant", grants, "id"),
    "requests": View("AccessRequest", access_requests, "id"),
    "outbox": View("OutboxEvent", outbox, "id"),
}


@cache
def admin_registry() -> Registry:
    """The admin resource types. `load_registry` also brings User and Group; they are simply not used."""
    registry = load_registry([ADMIN_SCHEMAS_DIR])
    for view in VIEWS.values():  # schema and table must agree; fail at start, not on the first query
        for attr in _attributes(registry, registry.resource_type(view.resource_type)):
            view.column(attr.name)
    return registry


def attribute_names(view: View) -> frozenset[str]:
    registry = admin_registry()
    return frozenset(a.name for a in _attributes(registry, registry.resource_type(view.resource_type)))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _attributes(registry: Registry, rt: ResourceType) -> Iterator[Attribute]:
    schema = registry.schema(rt.schema)
    assert schema is not None
    yield from schema.attributes.values()


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    start_index: int
    resources: list[dict[str, Any]]


def query(
    conn: sa.Connection,
    view: View,
    *,
    filter: str | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
    start_index: int | None = 1,
    count: int = 100,
    max_filter_length: int = 4096,
    max_filter_depth: int = 32,
    max_filter_terms: int = 50,
) -> Page:
    """One page of `view` matching `filter`, sorted, with the total; as for SCIM lists (RFC 7644 §3.4.2)."""
    registry = admin_registry()
    rt = registry.resource_type(view.resource_type)
    dialect = conn.dialect.name
    where = _where(view, filter, dialect, max_filter_length, max_filter_depth, max_filter_terms)
    start = min(max(1, start_index or 1), MAX_OFFSET)  # beyond any table; SQL integers stop at 2**63
    count = min(max(0, count), MAX_OFFSET)
    total = int(conn.execute(sa.select(sa.func.count()).select_from(view.table).where(where)).scalar_one())
    order = _order(registry, rt, view, sort_by, sort_order, dialect)
    rows: list[Mapping[str, Any]] = []
    if count:
        stmt = sa.select(view.table).where(where).order_by(*order).offset(start - 1).limit(count)
        rows = [dict(row) for row in conn.execute(stmt).mappings()]
    return Page(total, start, [render(registry, rt, view, row) for row in rows])


def stream(
    db: Database,
    view: View,
    *,
    filter: str | None = None,
    batch: int = 1000,
    max_filter_length: int = 4096,
    max_filter_depth: int = 32,
    max_filter_terms: int = 50,
) -> Iterator[dict[str, Any]]:
    """Every matching record in key order, read in keyset-paged batches, each in its own short read
    transaction (no OFFSET, no unbounded fetch, no connection held while the consumer is slow): what the
    JSON-lines export walks. The filter is checked here, before the first record is produced, so a bad
    filter is an error response rather than a broken stream."""
    where = _where(view, filter, db.dialect, max_filter_length, max_filter_depth, max_filter_terms)
    return _stream(db, view, where, batch)


def _stream(db: Database, view: View, where: sa.ColumnElement[bool], batch: int) -> Iterator[dict[str, Any]]:
    registry = admin_registry()
    rt = registry.resource_type(view.resource_type)
    key = view.table.c[view.key]
    last: Any = None
    while True:
        stmt = sa.select(view.table).where(where).order_by(key).limit(batch)
        if last is not None:
            stmt = stmt.where(key > last)
        with db.read() as conn:  # a short transaction per batch: no connection is held between batches
            rows = [dict(row) for row in conn.execute(stmt).mappings()]
        for row in rows:
            yield render(registry, rt, view, row)
        if len(rows) < batch:
            return
        last = rows[-1][view.key]


def _where(
    view: View, filter: str | None, dialect: str, max_length: int, max_depth: int, max_terms: int
) -> sa.ColumnElement[bool]:
    if not filter:
        return sa.true()
    registry = admin_registry()
    rt = registry.resource_type(view.resource_type)
    return compile_filter(
        view,
        parse_filter(registry, rt, filter, max_length=max_length, max_depth=max_depth, max_terms=max_terms),
        dialect=dialect,
    )


def render(registry: Registry, rt: ResourceType, view: View, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as its resource: camelCase names, timestamps as RFC 3339, absent values left out."""
    doc: dict[str, Any] = {}
    for attr in _attributes(registry, rt):
        value = row[_snake(attr.name)]
        if value is None:
            continue
        doc[attr.name] = format_micros(value) if attr.type == "dateTime" else value
    return doc


def render_row(view_name: str, row: Row) -> dict[str, Any]:
    """One row of a view's table as that view's resource (grants and requests render their own rows so)."""
    registry = admin_registry()
    view = VIEWS[view_name]
    return render(
        registry, registry.resource_type(view.resource_type), view, cast("Mapping[str, Any]", row._mapping)
    )


# ---------------------------------------------------------------- filter -> SQL


def compile_filter(view: View, predicate: Predicate, *, dialect: str) -> sa.ColumnElement[bool]:
    """A WHERE clause over `view.table`; 400 `invalidFilter` for attributes with no column of their own."""
    try:
        return compile_predicate(predicate, _ViewColumns(view), dialect)
    except Unsupported as exc:
        raise invalid_filter(str(exc)) from None


@dataclass(frozen=True, slots=True)
class _ViewColumns:
    """`store.compile.Columns` for a flat table: one column per attribute, nothing nested or multi-valued."""

    view: View

    def condition(self, compare: Compare) -> sa.ColumnElement[bool] | None:
        return None

    def operand(self, ref: AttrRef) -> Operand:
        attr = ref.attr
        if ref.sub is not None or attr.type == "complex" or attr.multi_valued or ref.schema == "":
            raise Unsupported(f"{ref.path} is not filterable here")
        return Operand(self.view.column(attr.name), micros=attr.type == "dateTime")

    def elements(self, ref: AttrRef, inner: Predicate | None, where: Where) -> sa.ColumnElement[bool]:
        raise Unsupported(f"{ref.path} is not filterable here")


def _order(
    registry: Registry,
    rt: ResourceType,
    view: View,
    sort_by: str | None,
    sort_order: str | None,
    dialect: str,
) -> list[Any]:
    key = view.table.c[view.key]
    descending = (sort_order or "ascending").lower() == "descending"
    if sort_order and sort_order.lower() not in ("ascending", "descending"):
        raise invalid_value(f"sortOrder must be ascending or descending, got {sort_order!r}")
    if not sort_by:
        return [key.desc() if descending else key.asc()]
    try:
        ref = registry.resolve(rt, sort_by)
    except LookupError:
        raise invalid_value(f"cannot sort by {sort_by!r}: no such attribute") from None
    if ref.sub is not None or ref.attr.type == "complex" or ref.attr.multi_valued or ref.schema == "":
        raise invalid_value(f"cannot sort by {sort_by!r}")
    column = sortable(Operand(view.column(ref.attr.name)), ref.attr, dialect)  # as filters compare
    # SCIM sorts absent values last whatever the direction (RFC 7644 §3.4.2.3)
    nulls = sa.case((view.column(ref.attr.name).is_(None), 1), else_=0)
    return [nulls, column.desc() if descending else column.asc(), key.desc() if descending else key.asc()]


# ---------------------------------------------------------------- outbox statistics (for /metrics)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    counts: dict[str, int]
    oldest_pending_micros: int | None


def outbox_stats(db: Database) -> OutboxStats:
    """Pending and dead events and the creation time of the oldest pending one: two aggregate queries
    on the `(status, next_attempt_at)` index."""
    with db.read() as conn:
        counts = {
            status: int(n)
            for status, n in conn.execute(
                sa.select(outbox.c.status, sa.func.count())
                .where(outbox.c.status.in_(("pending", "dead")))  # `done` grows forever: not counted
                .group_by(outbox.c.status)
            ).all()
        }
        oldest = conn.execute(
            sa.select(sa.func.min(outbox.c.created_at)).where(outbox.c.status == "pending")
        ).scalar_one_or_none()
    return OutboxStats(counts, oldest)
