"""One filter, two callers of `store.compile`: a SCIM User attribute and an admin-view column holding the same
values must match the same rows, on SQLite and PostgreSQL, and the rows an independent reading of RFC 7644
§3.4.2.2 expects (absent and "" are unassigned, `not` is an exact complement, `%` `_` `*` `[` are literal,
case folds only where caseExact is false)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.scim.filter import parse_filter
from scimjit.scim.schema import Registry
from scimjit.store import admin, audit
from scimjit.store.db import Database
from scimjit.store.query import SearchParams, search
from scimjit.store.tables import accounts
from tests.seed import TEST_URN, insert_user
from tests.store.test_filter_sql import _plan

TEXTS: list[str | None] = [None, "", "abc", "ABC", "a%c", "a_c", "axc", "a*c", "a[c", "Émile", "b"]
DATES: list[str | None] = [None, "2020-01-01T00:00:00Z", "2021-06-01T12:00:00.125Z", "2022-03-04T05:06:07Z"]

# (SCIM User attribute, admin view, admin attribute, caseExact of both); the SCIM side covers a promoted
# folded column, a promoted Key column and the JSON document
TEXT_PAIRS = [
    ("displayName", "audit", "actor", False),
    ("title", "audit", "actor", False),
    ("externalId", "audit", "resourceId", True),
    (f"{TEST_URN}:nick", "audit", "resourceId", True),
]

Oracle = Callable[[Any, bool], bool]


def _unassigned(v: Any, case_exact: bool) -> bool:
    return v is None or v == ""


def _fold(v: str, case_exact: bool) -> str:
    return v if case_exact else v.lower()


def _eq(literal: str) -> Oracle:
    return lambda v, ce: not _unassigned(v, ce) and _fold(v, ce) == _fold(literal, ce)


def _text(test: Callable[[str, str], bool], literal: str) -> Oracle:
    return lambda v, ce: not _unassigned(v, ce) and test(_fold(v, ce), _fold(literal, ce))


TEXT_CASES: list[tuple[str, Oracle]] = [
    ("{a} eq null", _unassigned),
    ("{a} ne null", lambda v, ce: not _unassigned(v, ce)),
    ("{a} pr", lambda v, ce: not _unassigned(v, ce)),
    ("not ({a} pr)", _unassigned),
    ("not ({a} eq null)", lambda v, ce: not _unassigned(v, ce)),
    ('{a} eq "abc"', _eq("abc")),
    ('{a} ne "abc"', lambda v, ce: not _eq("abc")(v, ce)),  # absent is not equal
    ('not ({a} eq "abc")', lambda v, ce: not _eq("abc")(v, ce)),
    ('not ({a} ne "abc")', _eq("abc")),
    ('{a} eq "émile"', _eq("émile")),
    ('{a} eq ""', lambda v, ce: False),  # a stored "" is unassigned: it equals only null
    ('{a} ne ""', lambda v, ce: True),
    ('{a} co ""', lambda v, ce: not _unassigned(v, ce)),
    ('{a} sw "a%"', _text(str.startswith, "a%")),
    ('{a} sw "a_"', _text(str.startswith, "a_")),
    ('{a} co "%"', _text(str.__contains__, "%")),
    ('{a} co "_"', _text(str.__contains__, "_")),
    ('{a} ew "%c"', _text(str.endswith, "%c")),
    ('{a} co "*"', _text(str.__contains__, "*")),
    ('{a} co "["', _text(str.__contains__, "[")),
    ('{a} co "BC"', _text(str.__contains__, "BC")),
    ('{a} sw "A"', _text(str.startswith, "A")),
    ('{a} gt "a"', _text(str.__gt__, "a")),
    ('{a} le "abc"', _text(str.__le__, "abc")),
    ('not ({a} gt "a")', lambda v, ce: not _text(str.__gt__, "a")(v, ce)),
]


def _at(v: str) -> datetime:
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def _when(test: Callable[[datetime, datetime], bool], literal: str) -> Oracle:
    return lambda v, ce: v is not None and test(_at(v), _at(literal))


DATE_CASES: list[tuple[str, Oracle]] = [
    ("{a} eq null", _unassigned),
    ("{a} pr", lambda v, ce: v is not None),
    ('{a} gt "2021-01-01T00:00:00Z"', _when(datetime.__gt__, "2021-01-01T00:00:00Z")),
    ('{a} le "2021-06-01T12:00:00.125Z"', _when(datetime.__le__, "2021-06-01T12:00:00.125Z")),
    ('{a} eq "2021-06-01T14:00:00.125+02:00"', _when(datetime.__eq__, "2021-06-01T12:00:00.125Z")),
    (
        '{a} ne "2020-01-01T00:00:00Z"',
        lambda v, ce: not _when(datetime.__eq__, "2020-01-01T00:00:00Z")(v, ce),
    ),
    (
        'not ({a} lt "2022-01-01T00:00:00Z")',
        lambda v, ce: not _when(datetime.__lt__, "2022-01-01T00:00:00Z")(v, ce),
    ),
]


def _user_doc(i: int, attrs: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"userName": f"u{i}"}
    for path, value in attrs.items():
        if value is None:
            continue
        if path.startswith(TEST_URN):
            doc.setdefault(TEST_URN, {})[path.rsplit(":", 1)[1]] = value
        else:
            doc[path] = value
    return doc


@pytest.fixture
def texts(db: Database, reg: Registry) -> Database:
    """User u{i} and audit record u{i} hold TEXTS[i] in every attribute of TEXT_PAIRS."""
    with db.write() as conn:
        for i, v in enumerate(TEXTS):
            attrs = {scim_attr: v for scim_attr, *_ in TEXT_PAIRS}
            insert_user(conn, reg, _user_doc(i, attrs), user_id=f"u{i}")
            audit.record(
                conn,
                actor=v,
                action="test",
                outcome="success",
                resource_id=v,
                request_id=f"u{i}",
                at_micros=i,
            )
    return db


@pytest.fixture
def dates(db: Database, reg: Registry) -> Database:
    """User u{i} (`hired`) and account u{i} (`lastLoginAt`) hold DATES[i]."""
    with db.write() as conn:
        for i, v in enumerate(DATES):
            insert_user(conn, reg, _user_doc(i, {f"{TEST_URN}:hired": v}), user_id=f"u{i}")
            conn.execute(
                accounts.insert().values(
                    application="app",
                    user_id=f"u{i}",
                    status="active",
                    roles=[],
                    last_login_at=None if v is None else to_micros(_at(v)),
                    created_at=0,
                    updated_at=0,
                )
            )
    return db


def _scim_matches(db: Database, reg: Registry, text: str) -> set[str]:
    with db.read() as conn:
        page = search(conn, reg, reg.resource_type("User"), SearchParams(filter=text), 0)
    return {row.id for row in page.rows}


def _admin_matches(db: Database, view: str, text: str, key: str) -> set[str]:
    with db.read() as conn:
        page = admin.query(conn, admin.VIEWS[view], filter=text, count=1000)
    assert page.total == len(page.resources)
    return {doc[key] for doc in page.resources}


@pytest.mark.parametrize(("template", "oracle"), TEXT_CASES, ids=[t for t, _ in TEXT_CASES])
@pytest.mark.parametrize(("scim_attr", "view", "admin_attr", "case_exact"), TEXT_PAIRS)
def test_text_filters_agree(
    texts: Database,
    reg: Registry,
    template: str,
    oracle: Oracle,
    scim_attr: str,
    view: str,
    admin_attr: str,
    case_exact: bool,
) -> None:
    expected = {f"u{i}" for i, v in enumerate(TEXTS) if oracle(v, case_exact)}
    scim = _scim_matches(texts, reg, template.format(a=scim_attr))
    admin_rows = _admin_matches(texts, view, template.format(a=admin_attr), "requestId")
    assert scim == admin_rows == expected


@pytest.mark.parametrize(("template", "oracle"), DATE_CASES, ids=[t for t, _ in DATE_CASES])
def test_date_filters_agree(dates: Database, reg: Registry, template: str, oracle: Oracle) -> None:
    expected = {f"u{i}" for i, v in enumerate(DATES) if oracle(v, True)}
    scim = _scim_matches(dates, reg, template.format(a=f"{TEST_URN}:hired"))
    admin_rows = _admin_matches(dates, "accounts", template.format(a="lastLoginAt"), "userId")
    assert scim == admin_rows == expected


def test_admin_sorts_text_as_filters_compare(texts: Database) -> None:
    """sortBy on an admin view orders as `gt`/`lt` compare: folded, by code point, absent last."""
    with texts.read() as conn:
        page = admin.query(conn, admin.VIEWS["audit"], sort_by="actor", count=1000)
    actors = [doc.get("actor") for doc in page.resources]
    present = sorted((v.lower(), i, v) for i, v in enumerate(TEXTS) if v is not None)  # ties: by id
    assert actors == [v for *_, v in present] + [None]


ADMIN_INDEXED = [
    ("audit", 'action eq "scim.user.create"'),
    ("audit", 'at ge "2030-01-01T00:00:00Z"'),
    ("grants", 'userId eq "u1"'),
    ("requests", 'status eq "pending"'),
    ("outbox", 'status eq "dead"'),
]


@pytest.mark.parametrize(("view_name", "text"), ADMIN_INDEXED)
def test_admin_filters_use_indexes(db: Database, view_name: str, text: str) -> None:
    """The shared compiler keeps admin comparisons sargable: plain `column = ?` / ranges on indexed columns."""
    view = admin.VIEWS[view_name]
    registry = admin.admin_registry()
    predicate = parse_filter(registry, registry.resource_type(view.resource_type), text)
    where = admin.compile_filter(view, predicate, dialect=db.dialect)
    statements = [sa.select(sa.func.count()).select_from(view.table).where(where)]
    if " eq " in text:  # for a range, walking the key order under LIMIT is a fair plan too (SQLite picks it)
        statements.append(sa.select(view.table).where(where).order_by(view.table.c[view.key]).limit(100))
    with db.read() as conn:
        for stmt in statements:
            plan = _plan(conn, stmt)
            if db.is_sqlite:
                assert f"SCAN {view.table.name}" not in plan, plan
                assert f"SEARCH {view.table.name} USING" in plan, plan
            else:
                assert "Seq Scan" not in plan, plan
                assert "Index" in plan, plan
