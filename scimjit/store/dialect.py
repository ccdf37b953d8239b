"""SQL expressions whose spelling differs between SQLite and PostgreSQL, for filters and sorting.

JSON extraction, pattern matching and code point ordering live here and nowhere else; `store.filters` and
`store.query` are written once over these. JSON paths are built from attribute names the schema registry
knows (never from request text) and are still sent as bound parameters, like every value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

POSTGRESQL = "postgresql"

_LIKE_SPECIAL = re.compile(r"([\\%_])")
_GLOB_SPECIAL = re.compile(r"([*?\[])")
_PATTERNS = {"co": "{w}{v}{w}", "sw": "{v}{w}", "ew": "{w}{v}"}


def _sqlite_path(keys: Sequence[str]) -> sa.BindParameter[str]:
    return sa.literal("$" + "".join(f'."{key}"' for key in keys), sa.Text)


def _pg_path(keys: Sequence[str]) -> sa.BindParameter[list[str]]:
    return sa.literal(list(keys), ARRAY(sa.Text))


def _pg_node(doc: sa.ColumnElement[Any], keys: Sequence[str]) -> sa.ColumnElement[Any]:
    return doc.op("#>", return_type=JSONB)(_pg_path(keys))


def _pg_text(doc: sa.ColumnElement[Any], keys: Sequence[str]) -> sa.ColumnElement[str]:
    return doc.op("#>>", return_type=sa.Text)(_pg_path(keys))


def _sqlite_type(doc: sa.ColumnElement[Any], keys: Sequence[str]) -> sa.ColumnElement[str]:
    return sa.func.json_type(doc, _sqlite_path(keys), type_=sa.Text)


def _sqlite_value(doc: sa.ColumnElement[Any], keys: Sequence[str], type_: Any) -> sa.ColumnElement[Any]:
    return sa.func.json_extract(doc, _sqlite_path(keys), type_=type_)


def json_text(dialect: str, doc: sa.ColumnElement[Any], keys: Sequence[str]) -> sa.ColumnElement[str]:
    """The value at `keys` in the JSON document `doc` as text (strings unquoted); NULL when absent."""
    if dialect == POSTGRESQL:
        return _pg_text(doc, keys)
    return _sqlite_value(doc, keys, sa.Text)


def json_number(dialect: str, doc: sa.ColumnElement[Any], keys: Sequence[str]) -> sa.ColumnElement[float]:
    """The number at `keys`; NULL when absent or not a number (so a stray string never breaks a cast)."""
    if dialect == POSTGRESQL:
        is_number = sa.func.jsonb_typeof(_pg_node(doc, keys)) == "number"
        return sa.case((is_number, sa.cast(_pg_text(doc, keys), sa.Float)))
    is_number = _sqlite_type(doc, keys).in_(("integer", "real"))
    return sa.case((is_number, _sqlite_value(doc, keys, sa.Float)))


def json_boolean(dialect: str, doc: sa.ColumnElement[Any], keys: Sequence[str]) -> sa.ColumnElement[bool]:
    """The boolean at `keys`; NULL when absent or not a boolean."""
    if dialect == POSTGRESQL:
        is_boolean = sa.func.jsonb_typeof(_pg_node(doc, keys)) == "boolean"
        return sa.case((is_boolean, sa.cast(_pg_text(doc, keys), sa.Boolean)))
    json_type = _sqlite_type(doc, keys)
    return sa.case((json_type == "true", sa.true()), (json_type == "false", sa.false()), else_=sa.null())


def json_micros(dialect: str, doc: sa.ColumnElement[Any], keys: Sequence[str]) -> sa.ColumnElement[int]:
    """The RFC 3339 date-time at `keys` as epoch microseconds (SQLite's date functions stop at milliseconds);
    NULL when absent or not a date-time. Stored date-times were validated on write."""
    text = json_text(dialect, doc, keys)
    if dialect == POSTGRESQL:
        looks_right = text.regexp_match(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d")
        epoch = sa.extract("epoch", sa.cast(text, sa.TIMESTAMP(timezone=True)))
        return sa.case((looks_right, sa.cast(epoch * 1_000_000, sa.BigInteger)))
    millis = sa.func.round((sa.func.julianday(text) - 2440587.5) * 86_400_000)
    return sa.cast(millis, sa.BigInteger) * 1000


def json_present(dialect: str, doc: sa.ColumnElement[Any], keys: Sequence[str]) -> sa.ColumnElement[bool]:
    """Whether `keys` holds a value that is not null, "", {} or [] (RFC 7643 §2.5: those are unassigned)."""
    if dialect == POSTGRESQL:
        empty = [sa.cast(sa.literal(text), JSONB) for text in ("null", '""', "{}", "[]")]
        return sa.func.coalesce(_pg_node(doc, keys), empty[0]).not_in(empty)
    json_type = sa.func.coalesce(_sqlite_type(doc, keys), "null")  # never NULL, so `not present` is exact
    value = _sqlite_value(doc, keys, sa.Text)
    return sa.or_(
        json_type.in_(("integer", "real", "true", "false")),
        sa.and_(json_type == "text", value != ""),
        sa.and_(json_type == "object", value != "{}"),
        sa.and_(json_type == "array", value != "[]"),
    )


def matches(dialect: str, expr: sa.ColumnElement[str], op: str, value: str) -> sa.ColumnElement[bool]:
    """`co` / `sw` / `ew` as a case-sensitive pattern, with the value's wildcard characters escaped.

    Case-sensitive on purpose: caseExact=false attributes are compared folded on both sides. SQLite's LIKE
    ignores ASCII case, so SQLite uses GLOB; PostgreSQL uses LIKE with `\\` as the escape character.
    """
    if dialect == POSTGRESQL:
        pattern = _PATTERNS[op].format(w="%", v=_LIKE_SPECIAL.sub(r"\\\1", value))
        return expr.like(pattern, escape="\\")
    pattern = _PATTERNS[op].format(w="*", v=_GLOB_SPECIAL.sub(r"[\1]", value))
    return expr.op("GLOB", is_comparison=True)(pattern)


def by_codepoint(dialect: str, expr: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """`expr` ordered by code point: SQLite's BINARY collation already is; PostgreSQL needs COLLATE "C"."""
    return expr.collate("C") if dialect == POSTGRESQL else expr


def in_list(dialect: str, column: sa.ColumnElement[str], name: str) -> sa.ColumnElement[bool]:
    """`column` is one of the strings of the list bound as `name`, with ONE parameter whatever the list's
    length, so a statement compiled once (`store.prepared.Prepared`) serves every page and every member add
    (an expanding `IN` is compiled again for each length). The list goes as JSON text on both, which orjson
    encodes in C: SQLite `IN (SELECT value FROM json_each(:name))`; PostgreSQL `= ANY(ARRAY(SELECT
    json_array_elements_text(:name)))`, an InitPlan whose array the index scan takes as `= ANY($0)`. Sent as
    `text[]`, psycopg's array dumper (a Python loop per element) cost 112 µs of client CPU for a page's 100
    ids against 16 µs as JSON (issue 13). Both use the column's index."""
    if dialect == POSTGRESQL:
        elements = sa.select(sa.func.json_array_elements_text(sa.bindparam(name, type_=sa.JSON)))
        return column == sa.any_(sa.func.array(elements.scalar_subquery()))
    listed = sa.select(sa.column("value", sa.Text)).select_from(
        sa.func.json_each(sa.bindparam(name, type_=sa.JSON))
    )
    return column.in_(listed.scalar_subquery())
