"""Predicate -> SQLAlchemy Core over `users` or `groups`: filters and sort keys run in the database, never in
Python.

Where an attribute lives decides how it compiles:

* promoted columns (`promoted.USER_COLUMNS` / `GROUP_COLUMNS`): indexed, `*_ci` hold lower-cased text, so
  `userName eq`, `externalId eq`, `displayName eq`, `name.familyName sw` are index lookups or ranges;
* multi-valued complex attributes of Users: one `user_values` row per element, so every condition of
  `emails[type eq "work" and value co "@x"]` tests the same row; `emails.value eq` is an index lookup;
* `members` of a Group and `groups` of a User: the `memberships` table, live rows only (expiry is exact even
  when the sweeper is late); `members.value eq` is an index lookup;
* everything else: the JSON document in `data`, extension attributes under their schema URN.

Multi-valued conditions compile to `pk IN (SELECT ... WHERE <element condition>)`: same-element semantics,
and both planners can start from the element index instead of scanning resources.

Semantics the RFC leaves open, chosen so that `not` is an exact complement:

* `pr` holds when the attribute has a value other than null, "", {} or [] (RFC 7643 §2.5); `eq null` is
  `not pr`, `ne null` is `pr`. A multi-valued attribute is present when it has an element.
* `ne` matches resources where the attribute is absent: absent is not equal.
* `not (X)` matches exactly the resources X does not match: SQL NULL (from an absent value) counts as false
  under `not` instead of dropping the row.
* multi-valued attributes match when some element matches: `emails.value ne "x"` means "has an email that is
  not x".
* caseExact=false strings compare lower-cased by Python's `str.lower` (what the `*_ci` columns hold); ordering
  operators and `sw` compare by code point; `co` / `sw` / `ew` take `%`, `_`, `*`, `?` and `[` literally.
* element values are stored lower-cased up to 512 characters (`user_values.value_ci`); longer values compare on
  that prefix.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from scimjit.clock import to_micros
from scimjit.scim.errors import invalid_filter, invalid_value
from scimjit.scim.predicate import And, Compare, Not, Or, Predicate, ValuePath
from scimjit.scim.schema import Attribute, AttrRef, ResourceType
from scimjit.store import dialect as sql
from scimjit.store.memberships import live
from scimjit.store.promoted import GROUP_COLUMNS, USER_COLUMNS, Promoted, value_row_attr
from scimjit.store.tables import groups, memberships, user_values, users

_TEXT = frozenset({"string", "reference", "binary"})
_ORDERING: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_VERSION = re.compile(r'(?:W/)?"?([0-9]{1,18})"?')
_VALUE_CI_LENGTH = 512  # promoted.user_value_rows keeps this much of an element's folded value


def table_of(rt: ResourceType) -> sa.Table:
    """The table holding resources of `rt`."""
    tables = {"User": users, "Group": groups}
    if rt.name not in tables:
        raise ValueError(f"no table for resource type {rt.name}")
    return tables[rt.name]


def compile_filter(
    predicate: Predicate, rt: ResourceType, *, now_micros: int, dialect: str
) -> sa.ColumnElement[bool]:
    """A WHERE clause over `table_of(rt)`; 400 `invalidFilter` for attributes that cannot be filtered in SQL
    (`meta.location`, `$ref`)."""
    try:
        return _Compiler(rt, now_micros, dialect).predicate(predicate, None)
    except _Unsupported as exc:
        raise invalid_filter(str(exc)) from None


def sort_key(ref: AttrRef, rt: ResourceType, *, now_micros: int, dialect: str) -> sa.ColumnElement[Any]:
    """What `sortBy=ref` orders by (RFC 7644 §3.4.2.3): lower-cased unless caseExact, by code point; for a
    multi-valued attribute, its primary element's value or else the first. NULL when there is none.
    400 `invalidValue` for what cannot be sorted on (a complex attribute itself, `schemas`, `meta.location`)."""
    try:
        return _Compiler(rt, now_micros, dialect).sort_key(ref)
    except _Unsupported as exc:
        raise invalid_value(str(exc)) from None


class _Unsupported(Exception):
    """An attribute with no SQL form; the public functions turn it into the SCIM error of their parameter."""


@dataclass(frozen=True, slots=True)
class _Operand:
    """A scalar a comparison reads: its SQL expression and how that expression is stored."""

    expr: sa.ColumnElement[Any]
    folded: bool = False  # holds lower-cased text: compare with a lower-cased literal
    codepoint: bool = False  # text already ordered by code point (a `tables.Key` column): ranges use indexes
    micros: bool = False  # a dateTime as epoch microseconds
    present: sa.ColumnElement[bool] | None = None  # how `pr` reads, when not "not null and not ''"
    max_length: int | None = None  # only this prefix is stored


_Scope = Callable[[AttrRef], _Operand]


class _Compiler:
    def __init__(self, rt: ResourceType, now_micros: int, dialect: str) -> None:
        self.rt = rt
        self.table = table_of(rt)
        self.now = now_micros
        self.dialect = dialect

    # ------------------------------------------------------------ predicates

    def predicate(self, predicate: Predicate, scope: _Scope | None) -> sa.ColumnElement[bool]:
        """`scope` resolves sub-attributes inside a value path; None at the resource level."""
        if isinstance(predicate, And):
            return sa.and_(self.predicate(predicate.left, scope), self.predicate(predicate.right, scope))
        if isinstance(predicate, Or):
            return sa.or_(self.predicate(predicate.left, scope), self.predicate(predicate.right, scope))
        if isinstance(predicate, Not):
            return sa.not_(sa.func.coalesce(self.predicate(predicate.operand, scope), sa.false()))
        if isinstance(predicate, ValuePath):
            return self._elements(predicate.ref, predicate.inner)
        if scope is not None:
            return self._compare(scope(predicate.ref), predicate)
        return self._resource_compare(predicate)

    def _resource_compare(self, compare: Compare) -> sa.ColumnElement[bool]:
        ref = compare.ref
        if ref.schema == "" and ref.attr.name == "schemas":
            return self._schemas(compare)
        if ref.full_path == "meta.version":
            return self._version(compare)
        if ref.attr.multi_valued and ref.attr.type == "complex" and ref.sub is None:
            has = self._elements(ref, None)  # `emails pr`, `emails eq null`: has an element or not
            return has if compare.op in ("pr", "ne") else sa.not_(has)
        return self._compare(self._resource_operand(ref), compare)

    def _compare(self, operand: _Operand, compare: Compare) -> sa.ColumnElement[bool]:
        attr, op, value = compare.ref.leaf, compare.op, compare.value
        if op == "pr" or value is None:
            present = operand.present if operand.present is not None else _is_present(operand.expr, attr)
            return sa.not_(present) if op == "eq" else present
        text = attr.type in _TEXT
        expr = operand.expr
        if operand.micros:
            value = to_micros(value)
        elif text and not attr.case_exact:
            value = value.lower()
            expr = expr if operand.folded else sa.func.lower(expr)
        if text and operand.max_length is not None and op in ("eq", "ne", "sw"):
            value = value[: operand.max_length]
        if op == "eq":
            return expr == value
        if op == "ne":
            return sa.or_(expr.is_(None), expr != value)
        if op in ("co", "ew"):
            return sql.matches(self.dialect, expr, op, value)
        if text and not operand.codepoint:
            expr = sql.by_codepoint(self.dialect, expr)
        if op == "sw":
            return _starts_with(expr, value)
        return _ORDERING[op](expr, value)

    def _schemas(self, compare: Compare) -> sa.ColumnElement[bool]:
        """`schemas` holds the core schema and each extension the resource has data for (as rendered)."""
        if compare.op == "pr":
            return sa.true()
        if compare.op not in ("eq", "ne"):
            raise _Unsupported("schemas can be compared with eq, ne and pr only")
        urn = (compare.value or "").lower()
        extension = next((u for u, _ in self.rt.extensions if u.lower() == urn), None)
        if urn == self.rt.schema.lower():
            has: sa.ColumnElement[bool] = sa.true()
        elif extension is not None:
            has = sql.json_present(self.dialect, self.table.c.data, [extension])
        else:
            has = sa.false()
        return has if compare.op == "eq" else sa.not_(has)

    def _version(self, compare: Compare) -> sa.ColumnElement[bool]:
        """`meta.version` is the ETag `W/"n"` of the integer version column."""
        if compare.op == "pr":
            return sa.true()
        if compare.op not in ("eq", "ne"):
            raise _Unsupported("meta.version can be compared with eq, ne and pr only")
        match = _VERSION.fullmatch(compare.value or "")
        equal = self.table.c.version == int(match.group(1)) if match else sa.false()
        return equal if compare.op == "eq" else sa.not_(equal)

    # ------------------------------------------------------------ where attributes live

    def _resource_operand(self, ref: AttrRef) -> _Operand:
        path, leaf = ref.full_path, ref.leaf
        promoted = (USER_COLUMNS if self.table is users else GROUP_COLUMNS).get(path)
        if promoted is not None:
            return _column(promoted, leaf)
        if path == "meta.resourceType":
            return _Operand(sa.literal(self.rt.name, sa.Text))
        if ref.schema == "" or ref.attr.multi_valued:
            raise _Unsupported(f"{path} cannot be filtered or sorted on")
        keys = [ref.schema] if ref.extension else []
        keys += [ref.attr.name] + ([ref.sub.name] if ref.sub else [])
        return self._json(self.table.c.data, keys, leaf)

    def _json(self, doc: sa.ColumnElement[Any], keys: Sequence[str], leaf: Attribute) -> _Operand:
        present = sql.json_present(self.dialect, doc, keys)
        if leaf.type == "boolean":
            return _Operand(sql.json_boolean(self.dialect, doc, keys), present=present)
        if leaf.type in ("integer", "decimal"):
            return _Operand(sql.json_number(self.dialect, doc, keys), present=present)
        if leaf.type == "dateTime":
            return _Operand(sql.json_micros(self.dialect, doc, keys), micros=True, present=present)
        return _Operand(sql.json_text(self.dialect, doc, keys), present=present)

    def _elements(self, ref: AttrRef, inner: Predicate | None) -> sa.ColumnElement[bool]:
        """Resources with an element of multi-valued `ref` satisfying `inner` (any element when None)."""
        core = not ref.extension
        if self.table is groups and core and ref.attr.name == "members":
            return self._group_members(inner)
        if self.table is users and core and ref.attr.name == "groups":
            return self._user_groups(inner)
        if self.table is users and ref.attr.type == "complex":
            return self._user_values(ref, inner)
        raise _Unsupported(f"{ref.full_path} cannot be filtered on")

    def _user_values(self, ref: AttrRef, inner: Predicate | None) -> sa.ColumnElement[bool]:
        v = user_values.c
        conditions = [v.attr == _value_row_key(ref)]
        if inner is not None:
            conditions.append(self.predicate(inner, self._user_value_operand))
        return users.c.pk.in_(sa.select(v.user_pk).where(*conditions))

    def _group_members(self, inner: Predicate | None) -> sa.ColumnElement[bool]:
        conditions = [live(self.now)]
        if inner is not None:
            conditions.append(self.predicate(inner, self._member_operand))
        return groups.c.pk.in_(sa.select(memberships.c.group_pk).where(*conditions))

    def _user_groups(self, inner: Predicate | None) -> sa.ColumnElement[bool]:
        group = groups.alias("member_of")
        conditions = [live(self.now)]
        if inner is not None:
            conditions.append(self.predicate(inner, functools.partial(self._group_operand, group)))
        joined = memberships.join(group, group.c.pk == memberships.c.group_pk)
        return users.c.id.in_(sa.select(memberships.c.member_id).select_from(joined).where(*conditions))

    def _user_value_operand(self, ref: AttrRef) -> _Operand:
        """A sub-attribute of a `user_values` element: a promoted column when it holds the value as compared,
        else the element's JSON."""
        assert ref.sub is not None
        sub, v = ref.sub, user_values.c
        if sub.name == "value" and sub.type in _TEXT:
            if sub.case_exact:
                return _Operand(v.value)
            return _Operand(v.value_ci, folded=True, codepoint=True, max_length=_VALUE_CI_LENGTH)
        if sub.name == "type" and sub.type == "string" and not sub.case_exact:
            return _Operand(v.type_ci, folded=True, codepoint=True)
        if sub.name == "primary" and sub.type == "boolean":
            return _Operand(v.is_primary)
        return self._json(v.element, [sub.name], sub)

    def _member_operand(self, ref: AttrRef) -> _Operand:
        """A sub-attribute of a Group's member: a live `memberships` row."""
        assert ref.sub is not None
        m = memberships.c
        if ref.sub.name == "value":
            return _Operand(m.member_id, codepoint=True)
        if ref.sub.name == "type":
            return _Operand(m.member_type)
        if ref.sub.name == "display":
            return _Operand(_member_display(), folded=True)
        raise _Unsupported(f"members.{ref.sub.name} cannot be filtered or sorted on")

    def _group_operand(self, group: sa.FromClause, ref: AttrRef) -> _Operand:
        """A sub-attribute of a User's group: the group row joined to a live membership."""
        assert ref.sub is not None
        if ref.sub.name == "value":
            return _Operand(group.c.id, codepoint=True)
        if ref.sub.name == "display":
            return _Operand(group.c.display_name_ci, folded=True, codepoint=True)
        if ref.sub.name == "type":  # scimjit keeps direct memberships only
            return _Operand(sa.literal("direct", sa.Text), folded=True)
        raise _Unsupported(f"groups.{ref.sub.name} cannot be filtered or sorted on")

    # ------------------------------------------------------------ sorting

    def sort_key(self, ref: AttrRef) -> sa.ColumnElement[Any]:
        attr = ref.attr
        if attr.multi_valued and attr.type == "complex":
            sub = ref.sub or attr.sub("value")
            if sub is None:
                raise _Unsupported(f"sortBy {attr.name} needs a sub-attribute: {attr.name} has no value")
            return self._first_element(AttrRef(ref.schema, attr, sub, ref.extension))
        if ref.leaf.type == "complex":
            raise _Unsupported(f"sortBy {ref.full_path} needs a sub-attribute, e.g. {ref.full_path}.x")
        if ref.full_path == "meta.version":
            return self.table.c.version
        return self._sortable(self._resource_operand(ref), ref.leaf)

    def _sortable(self, operand: _Operand, attr: Attribute) -> sa.ColumnElement[Any]:
        expr = operand.expr
        if attr.type not in _TEXT:
            return expr
        if not attr.case_exact and not operand.folded:
            expr = sa.func.lower(expr)
        return expr if operand.codepoint else sql.by_codepoint(self.dialect, expr)

    def _first_element(self, ref: AttrRef) -> sa.ColumnElement[Any]:
        """The sort value of a multi-valued attribute: its primary element, else its first (RFC 7644
        §3.4.2.3); members and groups have no primary and list in id / displayName order."""
        assert ref.sub is not None
        core = not ref.extension
        if self.table is groups and core and ref.attr.name == "members":
            value = self._sortable(self._member_operand(ref), ref.sub)
            stmt = sa.select(value).where(memberships.c.group_pk == groups.c.pk, live(self.now))
            return stmt.order_by(memberships.c.member_id).limit(1).scalar_subquery()
        if self.table is users and core and ref.attr.name == "groups":
            group = groups.alias("member_of")
            value = self._sortable(self._group_operand(group, ref), ref.sub)
            joined = memberships.join(group, group.c.pk == memberships.c.group_pk)
            stmt = (
                sa.select(value)
                .select_from(joined)
                .where(memberships.c.member_id == users.c.id, live(self.now))
            )
            return stmt.order_by(group.c.display_name, group.c.id).limit(1).scalar_subquery()
        if self.table is users:
            v = user_values.c
            value = self._sortable(self._user_value_operand(ref), ref.sub)
            stmt = sa.select(value).where(v.user_pk == users.c.pk, v.attr == _value_row_key(ref))
            primary_first = sa.case((v.is_primary.is_(True), 0), else_=1)
            return stmt.order_by(primary_first, v.position).limit(1).scalar_subquery()
        raise _Unsupported(f"sortBy {ref.full_path} is not supported")


# ---------------------------------------------------------------- columns


def _column(promoted: Promoted, attr: Attribute) -> _Operand:
    column = promoted.column
    return _Operand(column, folded=promoted.folded, codepoint=_is_key(column), micros=attr.type == "dateTime")


@functools.cache
def _is_key(column: sa.ColumnElement[Any]) -> bool:
    """Whether a column is a `tables.Key`: compared by code point on every dialect, so its index serves ranges."""
    pg_type = column.type.dialect_impl(postgresql.dialect())
    return getattr(pg_type, "collation", None) == "C"


def _value_row_key(ref: AttrRef) -> str:
    return value_row_attr(ref.schema if ref.extension else None, ref.attr.name)


def _member_display() -> sa.ColumnElement[str]:
    """A member's display as `store.groups` renders it: a user's displayName or else userName; a group's
    displayName (lower-cased, from the promoted columns)."""
    member_user, member_group = users.alias("member_user"), groups.alias("member_group")
    member_id = memberships.c.member_id
    user_display = sa.select(sa.func.coalesce(member_user.c.display_name_ci, member_user.c.user_name_ci))
    group_display = sa.select(member_group.c.display_name_ci)
    return sa.case(
        (
            memberships.c.member_type == "Group",
            group_display.where(member_group.c.id == member_id).scalar_subquery(),
        ),
        else_=user_display.where(member_user.c.id == member_id).scalar_subquery(),
    )


# ---------------------------------------------------------------- comparisons


def _is_present(expr: sa.ColumnElement[Any], attr: Attribute) -> sa.ColumnElement[bool]:
    if attr.type in _TEXT:
        return sa.and_(expr.is_not(None), expr != "")
    return expr.is_not(None)


def _starts_with(expr: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    """`expr sw prefix` as the code point range [prefix, successor): an index range scan on `Key` columns."""
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
