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

Operator semantics (null, `pr`, `ne`, `not`, case, escaping) are `store.compile`'s, shared with the admin
views. Two more belong to where Users keep their data:

* multi-valued attributes match when some element matches: `emails.value ne "x"` means "has an email that is
  not x". A multi-valued attribute is present when it has an element.
* element values are stored lower-cased up to 512 characters (`user_values.value_ci`); longer values compare on
  that prefix.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from scimjit.scim.errors import invalid_filter, invalid_value
from scimjit.scim.predicate import Compare, Predicate
from scimjit.scim.schema import Attribute, AttrRef, ResourceType
from scimjit.store import dialect as sql
from scimjit.store.compile import TEXT, Operand, Unsupported, Where, compare, compile_predicate, sortable
from scimjit.store.memberships import live
from scimjit.store.promoted import GROUP_COLUMNS, USER_COLUMNS, Promoted, value_row_attr
from scimjit.store.tables import groups, memberships, user_values, users

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
        return compile_predicate(predicate, _ResourceColumns(rt, now_micros, dialect), dialect)
    except Unsupported as exc:
        raise invalid_filter(str(exc)) from None


def sort_key(ref: AttrRef, rt: ResourceType, *, now_micros: int, dialect: str) -> sa.ColumnElement[Any]:
    """What `sortBy=ref` orders by (RFC 7644 §3.4.2.3): lower-cased unless caseExact, by code point; for a
    multi-valued attribute, its primary element's value or else the first. NULL when there is none.
    400 `invalidValue` for what cannot be sorted on (a complex attribute itself, `schemas`, `meta.location`)."""
    try:
        return _ResourceColumns(rt, now_micros, dialect).sort_key(ref)
    except Unsupported as exc:
        raise invalid_value(str(exc)) from None


class _ResourceColumns:
    """`store.compile.Columns` for Users and Groups (where each attribute lives), and their sort keys."""

    def __init__(self, rt: ResourceType, now_micros: int, dialect: str) -> None:
        self.rt = rt
        self.table = table_of(rt)
        self.now = now_micros
        self.dialect = dialect

    # ------------------------------------------------------------ store.compile.Columns

    def condition(self, compare: Compare) -> sa.ColumnElement[bool] | None:
        ref = compare.ref
        if ref.schema == "" and ref.attr.name == "schemas":
            return self._schemas(compare)
        if ref.full_path == "meta.version":
            return self._version(compare)
        return None

    def _schemas(self, compare: Compare) -> sa.ColumnElement[bool]:
        """`schemas` holds the core schema and each extension the resource has data for (as rendered)."""
        if compare.op == "pr":
            return sa.true()
        if compare.op not in ("eq", "ne"):
            raise Unsupported("schemas can be compared with eq, ne and pr only")
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
            raise Unsupported("meta.version can be compared with eq, ne and pr only")
        match = _VERSION.fullmatch(compare.value or "")
        equal = self.table.c.version == int(match.group(1)) if match else sa.false()
        return equal if compare.op == "eq" else sa.not_(equal)

    # ------------------------------------------------------------ where attributes live

    def operand(self, ref: AttrRef) -> Operand:
        """A resource-level attribute: a promoted column, or the JSON document."""
        path, leaf = ref.full_path, ref.leaf
        promoted = (USER_COLUMNS if self.table is users else GROUP_COLUMNS).get(path)
        if promoted is not None:
            return _column(promoted, leaf)
        if path == "meta.resourceType":
            return Operand(sa.literal(self.rt.name, sa.Text))
        if ref.schema == "" or ref.attr.multi_valued:
            raise Unsupported(f"{path} cannot be filtered or sorted on")
        keys = [ref.schema] if ref.extension else []
        keys += [ref.attr.name] + ([ref.sub.name] if ref.sub else [])
        return self._json(self.table.c.data, keys, leaf)

    def _json(self, doc: sa.ColumnElement[Any], keys: Sequence[str], leaf: Attribute) -> Operand:
        present = sql.json_present(self.dialect, doc, keys)
        if leaf.type == "boolean":
            return Operand(sql.json_boolean(self.dialect, doc, keys), present=present)
        if leaf.type in ("integer", "decimal"):
            return Operand(sql.json_number(self.dialect, doc, keys), present=present)
        if leaf.type == "dateTime":
            return Operand(sql.json_micros(self.dialect, doc, keys), micros=True, present=present)
        return Operand(sql.json_text(self.dialect, doc, keys), present=present)

    def elements(self, ref: AttrRef, inner: Predicate | None, where: Where) -> sa.ColumnElement[bool]:
        """Resources with an element of multi-valued `ref` satisfying `inner` (any element when None)."""
        core = not ref.extension
        if self.table is groups and core and ref.attr.name == "members":
            return self._group_members(inner, where)
        if self.table is users and core and ref.attr.name == "groups":
            return self._user_groups(inner, where)
        if self.table is users and ref.attr.type == "complex":
            return self._user_values(ref, inner, where)
        raise Unsupported(f"{ref.full_path} cannot be filtered on")

    def _user_values(self, ref: AttrRef, inner: Predicate | None, where: Where) -> sa.ColumnElement[bool]:
        v = user_values.c
        conditions = [v.attr == _value_row_key(ref)]
        if inner is not None:
            conditions.append(where(inner, self._user_value_operand))
        return users.c.pk.in_(sa.select(v.user_pk).where(*conditions))

    def _group_members(self, inner: Predicate | None, where: Where) -> sa.ColumnElement[bool]:
        if isinstance(inner, Compare) and _by_display(inner):
            return self._members_by_display(inner)
        conditions = [live(self.now)]
        if inner is not None:
            conditions.append(where(inner, self._member_operand))
        return groups.c.pk.in_(sa.select(memberships.c.group_pk).where(*conditions))

    def _members_by_display(self, node: Compare) -> sa.ColumnElement[bool]:
        """`members.display op "x"` walking the members first: the users (and groups) whose display matches,
        then their live memberships through `ix_memberships_member_id_group_pk`. The general form tests a
        rendered display per membership row, two lookups for each of them: a substring filter then scans
        every membership (500k rows: seconds per term). Same semantics as `_member_display`."""
        m = memberships.c
        member_user, member_group = users.alias("member_user"), groups.alias("member_group")
        user_display = sa.func.coalesce(member_user.c.display_name_ci, member_user.c.user_name_ci)
        matching_users = sa.select(member_user.c.id).where(
            compare(Operand(user_display, folded=True), node, self.dialect)
        )
        matching_groups = sa.select(member_group.c.id).where(
            compare(Operand(member_group.c.display_name_ci, folded=True), node, self.dialect)
        )
        return sa.or_(
            groups.c.pk.in_(
                sa.select(m.group_pk).where(
                    m.member_type != "Group", m.member_id.in_(matching_users), live(self.now)
                )
            ),
            groups.c.pk.in_(
                sa.select(m.group_pk).where(
                    m.member_type == "Group", m.member_id.in_(matching_groups), live(self.now)
                )
            ),
        )

    def _user_groups(self, inner: Predicate | None, where: Where) -> sa.ColumnElement[bool]:
        group = groups.alias("member_of")
        conditions = [live(self.now)]
        if inner is not None:
            conditions.append(where(inner, functools.partial(self._group_operand, group)))
        joined = memberships.join(group, group.c.pk == memberships.c.group_pk)
        return users.c.id.in_(sa.select(memberships.c.member_id).select_from(joined).where(*conditions))

    def _user_value_operand(self, ref: AttrRef) -> Operand:
        """A sub-attribute of a `user_values` element: a promoted column when it holds the value as compared,
        else the element's JSON."""
        assert ref.sub is not None
        sub, v = ref.sub, user_values.c
        if sub.name == "value" and sub.type in TEXT:
            if sub.case_exact:
                return Operand(v.value)
            return Operand(v.value_ci, folded=True, codepoint=True, max_length=_VALUE_CI_LENGTH)
        if sub.name == "type" and sub.type == "string" and not sub.case_exact:
            return Operand(v.type_ci, folded=True, codepoint=True)
        if sub.name == "primary" and sub.type == "boolean":
            return Operand(v.is_primary)
        return self._json(v.element, [sub.name], sub)

    def _member_operand(self, ref: AttrRef) -> Operand:
        """A sub-attribute of a Group's member: a live `memberships` row."""
        assert ref.sub is not None
        m = memberships.c
        if ref.sub.name == "value":
            return Operand(m.member_id, codepoint=True)
        if ref.sub.name == "type":
            return Operand(m.member_type)
        if ref.sub.name == "display":
            return Operand(_member_display(), folded=True)
        raise Unsupported(f"members.{ref.sub.name} cannot be filtered or sorted on")

    def _group_operand(self, group: sa.FromClause, ref: AttrRef) -> Operand:
        """A sub-attribute of a User's group: the group row joined to a live membership."""
        assert ref.sub is not None
        if ref.sub.name == "value":
            return Operand(group.c.id, codepoint=True)
        if ref.sub.name == "display":
            return Operand(group.c.display_name_ci, folded=True, codepoint=True)
        if ref.sub.name == "type":  # scimjit keeps direct memberships only
            return Operand(sa.literal("direct", sa.Text), folded=True)
        raise Unsupported(f"groups.{ref.sub.name} cannot be filtered or sorted on")

    # ------------------------------------------------------------ sorting

    def sort_key(self, ref: AttrRef) -> sa.ColumnElement[Any]:
        attr = ref.attr
        if attr.multi_valued and attr.type == "complex":
            sub = ref.sub or attr.sub("value")
            if sub is None:
                raise Unsupported(f"sortBy {attr.name} needs a sub-attribute: {attr.name} has no value")
            return self._first_element(AttrRef(ref.schema, attr, sub, ref.extension))
        if ref.leaf.type == "complex":
            raise Unsupported(f"sortBy {ref.full_path} needs a sub-attribute, e.g. {ref.full_path}.x")
        if ref.full_path == "meta.version":
            return self.table.c.version
        return sortable(self.operand(ref), ref.leaf, self.dialect)

    def _first_element(self, ref: AttrRef) -> sa.ColumnElement[Any]:
        """The sort value of a multi-valued attribute: its primary element, else its first (RFC 7644
        §3.4.2.3); members and groups have no primary and list in id / displayName order."""
        assert ref.sub is not None
        core = not ref.extension
        if self.table is groups and core and ref.attr.name == "members":
            value = sortable(self._member_operand(ref), ref.sub, self.dialect)
            stmt = sa.select(value).where(memberships.c.group_pk == groups.c.pk, live(self.now))
            return stmt.order_by(memberships.c.member_id).limit(1).scalar_subquery()
        if self.table is users and core and ref.attr.name == "groups":
            group = groups.alias("member_of")
            value = sortable(self._group_operand(group, ref), ref.sub, self.dialect)
            joined = memberships.join(group, group.c.pk == memberships.c.group_pk)
            stmt = (
                sa.select(value)
                .select_from(joined)
                .where(memberships.c.member_id == users.c.id, live(self.now))
            )
            return stmt.order_by(group.c.display_name, group.c.id).limit(1).scalar_subquery()
        if self.table is users:
            v = user_values.c
            value = sortable(self._user_value_operand(ref), ref.sub, self.dialect)
            stmt = sa.select(value).where(v.user_pk == users.c.pk, v.attr == _value_row_key(ref))
            primary_first = sa.case((v.is_primary.is_(True), 0), else_=1)
            return stmt.order_by(primary_first, v.position).limit(1).scalar_subquery()
        raise Unsupported(f"sortBy {ref.full_path} is not supported")


# ---------------------------------------------------------------- columns


def _column(promoted: Promoted, attr: Attribute) -> Operand:
    column = promoted.column
    return Operand(
        column,
        folded=promoted.folded,
        codepoint=_is_key(column),
        micros=attr.type == "dateTime",
        identifier=promoted.identifier,
    )


@functools.cache
def _is_key(column: sa.ColumnElement[Any]) -> bool:
    """Whether a column is a `tables.Key`: compared by code point on every dialect, so its index serves ranges."""
    pg_type = column.type.dialect_impl(postgresql.dialect())
    return getattr(pg_type, "collation", None) == "C"


def _value_row_key(ref: AttrRef) -> str:
    return value_row_attr(ref.schema if ref.extension else None, ref.attr.name)


def _by_display(node: Compare) -> bool:
    """Whether a member condition is a comparison of `display` with a value, which holds only for members
    that exist (`ne`, `pr` and null tests also hold for a membership whose member is gone, so they keep the
    general form)."""
    sub = node.ref.sub
    return (
        sub is not None and sub.name == "display" and node.op not in ("ne", "pr") and node.value is not None
    )


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
