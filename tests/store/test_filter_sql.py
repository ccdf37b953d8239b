"""Filters compiled to SQL and run on SQLite and PostgreSQL: every operator on every kind of storage, same-element
semantics, membership liveness, absent values, and index use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from scimjit.clock import to_micros
from scimjit.scim.errors import ScimError
from scimjit.scim.filter import parse_filter
from scimjit.scim.schema import Registry
from scimjit.store.compile import prefix_successor
from scimjit.store.db import Database
from scimjit.store.filters import compile_filter, table_of
from scimjit.store.query import SearchParams, search
from scimjit.store.tables import groups as groups_table
from tests.seed import TEST_URN, add_member, insert_group, insert_user

E = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
T = TEST_URN
JIT = "urn:scimjit:params:scim:schemas:extension:jit:2.0:Group"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
EXPIRED = datetime(2024, 12, 1, tzinfo=UTC)
LATER = datetime(2025, 6, 1, tzinfo=UTC)

BJENSEN = {
    "userName": "bjensen",
    "externalId": "EXT-1",
    "name": {"familyName": "Jensen", "givenName": "Barbara"},
    "displayName": "Babs Jensen",
    "title": "Tour Guide",
    "userType": "Employee",
    "emails": [
        {"value": "bjensen@example.com", "type": "work", "primary": True},
        {"value": "babs@jensen.org", "type": "home"},
    ],
    "ims": [{"value": "babs@foo.com", "type": "xmpp"}],
    E: {
        "employeeNumber": "701984",
        "department": "Tour Operations",
        "manager": {"value": "MGR-1", "displayName": "John Smith"},
    },
    T: {
        "level": 3,
        "score": 2.5,
        "hired": "2015-03-01T09:00:00Z",
        "vip": True,
        "badge": "AAEC",
        "nick": "Babs",
        "tags": ["a"],
        "pet": {"name": "Rex"},
        "devices": [{"value": "Phone", "type": "mobile", "serial": "SN-1", "primary": True}],
    },
}
JSMITH = {
    "userName": "JSmith",
    "externalId": "ext-1",
    "name": {"familyName": "Smith", "givenName": "John"},
    "title": "Intern",
    "userType": "Intern",
    "active": False,
    "emails": [  # the work address is not @example, the home one is: `emails[type eq "work" and ...]` must miss
        {"value": "john@home.org", "type": "work"},
        {"value": "john@example.com", "type": "home"},
    ],
    T: {"level": 10, "score": -1, "hired": "2021-07-01T12:00:00+02:00", "vip": False, "nick": "babs"},
}
ZOFIA = {
    "userName": "ŽoFia",
    "name": {"familyName": "Åberg"},
    "displayName": "Žofia",
    "title": "",
    "emails": [{"value": "zofia@EXAMPLE.com", "type": "Work"}],
}
WILD = {"userName": "wild%_*?[card]", "title": "100% [real]_*?"}
NOBODY = {"userName": "nobody"}
NAMES = {"bjensen": "B", "JSmith": "J", "ŽoFia": "Z", "wild%_*?[card]": "W", "nobody": "N"}


def seed(db: Database, reg: Registry) -> Database:
    """Five users (BJENSEN .. NOBODY) and four groups, with live and expired memberships."""
    with db.write() as conn:
        b = insert_user(
            conn, reg, BJENSEN, user_id="id-b", modified=datetime(2024, 6, 1, tzinfo=UTC), version=3
        )
        j = insert_user(conn, reg, JSMITH, user_id="id-j", created=datetime(2024, 2, 1, tzinfo=UTC))
        insert_user(conn, reg, ZOFIA, user_id="id-z", created=datetime(2024, 3, 1, tzinfo=UTC))
        insert_user(conn, reg, WILD, user_id="id-w", created=datetime(2024, 4, 1, tzinfo=UTC))
        insert_user(conn, reg, NOBODY, user_id="id-n", created=datetime(2024, 5, 1, tzinfo=UTC))
        admins = insert_group(conn, {"displayName": "Admins"}, group_id="g-admins")
        guides = insert_group(conn, {"displayName": "Tour Guides"}, group_id="g-guides")
        insert_group(
            conn,
            {"displayName": "Nested", "externalId": "G-EXT", JIT: {"membershipTTL": 3600}},
            group_id="g-nested",
        )
        insert_group(conn, {"displayName": "Empty"}, group_id="g-empty")
        add_member(conn, admins.pk, b.id)
        add_member(conn, admins.pk, j.id, source="grant:1", expires=EXPIRED)
        add_member(conn, admins.pk, "g-nested", member_type="Group")
        add_member(conn, guides.pk, j.id, source="grant:2", expires=LATER)
        add_member(conn, guides.pk, b.id, source="grant:3", expires=EXPIRED)
    return db


def matching(db: Database, reg: Registry, rt: str, text: str) -> set[str]:
    with db.read() as conn:
        page = search(conn, reg, reg.resource_type(rt), SearchParams(filter=text), to_micros(NOW))
    assert page.total == len(page.rows)
    if rt == "User":
        return {NAMES[row.data["userName"]] for row in page.rows}
    return {row.display_name for row in page.rows}


USER_CASES = [
    # promoted columns
    ('userName eq "BJENSEN"', "B"),
    ('userName ne "bjensen"', "JZWN"),
    ('userName co "SMI"', "J"),
    ('userName sw "j"', "J"),
    ('userName ew "FIA"', "Z"),
    ('userName sw "Ž"', "Z"),
    ('userName gt "n"', "NWZ"),
    ('userName ge "nobody"', "NWZ"),
    ('userName lt "c"', "B"),
    ('userName le "bjensen"', "B"),
    ('userName co "%"', "W"),
    ('userName co "_"', "W"),
    ('userName co "*"', "W"),
    ('userName co "?"', "W"),
    ('userName co "[card]"', "W"),
    ('userName sw "wild%_"', "W"),
    ('userName ew "]"', "W"),
    ('userName sw ""', "BJZWN"),
    ('externalId eq "EXT-1"', "B"),
    ('externalId eq "ext-1"', "J"),
    ('externalId sw "EXT"', "B"),
    ('externalId co "xt"', "J"),
    ("externalId pr", "BJ"),
    ("externalId eq null", "ZWN"),
    ('displayName eq "babs JENSEN"', "B"),
    ("displayName pr", "BZ"),
    ('name.familyName sw "å"', "Z"),
    ('name.familyName gt "k"', "JZ"),
    ('name.givenName eq "JOHN"', "J"),
    ('id eq "id-z"', "Z"),
    ('id sw "id-"', "BJZWN"),
    ("active eq true", "BZWN"),
    ("active eq false", "J"),
    ("active ne true", "J"),
    ('meta.created gt "2024-02-15T00:00:00Z"', "ZWN"),
    ('meta.created le "2024-02-01T00:00:00Z"', "BJ"),
    ('meta.created eq "2024-01-01T01:00:00+01:00"', "B"),
    ('meta.lastModified gt "2024-05-15T00:00:00Z"', "B"),
    ('meta.lastModified lt "2024-02-01T00:00:00.000001Z"', "J"),
    ('meta.resourceType eq "User"', "BJZWN"),
    ('meta.resourceType eq "Group"', ""),
    ('meta.version eq "W/\\"3\\""', "B"),
    ('meta.version eq "3"', "B"),
    ('meta.version ne "W/\\"3\\""', "JZWN"),
    ('meta.version eq "three"', ""),
    (f'schemas eq "{E}"', "B"),
    (f'schemas ne "{E}"', "JZWN"),
    ('schemas eq "urn:ietf:params:scim:schemas:core:2.0:User"', "BJZWN"),
    ('schemas eq "urn:example:nope"', ""),
    ("schemas pr", "BJZWN"),
    # JSON, core attributes
    ('title eq "tour guide"', "B"),
    ('title co "OUR"', "B"),
    ('title sw "in"', "J"),
    ('title ew "E"', "B"),
    ('title gt "j"', "B"),
    ('title co "%"', "W"),
    ('title co "_*?"', "W"),
    ('title co "[real]"', "W"),
    ("title pr", "BJW"),
    ("title eq null", "ZN"),
    ("title ne null", "BJW"),
    ('title ne "intern"', "BZWN"),
    ('not (title eq "intern")', "BZWN"),
    ('not (title gt "j")', "JZWN"),
    ("profileUrl pr", ""),
    ("name pr", "BJZ"),
    ('name[givenName eq "John" and familyName eq "smith"]', "J"),
    # logic
    ('userType eq "Employee" and title pr', "B"),
    ('title pr or userType eq "Intern" and active eq true', "BJW"),
    ('(title pr or userType eq "Intern") and active eq true', "BW"),
    ('not (title pr or userType eq "Intern") and active eq true', "ZN"),
    # JSON, extension attributes by full URN
    (f'{E}:employeeNumber eq "701984"', "B"),
    (f'{E}:manager.value eq "MGR-1"', "B"),
    (f'{E}:manager.value eq "mgr-1"', ""),
    (f'{E}:manager.displayName eq "john SMITH"', "B"),
    (f'{E}:department sw "tour"', "B"),
    (f"not ({E}:employeeNumber pr)", "JZWN"),
    # JSON, every type
    (f"{T}:level gt 5", "J"),
    (f"{T}:level le 3", "B"),
    (f"{T}:level eq 3", "B"),
    (f"{T}:level ne 3", "JZWN"),
    (f"{T}:level pr", "BJ"),
    (f"{T}:score ge 2.5", "B"),
    (f"{T}:score lt 0", "J"),
    (f'{T}:hired gt "2018-01-01T00:00:00Z"', "J"),
    (f'{T}:hired lt "2018-01-01T00:00:00+05:00"', "B"),
    (f'{T}:hired eq "2021-07-01T10:00:00Z"', "J"),
    (f"{T}:vip eq true", "B"),
    (f"{T}:vip eq false", "J"),
    (f"{T}:vip ne true", "JZWN"),
    (f'{T}:badge eq "AAEC"', "B"),
    (f'{T}:badge eq "aaec"', ""),
    (f'{T}:nick eq "babs"', "J"),
    (f'{T}:nick eq "Babs"', "B"),
    (f'{T}:nick sw "B"', "B"),
    (f'{T}:nick gt "C"', "J"),
    (f'{T}:pet.name eq "REX"', "B"),
    (f"{T}:pet pr", "B"),
    # multi-valued attributes in user_values: one element satisfies all of [...]
    ('emails.value eq "BJENSEN@example.com"', "B"),
    ('emails co "@example"', "BJZ"),
    ('emails[type eq "work" and value co "@example"]', "BZ"),
    ('emails[type eq "work"].value co "@example"', "BZ"),
    ('emails.type eq "work" and emails.value co "@home"', "J"),
    ('emails[type eq "work" and value co "@home"]', "J"),
    ("emails pr", "BJZ"),
    ("emails eq null", "WN"),
    ("not (emails pr)", "WN"),
    ("emails.primary eq true", "B"),
    ('emails[not (type eq "work")]', "BJ"),
    ('emails.value sw "JOHN@"', "J"),
    ('emails.value ew ".ORG"', "BJ"),
    ('emails.value gt "y"', "Z"),
    ('emails.value ne "john@home.org"', "BJZ"),
    ('ims[type eq "xmpp" and value co "@foo.com"]', "B"),
    (
        'emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]',
        "BZ",
    ),
    (f'{T}:devices[serial eq "SN-1"]', "B"),
    (f'{T}:devices[serial eq "sn-1"]', ""),
    (f'{T}:devices.value eq "PHONE"', "B"),
    (f'{T}:devices[type eq "MOBILE" and primary eq true]', "B"),
    # groups of a user: live memberships only
    ('groups.value eq "g-admins"', "B"),
    ('groups.display eq "TOUR GUIDES"', "J"),
    ('groups[display sw "tour" and type eq "direct"]', "J"),
    ("groups pr", "BJ"),
    ("not (groups pr)", "ZWN"),
]


@pytest.mark.parametrize(("text", "expected"), USER_CASES)
def test_user_filters(seeded: Database, reg: Registry, text: str, expected: str) -> None:
    assert matching(seeded, reg, "User", text) == set(expected)


GROUP_CASES = [
    ('displayName eq "admins"', {"Admins"}),
    ('displayName sw "TOUR"', {"Tour Guides"}),
    ('displayName co " "', {"Tour Guides"}),
    ('displayName gt "m"', {"Nested", "Tour Guides"}),
    ('members.value eq "id-b"', {"Admins"}),  # the Tour Guides membership expired
    ('members.value eq "id-j"', {"Tour Guides"}),  # the Admins one expired, the Tour Guides one has not yet
    ('members[type eq "group"]', {"Admins"}),
    ('members[value eq "id-j" and type eq "User"]', {"Tour Guides"}),
    ('members.display eq "babs jensen"', {"Admins"}),
    ('members.display eq "JSMITH"', {"Tour Guides"}),  # no displayName: userName
    ('members.display eq "nested"', {"Admins"}),
    ('members.display co "JENSEN"', {"Admins"}),  # bjensen's Tour Guides membership expired
    ('members.display sw "js"', {"Tour Guides"}),
    ('members.display ew "sted"', {"Admins"}),  # a group member: its displayName
    ('members.display co "s" and not (members.display co "jensen")', {"Tour Guides"}),
    ('members[display co "jensen" and type eq "User"]', {"Admins"}),
    ('members.display ne "babs jensen"', {"Admins", "Tour Guides"}),
    ('members.value sw "g-"', {"Admins"}),
    ("members pr", {"Admins", "Tour Guides"}),
    ("members eq null", {"Nested", "Empty"}),
    ("not (members pr)", {"Nested", "Empty"}),
    ('externalId eq "G-EXT"', {"Nested"}),
    (f"{JIT}:membershipTTL gt 60", {"Nested"}),
    (f"{JIT}:membershipTTL pr", {"Nested"}),
    ('meta.resourceType eq "Group"', {"Admins", "Tour Guides", "Nested", "Empty"}),
    ('id eq "g-empty" or displayName eq "nested"', {"Nested", "Empty"}),
]


@pytest.mark.parametrize(("text", "expected"), GROUP_CASES)
def test_group_filters(seeded: Database, reg: Registry, text: str, expected: set[str]) -> None:
    assert matching(seeded, reg, "Group", text) == expected


def test_membership_expiry_is_exact(seeded: Database, reg: Registry) -> None:
    """A grant's membership stops matching at its expiry instant, whether or not the sweeper ran."""
    group = reg.resource_type("Group")
    with seeded.read() as conn:
        for now, expected in [(LATER, 0), (to_micros(LATER) - 1, 1)]:
            micros = now if isinstance(now, int) else to_micros(now)
            page = search(conn, reg, group, SearchParams(filter='members.value eq "id-j"'), micros)
            assert page.total == expected


@pytest.mark.parametrize(
    ("rt", "text", "detail"),
    [
        ("User", 'meta.location eq "x"', "meta.location"),
        ("User", "groups.$ref pr", "groups.$ref"),
        ("Group", "members.$ref pr", "members.$ref"),
        ("User", f'{T}:tags eq "a"', "tags"),
        ("User", 'meta.version gt "1"', "meta.version"),
        ("User", f'schemas co "{E}"', "schemas"),
    ],
)
def test_what_sql_cannot_filter_is_invalid_filter(
    db: Database, reg: Registry, rt: str, text: str, detail: str
) -> None:
    with db.read() as conn, pytest.raises(ScimError) as info:
        search(conn, reg, reg.resource_type(rt), SearchParams(filter=text), 0)
    assert (info.value.status, info.value.scim_type) == (400, "invalidFilter")
    assert detail in info.value.detail


def test_values_are_bound_parameters_and_the_sql_is_shared(reg: Registry) -> None:
    """Values never enter the SQL text, and filters of one shape compile to the same statement (so
    SQLAlchemy's compiled cache serves them)."""
    user = reg.resource_type("User")
    texts = []
    for value in ["alice", "x'; DROP TABLE users; --"]:
        text = (
            f'userName eq "{value}" and emails[type eq "work" and value co "{value}"] and title sw "{value}"'
        )
        clause = compile_filter(parse_filter(reg, user, text), user, now_micros=0, dialect="postgresql")
        stmt = sa.select(table_of(user).c.pk).where(clause)
        sql = str(stmt.compile(dialect=postgresql.dialect()))
        assert value not in sql
        texts.append(sql)
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    ("prefix", "successor"),
    [
        ("abc", "abd"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff", None),
        ("", None),
        ("\ud7ff", "\ue000"),
        ("z", "{"),
    ],
)
def test_prefix_successor(prefix: str, successor: str | None) -> None:
    assert prefix_successor(prefix) == successor


# ---------------------------------------------------------------- index use

INDEXED = [
    ("User", 'userName eq "bjensen"', "users"),
    ("User", 'externalId eq "EXT-1"', "users"),
    ("User", 'emails.value eq "bjensen@example.com"', "user_values"),
    ("Group", 'displayName eq "Admins"', "groups"),
    ("Group", 'members.value eq "id-b"', "memberships"),
    ("User", 'name.familyName sw "jen"', "users"),
]


def _plan(conn: sa.Connection, stmt: sa.Select[Any]) -> str:
    compiled = stmt.compile(dialect=conn.dialect)
    if conn.dialect.name == "sqlite":
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params).all()
        return "\n".join(row[-1] for row in rows)
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # tiny tables: ask whether an index path exists
    return "\n".join(
        row[0] for row in conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).all()
    )


def test_member_display_substring_walks_members_first(seeded: Database, reg: Registry) -> None:
    """`members.display co` (issue 11: 15 such terms took 14.9 s over 500k memberships) reads the users and
    groups whose display matches and then their memberships by index: it never scans `memberships`."""
    group = reg.resource_type("Group")
    text = " or ".join(f'members.display co "{word}"' for word in ("jen", "smi", "nes"))
    where = compile_filter(parse_filter(reg, group, text), group, now_micros=0, dialect=seeded.dialect)
    with seeded.read() as conn:
        plan = _plan(conn, sa.select(sa.func.count()).select_from(groups_table).where(where))
    if seeded.is_sqlite:
        assert "SCAN memberships" not in plan, plan
        assert "SEARCH memberships USING INDEX ix_memberships_member_id_group_pk (member_id=?)" in plan, plan
    else:
        assert "Index Cond: ((member_id)::text = (member_user.id)::text)" in plan, plan


@pytest.mark.parametrize(("rt", "text", "indexed_table"), INDEXED)
def test_hot_filters_use_indexes(
    seeded: Database, reg: Registry, rt: str, text: str, indexed_table: str
) -> None:
    resource_type = reg.resource_type(rt)
    table = table_of(resource_type)
    where = compile_filter(
        parse_filter(reg, resource_type, text), resource_type, now_micros=0, dialect=seeded.dialect
    )
    statements = [
        sa.select(sa.func.count()).select_from(table).where(where),
        sa.select(table).where(where).order_by(table.c.pk).limit(100),
    ]
    with seeded.read() as conn:
        for stmt in statements:
            plan = _plan(conn, stmt)
            if seeded.is_sqlite:
                assert f"SCAN {table.name}" not in plan, plan
                assert f"SEARCH {indexed_table} USING" in plan, plan
            else:
                assert "Seq Scan" not in plan, plan
                assert "Index" in plan, plan


@pytest.mark.parametrize("rt", ["User", "Group"])
def test_a_start_index_page_skips_by_keys_alone(seeded: Database, reg: Registry, rt: str) -> None:
    """`startIndex=5000` skips 4,999 rows in primary-key order. On SQLite the rows of a rowid table live in the
    primary key's own b-tree, so skipping there read every skipped document (0.9 ms of W4's 1.1 ms at 10,000
    users); the page statement skips on an index of the keys alone, and PostgreSQL on its primary key index."""
    table = table_of(reg.resource_type(rt))
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "OFFSET" in statement.upper():
            seen.append((statement, parameters))

    sa.event.listen(seeded.engine, "before_cursor_execute", capture)
    try:
        with seeded.read() as conn:
            page = search(conn, reg, reg.resource_type(rt), SearchParams(start_index=3, count=2), 0)
    finally:
        sa.event.remove(seeded.engine, "before_cursor_execute", capture)
    assert page.start_index == 3 and len(page.rows) == 2
    [(statement, parameters)] = seen
    with seeded.read() as conn:
        if seeded.is_sqlite:
            plan = "\n".join(
                r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            )
            assert f"SCAN {table.name} USING COVERING INDEX ix_{table.name}_pk" in plan, plan
        else:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            assert f"Index Only Scan using pk_{table.name}" in plan, plan
