"""Admin views over the engine's own tables (audit log, accounts, grants, requests, outbox), queried with
SCIM filters, sorting and paging, all in SQL.

Each view is described as a SCIM resource type in `schemas/admin/` (a registry of its own: the SCIM
discovery endpoints never show these), so filters are parsed and type-checked by the same parser as
`/Users` (`scimjit.scim.filter`). The tables are flat, one column per attribute, so the compiler here is the
simple case of `store.filters`: attribute -> column, with `caseExact=false` strings compared lower-cased,
`dateTime` values compared as the epoch microseconds they are stored as, and JSON columns (details, roles,
payload, ...) returned but not filterable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa

from scimjit.clock import from_micros, isoformat, to_micros
from scimjit.scim.errors import invalid_filter, invalid_value
from scimjit.scim.filter import parse_filter
from scimjit.scim.predicate import And, Compare, Not, Or, Predicate, ValuePath
from scimjit.scim.schema import DEFAULT_SCHEMAS_DIR, Attribute, Registry, ResourceType, load_registry
from scimjit.store.db import Database
from scimjit.store.tables import access_requests, accounts, audit_log, grants, outbox

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
) -> Page:
    """One page of `view` matching `filter`, sorted, with the total; as for SCIM lists (RFC 7644 §3.4.2)."""
    registry = admin_registry()
    rt = registry.resource_type(view.resource_type)
    where = _where(view, filter, max_filter_length, max_filter_depth)
    start = min(max(1, start_index or 1), MAX_OFFSET)  # beyond any table; SQL integers stop at 2**63
    count = min(max(0, count), MAX_OFFSET)
    total = int(conn.execute(sa.select(sa.func.count()).select_from(view.table).where(where)).scalar_one())
    order = _order(registry, rt, view, sort_by, sort_order)
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
) -> Iterator[dict[str, Any]]:
    """Every matching record in key order, read in keyset-paged batches, each in its own short read
    transaction (no OFFSET, no unbounded fetch, no connection held while the consumer is slow): what the
    JSON-lines export walks. The filter is checked here, before the first record is produced, so a bad
    filter is an error response rather than a broken stream."""
    where = _where(view, filter, max_filter_length, max_filter_depth)
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


def _where(view: View, filter: str | None, max_length: int, max_depth: int) -> sa.ColumnElement[bool]:
    if not filter:
        return sa.true()
    registry = admin_registry()
    rt = registry.resource_type(view.resource_type)
    return compile_filter(
        view, parse_filter(registry, rt, filter, max_length=max_length, max_depth=max_depth)
    )


def render(registry: Registry, rt: ResourceType, view: View, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as its resource: camelCase names, timestamps as RFC 3339, absent values left out."""
    doc: dict[str, Any] = {}
    for attr in _attributes(registry, rt):
        value = row[_snake(attr.name)]
        if value is None:
            continue
        doc[attr.name] = isoformat(from_micros(value)) if attr.type == "dateTime" else value
    return doc


# ---------------------------------------------------------------- filter -> SQL


def compile_filter(view: View, predicate: Predicate) -> sa.ColumnElement[bool]:
    if isinstance(predicate, And):
        return sa.and_(compile_filter(view, predicate.left), compile_filter(view, predicate.right))
    if isinstance(predicate, Or):
        return sa.or_(compile_filter(view, predicate.left), compile_filter(view, predicate.right))
    if isinstance(predicate, Not):
        inner = compile_filter(view, predicate.operand)
        return sa.not_(sa.func.coalesce(inner, sa.false()))  # NULL comparisons count as false before `not`
    if isinstance(predicate, ValuePath):
        raise invalid_filter(f"{predicate.ref.path} is not filterable here")
    return _compare(view, predicate)


def _compare(view: View, compare: Compare) -> sa.ColumnElement[bool]:
    ref, op = compare.ref, compare.op
    attr = ref.attr
    if ref.sub is not None or attr.type == "complex" or attr.multi_valued or ref.schema == "":
        raise invalid_filter(f"{ref.path} is not filterable here")
    column: Any = view.column(attr.name)
    if op == "pr" or (op == "ne" and compare.value is None):
        return sa.and_(column.is_not(None), column != "") if attr.type == "string" else column.is_not(None)
    if compare.value is None:  # eq null
        return column.is_(None)
    value = _sql_value(attr, compare.value)
    if attr.type == "string" and not attr.case_exact:
        column, value = sa.func.lower(column), value.lower()
    if op == "eq":
        return column == value
    if op == "ne":
        return sa.or_(column != value, column.is_(None))
    if op == "co":
        return column.contains(value, autoescape=True)
    if op == "sw":
        return column.startswith(value, autoescape=True)
    if op == "ew":
        return column.endswith(value, autoescape=True)
    comparisons = {"gt": column > value, "ge": column >= value, "lt": column < value, "le": column <= value}
    if op not in comparisons:
        raise invalid_filter(f"unknown operator {op!r}")
    return comparisons[op]


def _sql_value(attr: Attribute, value: Any) -> Any:
    if attr.type == "dateTime" and isinstance(value, datetime):
        return to_micros(value)
    return value


def _order(
    registry: Registry, rt: ResourceType, view: View, sort_by: str | None, sort_order: str | None
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
    column: Any = view.column(ref.attr.name)
    if ref.attr.type == "string" and not ref.attr.case_exact:
        column = sa.func.lower(column)
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
