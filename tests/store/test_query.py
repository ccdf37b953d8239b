"""Sorting and paging in SQL on SQLite and PostgreSQL: orders, exact totals, index pages, cursor round trips
(RFC 9865) and the parameter errors."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from scimjit.clock import to_micros
from scimjit.scim.errors import ScimError
from scimjit.scim.filter import parse_filter
from scimjit.scim.schema import Registry
from scimjit.store.db import Database
from scimjit.store.query import Page, SearchParams, search
from tests.seed import CREATED, TEST_URN, add_member, insert_group, insert_user

N = 300
TITLES = ["Engineer", "engineer", "Manager", "Ünïcode", "Zed", "apple", "", None]
NAMES = ["alice", "Bob", "Zed", "apple", "Émile", "zoë", "Ärne", "bob"]


def user_doc(i: int) -> dict[str, Any]:
    """Deterministic variety: ties, missing values, case and non-ASCII differences, primary not first."""
    doc: dict[str, Any] = {"userName": f"{NAMES[i % len(NAMES)]}{i:03d}"}
    if TITLES[i % len(TITLES)] is not None:
        doc["title"] = TITLES[i % len(TITLES)]
    if i % 4:
        doc["displayName"] = NAMES[(i * 7) % len(NAMES)]
    if i % 5:
        doc["externalId"] = ["X", "x", "A", "b"][i % 4] + str(i % 10)
    if i % 3:
        emails = [{"value": f"{NAMES[(i * 3) % 8]}{i}@w.example", "type": "work"}]
        emails.append({"value": f"{NAMES[(i * 5) % 8]}{i}@h.example", "type": "home", "primary": i % 2 == 0})
        doc["emails"] = emails
    if i % 6:
        doc[TEST_URN] = {"level": (i * 37) % 11 - 5, "vip": i % 2 == 0}
    return doc


@pytest.fixture
def people(db: Database, reg: Registry) -> list[dict[str, Any]]:
    """N users; returns each document with its pk, id and created micros."""
    out = []
    with db.write() as conn:
        for i in range(N):
            doc = user_doc(i)
            created = CREATED + timedelta(minutes=i // 3)  # ties: three users per minute
            row = insert_user(conn, reg, doc, created=created)
            out.append({**doc, "pk": row.pk, "id": row.id, "created": to_micros(created)})
    return out


def run(db: Database, reg: Registry, rt: str = "User", **params: Any) -> Page:
    with db.read() as conn:
        return search(conn, reg, reg.resource_type(rt), SearchParams(**params), to_micros(CREATED))


def pks(page: Page) -> list[int]:
    return [row.pk for row in page.rows]


def expected(
    people: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any], descending: bool
) -> list[int]:
    """The order RFC 7644 §3.4.2.3 asks for, in Python: missing values last ascending, first descending;
    ties by pk."""
    by_pk = sorted(people, key=lambda p: p["pk"])
    present = [p for p in by_pk if key(p) is not None]
    present.sort(key=key, reverse=descending)  # stable: ties stay in pk order
    missing = [p for p in by_pk if key(p) is None]
    ordered = missing + present if descending else present + missing
    return [p["pk"] for p in ordered]


def _folded(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda p: p[name].lower() if p.get(name) is not None else None


def _primary_email(field: str) -> Callable[[dict[str, Any]], Any]:
    """The primary email's field, else the first email's (RFC 7644 §3.4.2.3), lower-cased."""

    def key(p: dict[str, Any]) -> Any:
        emails = p.get("emails") or []
        chosen = next((e for e in emails if e.get("primary") is True), emails[0] if emails else None)
        return chosen[field].lower() if chosen else None

    return key


SORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "userName": _folded("userName"),
    "title": _folded("title"),  # "" is a value when sorting: it sorts first
    "displayName": _folded("displayName"),
    "externalId": lambda p: p.get("externalId"),  # caseExact
    "emails": _primary_email("value"),
    "emails.value": _primary_email("value"),
    "emails.type": _primary_email("type"),
    "meta.created": lambda p: p["created"],
    "id": lambda p: p["id"],
    f"{TEST_URN}:level": lambda p: (p.get(TEST_URN) or {}).get("level"),
    f"{TEST_URN}:vip": lambda p: (p.get(TEST_URN) or {}).get("vip"),
}


def test_sorting_happens_in_sql_in_the_rfc_order(
    db: Database, reg: Registry, people: list[dict[str, Any]]
) -> None:
    for sort_by, key in SORTS.items():
        for order in ("ascending", "descending"):
            page = run(db, reg, sort_by=sort_by, sort_order=order)
            assert pks(page) == expected(people, key, order == "descending"), (sort_by, order)
    title = [p for p in people if p.get("title") == ""]
    assert pks(run(db, reg, sort_by="title", count=len(title))) == [p["pk"] for p in title]


def test_sort_parameters(db: Database, reg: Registry, people: list[dict[str, Any]]) -> None:
    by_pk = [p["pk"] for p in sorted(people, key=lambda p: p["pk"])]
    assert pks(run(db, reg)) == by_pk  # no sortBy: creation order
    assert pks(run(db, reg, sort_order="DESCENDING")) == by_pk[::-1]
    assert pks(run(db, reg, sort_by="USERNAME", sort_order="Ascending")) == expected(
        people, SORTS["userName"], False
    )


def test_index_pages_are_exact_and_stable(db: Database, reg: Registry, people: list[dict[str, Any]]) -> None:
    order = expected(people, SORTS["title"], True)
    seen: list[int] = []
    for start in range(1, N + 1, 37):
        page = run(db, reg, sort_by="title", sort_order="descending", start_index=start, count=37)
        assert (page.total, page.start_index, page.next_cursor, page.previous_cursor) == (
            N,
            start,
            None,
            None,
        )
        seen += pks(page)
    assert seen == order


def test_count_and_start_index_edges(db: Database, reg: Registry, people: list[dict[str, Any]]) -> None:
    assert (run(db, reg, count=0).total, run(db, reg, count=0).rows) == (N, [])
    assert run(db, reg, count=-5).rows == []
    assert len(run(db, reg, count=50, max_page_size=20).rows) == 20
    assert len(run(db, reg, max_page_size=25).rows) == 25  # no count: the server's page size
    assert run(db, reg, start_index=0, count=1).start_index == 1
    assert pks(run(db, reg, start_index=-3, count=2)) == pks(run(db, reg, count=2))
    beyond = run(db, reg, start_index=N + 1, count=10)
    assert (beyond.total, beyond.rows, beyond.start_index) == (N, [], N + 1)
    filtered = run(db, reg, filter='title eq "engineer"', start_index=10, count=5)
    assert filtered.total == sum(1 for p in people if (p.get("title") or "").lower() == "engineer")
    assert len(filtered.rows) == 5


def test_filters_arrive_as_text_or_predicates(
    db: Database, reg: Registry, people: list[dict[str, Any]]
) -> None:
    user = reg.resource_type("User")
    predicate = parse_filter(reg, user, 'emails[type eq "work" and value sw "bob"]')
    by_text = run(db, reg, filter='emails[type eq "work" and value sw "bob"]')
    assert pks(by_text) == pks(run(db, reg, filter=predicate)) != []
    assert run(db, reg, filter="").total == run(db, reg, filter="  ").total == N


def walk(db: Database, reg: Registry, rt: str = "User", **params: Any) -> tuple[list[list[int]], list[Page]]:
    """Follow nextCursor from the first page to the last."""
    pages = [run(db, reg, rt, cursor="", **params)]
    while pages[-1].next_cursor:
        pages.append(run(db, reg, rt, cursor=pages[-1].next_cursor, **params))
    return [pks(p) for p in pages], pages


@pytest.mark.parametrize(
    ("sort_by", "order", "filter_text"),
    [
        (None, None, None),
        (None, "descending", None),
        ("title", "ascending", None),
        ("title", "descending", None),
        ("userName", "descending", 'userName sw "b" or title pr'),
        ("emails", "ascending", None),
        ("meta.created", "descending", None),
        (f"{TEST_URN}:level", "ascending", None),
        (f"{TEST_URN}:vip", "descending", None),
    ],
)
def test_cursor_round_trip(
    db: Database,
    reg: Registry,
    people: list[dict[str, Any]],
    sort_by: str | None,
    order: str | None,
    filter_text: str | None,
) -> None:
    params = {"sort_by": sort_by, "sort_order": order, "filter": filter_text, "count": 23}
    everything = pks(run(db, reg, sort_by=sort_by, sort_order=order, filter=filter_text))
    forward, pages = walk(db, reg, **params)
    assert [pk for page in forward for pk in page] == everything
    assert all(len(page) == 23 for page in forward[:-1]) and 0 < len(forward[-1]) <= 23
    assert all(p.total == len(everything) and p.start_index is None for p in pages)
    assert pages[0].previous_cursor is None and pages[-1].next_cursor is None
    assert all(p.previous_cursor for p in pages[1:]) and all(p.next_cursor for p in pages[:-1])
    back = [pks(pages[-1])]
    cursor = pages[-1].previous_cursor
    while cursor:
        page = run(db, reg, cursor=cursor, **params)
        back.append(pks(page))
        cursor = page.previous_cursor
    assert back[::-1] == forward
    for token in [p.next_cursor for p in pages] + [p.previous_cursor for p in pages]:
        assert token is None or set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
        )


def test_cursor_pages_see_rows_added_between_pages(
    db: Database, reg: Registry, people: list[dict[str, Any]]
) -> None:
    """Keyset paging: a row inserted behind the cursor is not seen, one ahead of it is, none is repeated."""
    first = run(db, reg, cursor="", count=10, sort_by="userName")
    with db.write() as conn:
        insert_user(conn, reg, {"userName": "0000-before"})
        insert_user(conn, reg, {"userName": "zzzz-after"})
    rest = walk(db, reg, count=100, sort_by="userName")[0]
    second = run(db, reg, cursor=first.next_cursor, count=500, sort_by="userName")
    assert not set(pks(first)) & set(pks(second))
    assert pks(second)[-1] == rest[-1][-1]
    assert second.total == N + 2


def test_count_zero_with_a_cursor(db: Database, reg: Registry, people: list[dict[str, Any]]) -> None:
    page = run(db, reg, cursor="", count=0)
    assert (page.total, page.rows, page.next_cursor, page.previous_cursor) == (N, [], None, None)


def test_groups_sort_and_page(db: Database, reg: Registry) -> None:
    names = ["beta", "Alpha", "gamma", "Delta", "alpha2"]
    with db.write() as conn:
        rows = [insert_group(conn, {"displayName": n}) for n in names]
        add_member(conn, rows[0].pk, "m-2")
        add_member(conn, rows[0].pk, "m-1")
        add_member(conn, rows[2].pk, "m-0")
    page = run(db, reg, "Group", sort_by="displayName")
    assert [r.display_name for r in page.rows] == ["Alpha", "alpha2", "beta", "Delta", "gamma"]
    page = run(db, reg, "Group", sort_by="members.value")  # first member in id order; none sorts last
    assert [r.display_name for r in page.rows] == ["gamma", "beta", "Alpha", "Delta", "alpha2"]
    forward = walk(db, reg, "Group", count=2, sort_by="displayName", sort_order="descending")[0]
    assert [pk for p in forward for pk in p] == pks(
        run(db, reg, "Group", sort_by="displayName", sort_order="descending")
    )


def _scim_error(db: Database, reg: Registry, **params: Any) -> ScimError:
    with pytest.raises(ScimError) as info:
        run(db, reg, **params)
    assert info.value.status == 400
    return info.value


def test_cursor_errors(db: Database, reg: Registry) -> None:
    with db.write() as conn:
        for i in range(3):
            insert_user(conn, reg, {"userName": f"u{i}", "title": "t"})
    good = run(db, reg, cursor="", count=1, sort_by="title").next_cursor
    assert good
    tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    forged_body = base64.urlsafe_b64encode(b"\0" * 12 + b'["a",1,"t"]').rstrip(b"=").decode()
    for bad in ["!!!", "abc", "a", good + "=", tampered, forged_body, good + "AAAA"]:
        assert _scim_error(db, reg, cursor=bad, count=1, sort_by="title").scim_type == "invalidCursor", bad
    for other in [
        {"sort_by": "title", "sort_order": "descending"},
        {"sort_by": "userName"},
        {"sort_by": "title", "filter": "title pr"},
        {},
    ]:
        assert _scim_error(db, reg, cursor=good, count=1, **other).scim_type == "invalidCursor", other
    assert run(db, reg, cursor=good, count=5, sort_by="title").total == 3  # another count is fine
    both = _scim_error(db, reg, cursor="", start_index=1)
    assert both.scim_type == "invalidValue" and "startIndex" in both.detail


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"sort_order": "upwards"}, "sortOrder must be ascending or descending"),
        ({"sort_by": "nope"}, "unknown attribute"),
        ({"sort_by": "name"}, "needs a sub-attribute"),
        ({"sort_by": "password"}, "cannot be sorted on"),
        ({"sort_by": "schemas"}, "unknown attribute"),
        ({"sort_by": "meta.location"}, "meta.location"),
        ({"sort_by": f"{TEST_URN}:tags"}, "tags"),
    ],
)
def test_sort_errors_are_invalid_value(
    db: Database, reg: Registry, params: dict[str, Any], detail: str
) -> None:
    error = _scim_error(db, reg, **params)
    assert error.scim_type == "invalidValue"
    assert detail in error.detail


def test_filter_errors_are_invalid_filter(db: Database, reg: Registry) -> None:
    assert _scim_error(db, reg, filter="userName eq").scim_type == "invalidFilter"
    deep = "(" * 5 + "title pr" + ")" * 5
    assert _scim_error(db, reg, filter=deep, max_filter_depth=3).scim_type == "invalidFilter"
    assert _scim_error(db, reg, filter="title pr", max_filter_length=3).scim_type == "invalidFilter"
