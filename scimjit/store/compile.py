"""Predicate -> SQL, written once for every table a SCIM filter runs on: Users and Groups (`store.filters`) and
the admin views (`store.admin`).

The caller says where attributes live (a `Columns`); this module owns what each operator means in SQL, so
`/Users?filter=` and `/jit/v1/audit?filter=` cannot drift apart. Dialect spellings stay in `store.dialect`.

Semantics the RFC leaves open, chosen so that `not` is an exact complement:

* `pr` holds when the attribute has a value other than null, "", {} or [] (RFC 7644 §3.4.2.2 "has a non-empty
  value"; RFC 7643 §2.5: unassigned and null are the same state). `eq null` is `not pr`, `ne null` is `pr`:
  an attribute holding "" is unassigned, so it is `eq null` and not `ne null`.
* `ne` is exactly `not eq`, so it matches where the attribute is absent: absent is not equal. A stored ""
  is unassigned too: it satisfies no comparison with a value (not even `le`, or `eq ""`).
* `not (X)` matches exactly the rows X does not match: SQL NULL (from an absent value) counts as false under
  `not` instead of dropping the row.
* caseExact=false strings compare lower-cased by Python's `str.lower` (what the `*_ci` columns hold, and what
  SQLite's `lower()` is replaced by in `store.db`); ordering operators and `sw` compare by code point;
  `co` / `sw` / `ew` take `%`, `_`, `*`, `?` and `[` literally and are case-sensitive on every dialect.
* identifiers (`userName`) compare by their PRECIS key (RFC 8265, `scim.identifiers`), the literal mapped the
  same way (for `co`/`sw`/`ew` and ordering, by the mapping part only); a literal PRECIS refuses matches
  nothing (and `ne` everything).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.scim import identifiers
from scimjit.scim.predicate import And, Compare, Not, Or, Predicate, ValuePath
from scimjit.scim.schema import Attribute, AttrRef
from scimjit.store import dialect as sql

TEXT = frozenset({"string", "reference", "binary"})
_ORDERING: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


class Unsupported(Exception):
    """An attribute with no SQL form; callers turn it into the SCIM error of their parameter."""


@dataclass(frozen=True, slots=True)
class Operand:
    """A scalar a comparison reads: its SQL expression and how that expression is stored."""

    expr: sa.ColumnElement[Any]
    folded: bool = False  # holds lower-cased text: compare with a lower-cased literal
    codepoint: bool = False  # text already ordered by code point (a `tables.Key` column): ranges use indexes
    micros: bool = False  # a dateTime as epoch microseconds
    present: sa.ColumnElement[bool] | None = None  # how `pr` reads, when not "not null and not ''"
    max_length: int | None = None  # only this prefix is stored
    identifier: bool = False  # holds PRECIS keys (`scim.identifiers`): compare with the literal's key


Scope = Callable[[AttrRef], Operand]
"""Resolves the sub-attributes named inside a value path to the element's operands."""

Where = Callable[[Predicate, Scope], sa.ColumnElement[bool]]
"""Compiles a value path's inner predicate against a scope: what `Columns.elements` is handed."""


class Columns(Protocol):
    """Where one resource type's attributes live: all the compiler asks of its caller."""

    def condition(self, compare: Compare) -> sa.ColumnElement[bool] | None:
        """A finished condition for an attribute with rules of its own (`schemas`, `meta.version`), else None."""

    def operand(self, ref: AttrRef) -> Operand:
        """The scalar a resource-level comparison reads; `Unsupported` when there is none."""

    def elements(self, ref: AttrRef, inner: Predicate | None, where: Where) -> sa.ColumnElement[bool]:
        """Rows with an element of multi-valued `ref` satisfying `inner` (any element when None)."""


def compile_predicate(predicate: Predicate, columns: Columns, dialect: str) -> sa.ColumnElement[bool]:
    """A WHERE clause for `predicate`; raises `Unsupported` for attributes `columns` cannot place."""

    def where(node: Predicate, scope: Scope | None) -> sa.ColumnElement[bool]:
        if isinstance(node, And):
            return sa.and_(where(node.left, scope), where(node.right, scope))
        if isinstance(node, Or):
            return sa.or_(where(node.left, scope), where(node.right, scope))
        if isinstance(node, Not):
            return sa.not_(sa.func.coalesce(where(node.operand, scope), sa.false()))
        if isinstance(node, ValuePath):
            return columns.elements(node.ref, node.inner, where)
        if scope is not None:
            return compare(scope(node.ref), node, dialect)
        special = columns.condition(node)
        if special is not None:
            return special
        ref = node.ref
        if ref.attr.multi_valued and ref.attr.type == "complex" and ref.sub is None:
            has = columns.elements(ref, None, where)  # `emails pr`, `emails eq null`: has an element or not
            return has if node.op in ("pr", "ne") else sa.not_(has)
        return compare(columns.operand(ref), node, dialect)

    return where(predicate, None)


def compare(operand: Operand, node: Compare, dialect: str) -> sa.ColumnElement[bool]:
    """`operand op value`, the one SQL form of every SCIM comparison operator."""
    attr, op, value = node.ref.leaf, node.op, node.value
    if op == "pr" or value is None:
        present = operand.present if operand.present is not None else is_present(operand.expr, attr)
        return sa.not_(present) if op == "eq" else present
    text = attr.type in TEXT
    expr = operand.expr
    if operand.micros:
        value = to_micros(value)
    elif text and operand.identifier:
        value = identifiers.literal_key(value) if op in ("eq", "ne") else identifiers.fragment_key(value)
        if value is None:  # a literal no identifier can hold (U+212A): equal to none, and `ne` all
            return sa.true() if op == "ne" else sa.false()
    elif text and not attr.case_exact:
        value = value.lower()
        expr = expr if operand.folded else sa.func.lower(expr)
    if text and operand.max_length is not None and op in ("eq", "ne", "sw"):
        value = value[: operand.max_length]
    if op == "ne":  # absent is not equal; `ne` is `not eq` exactly
        return sa.or_(expr.is_(None), sa.not_(_holds(operand, expr, "eq", value, text, dialect)))
    return _holds(operand, expr, op, value, text, dialect)


def _holds(
    operand: Operand, expr: sa.ColumnElement[Any], op: str, value: Any, text: bool, dialect: str
) -> sa.ColumnElement[bool]:
    """`expr op value` for a non-null value; a stored "" is unassigned, so it satisfies none of them (it would
    be below every string for `lt`/`le`, and equal to or contain a "" literal)."""
    condition = _operator(operand, expr, op, value, text, dialect)
    if text and (op in ("lt", "le") or value == ""):
        return sa.and_(condition, operand.expr != "")
    return condition


def _operator(
    operand: Operand, expr: sa.ColumnElement[Any], op: str, value: Any, text: bool, dialect: str
) -> sa.ColumnElement[bool]:
    if op == "eq":
        return expr == value
    if op in ("co", "ew"):
        return sql.matches(dialect, expr, op, value)
    if text and not operand.codepoint:
        expr = sql.by_codepoint(dialect, expr)
    if op == "sw":
        return starts_with(expr, value)
    if op not in _ORDERING:
        raise Unsupported(f"unknown operator {op!r}")
    return _ORDERING[op](expr, value)


def sortable(operand: Operand, attr: Attribute, dialect: str) -> sa.ColumnElement[Any]:
    """What sorting on `operand` orders by: lower-cased unless caseExact, text by code point (RFC 7644
    §3.4.2.3 asks for the attribute's comparison rules)."""
    expr = operand.expr
    if attr.type not in TEXT:
        return expr
    if not attr.case_exact and not operand.folded:
        expr = sa.func.lower(expr)
    return expr if operand.codepoint else sql.by_codepoint(dialect, expr)


def is_present(expr: sa.ColumnElement[Any], attr: Attribute) -> sa.ColumnElement[bool]:
    """`pr` over a plain column: not NULL, and for text not "" either."""
    if attr.type in TEXT:
        return sa.and_(expr.is_not(None), expr != "")
    return expr.is_not(None)


def starts_with(expr: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    """`expr sw prefix` as the code point range [prefix, successor): an index range scan on `Key` columns,
    and no pattern, so `%` and `_` in the prefix are plain characters."""
    upper = prefix_successor(prefix)
    at_least = expr >= prefix
    return at_least if upper is None else sa.and_(at_least, expr < upper)


def prefix_successor(prefix: str) -> str | None:
    """The least string above every string starting with `prefix`, in code point order; None if there is none
    (the prefix is empty or all U+10FFFF). Surrogates are skipped: no stored text contains them."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if last <= 0x10FFFF:
            return "".join(chars) + chr(0xE000 if 0xD800 <= last <= 0xDFFF else last)
    return None
