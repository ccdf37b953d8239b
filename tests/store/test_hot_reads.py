"""The hot read paths (issue 13): `GET /Users/{id}` is one statement with no transaction round trip, and still
exact: live groups only (an expired membership vanishes at the instant of expiry), each group once whatever
its number of sources, in displayName order; the ETag is the stored version."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.scim.errors import ScimError
from scimjit.scim.projection import parse_projection
from scimjit.scim.schema import GROUP_URN, USER_URN
from scimjit.store import memberships
from scimjit.store import resources as ops
from scimjit.store.events import NoListener

TTL_URN = "urn:scimjit:params:scim:schemas:extension:jit:2.0:Group"


def _ctx(db: Any, registry: Any, clock: Any, attributes: str | None = None) -> ops.Context:
    projection = parse_projection(registry, registry.resource_type("User"), attributes, None)
    return ops.Context(
        db, registry, NoListener(), to_micros(clock.now()), "http://test/scim/v2", projection, actor="t"
    )


class Statements:
    """Every SQL statement the engine sends while counting (BEGIN included: SQLite's is one we send)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.seen: list[str] = []

    def __enter__(self) -> list[str]:
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *_exc: Any) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement)


def _group(db: Any, registry: Any, clock: Any, name: str, members: list[str], **ext: Any) -> str:
    doc: dict[str, Any] = {
        "schemas": [GROUP_URN],
        "displayName": name,
        "members": [{"value": m} for m in members],
    }
    if ext:
        doc["schemas"].append(TTL_URN)
        doc[TTL_URN] = ext
    return str(ops.create_group(_ctx(db, registry, clock), doc).document["id"])


def test_get_user_reads_user_and_live_groups_in_one_statement(db, registry, clock):
    ctx = _ctx(db, registry, clock)
    uid = str(ops.create_user(ctx, {"schemas": [USER_URN], "userName": "alice"}).document["id"])
    zeta = _group(db, registry, clock, "zeta", [uid])
    alpha = _group(db, registry, clock, "Alpha", [uid])
    brief = _group(db, registry, clock, "brief", [uid], membershipTTL=60)
    # a second source of the same membership (a grant): still one group in the answer
    with db.write() as conn:
        pk = conn.execute(sa.text("SELECT pk FROM groups WHERE id = :id"), {"id": zeta}).scalar_one()
        memberships.add_sourced(
            conn,
            [{"group_pk": pk, "member_id": uid, "source": "grant:g1", "member_type": "User",
              "added_at": to_micros(clock.now()), "expires_at": None}],
        )  # fmt: skip

    with Statements(db.engine) as seen:
        doc, version = ops.read_one(_ctx(db, registry, clock), "User", uid)
    assert len(seen) == 1, seen  # before: BEGIN, the user, its groups (and COMMIT on PostgreSQL)
    assert [g["value"] for g in doc["groups"]] == [alpha, brief, zeta]
    assert [g["display"] for g in doc["groups"]] == ["Alpha", "brief", "zeta"]
    assert doc["groups"][0]["$ref"] == f"http://test/scim/v2/Groups/{alpha}"
    assert version == 1 and doc["meta"]["version"] == 'W/"1"'

    clock.advance(60)  # the TTL membership is expired now, the sweeper has not run
    doc, _ = ops.read_one(_ctx(db, registry, clock), "User", uid)
    assert [g["value"] for g in doc["groups"]] == [alpha, zeta]


def test_get_user_without_groups_and_unknown_user(db, registry, clock):
    ctx = _ctx(db, registry, clock)
    uid = str(ops.create_user(ctx, {"schemas": [USER_URN], "userName": "bob"}).document["id"])
    doc, _ = ops.read_one(ctx, "User", uid)
    assert doc["userName"] == "bob" and "groups" not in doc
    with Statements(db.engine) as seen:
        doc, _ = ops.read_one(_ctx(db, registry, clock, attributes="userName"), "User", uid)
    assert len(seen) == 1 and "memberships" not in seen[0]  # groups not asked for: not read
    with pytest.raises(ScimError) as caught:
        ops.read_one(ctx, "User", "no-such-id")
    assert caught.value.status == 404


def _search(db: Any, registry: Any, clock: Any, **params: Any) -> Any:
    from scimjit.store.query import SearchParams, search

    with db.read() as conn:
        return search(
            conn, registry, registry.resource_type("User"), SearchParams(**params), to_micros(clock.now())
        )


def test_a_page_that_is_not_full_is_its_own_count(db, registry, clock):
    ctx = _ctx(db, registry, clock)
    for name in ("ann", "ben", "cat", "dan", "eve"):
        ops.create_user(ctx, {"schemas": [USER_URN], "userName": name})
    with Statements(db.engine) as seen:
        page = _search(db, registry, clock, filter='userName eq "CAT"', count=100)
    assert page.total == 1 and [r.user_name for r in page.rows] == ["cat"]
    assert not any("count(" in s.lower() for s in seen), seen  # before: a COUNT(*) per lookup
    # the count is still exact wherever the page does not show the end
    cases = [
        ({"count": 2}, 5, 2),  # a full page: counted
        ({"start_index": 4, "count": 10}, 5, 2),  # the last, partial page: start - 1 + rows
        ({"start_index": 9, "count": 10}, 5, 0),  # past the end: counted
        ({"count": 0}, 5, 0),  # count=0 asks for the total only
        ({"filter": 'userName eq "nobody"'}, 0, 0),
        ({"cursor": "", "count": 10}, 5, 5),
        ({"cursor": "", "count": 3}, 5, 3),
    ]
    for params, total, rows in cases:
        page = _search(db, registry, clock, **params)
        assert (page.total, len(page.rows)) == (total, rows), params
    following = _search(
        db, registry, clock, cursor=_search(db, registry, clock, cursor="", count=3).next_cursor, count=3
    )
    assert following.total == 5 and [r.user_name for r in following.rows] == ["dan", "eve"]


def test_a_user_name_lookup_is_one_statement_and_exact(db, registry, clock):
    from scimjit.http.listing import fetch_page
    from scimjit.store.query import SearchParams

    ctx = _ctx(db, registry, clock)
    uid = str(ops.create_user(ctx, {"schemas": [USER_URN], "userName": "Kate"}).document["id"])
    ops.create_user(ctx, {"schemas": [USER_URN], "userName": "kate2"})
    gid = _group(db, registry, clock, "staff", [uid])
    _group(db, registry, clock, "brief", [uid], membershipTTL=30)
    clock.advance(30)  # "brief" expired at this instant, not swept
    with Statements(db.engine) as seen:
        page, docs = fetch_page(_ctx(db, registry, clock), "User", SearchParams(filter='userName eq "KATE"'))
    assert len(seen) == 1, seen  # before: BEGIN, COUNT, the page, its groups
    assert page.total == 1 and page.start_index == 1
    assert [d["id"] for d in docs] == [uid] and [g["value"] for g in docs[0]["groups"]] == [gid]
    page, docs = fetch_page(ctx, "User", SearchParams(filter='userName eq "nobody"'))
    assert (page.total, docs) == (0, [])
    # not a plain lookup: the general search answers, with the same result
    for params in (
        SearchParams(filter='userName eq "kate"', start_index=2),
        SearchParams(filter='userName eq "kate"', sort_by="userName"),
        SearchParams(filter='userName eq "kate"', count=0),
    ):
        page, docs = fetch_page(ctx, "User", params)
        assert page.total == 1 and len(docs) == (0 if params.count == 0 or params.start_index == 2 else 1)


def test_the_loop_reads_answer_as_the_thread_reads(db, registry, clock):
    """`read_user_async` / `lookup_user_async` (awaited on the event loop, `Database.fetch_async`) give what
    `read_one` / `lookup_user` give: groups, an expired membership gone at once, the projection, a 404."""
    import asyncio

    ctx = _ctx(db, registry, clock)
    uid = str(ops.create_user(ctx, {"schemas": [USER_URN], "userName": "Lena"}).document["id"])
    gid = _group(db, registry, clock, "staff", [uid])
    _group(db, registry, clock, "brief", [uid], membershipTTL=30)
    for advance in (0, 30):  # "brief" live, then expired at this instant (not swept)
        clock.advance(advance)
        for attributes in (None, "userName"):
            ctx = _ctx(db, registry, clock, attributes=attributes)
            assert asyncio.run(ops.read_user_async(ctx, uid)) == ops.read_one(ctx, "User", uid)
            assert asyncio.run(ops.lookup_user_async(ctx, "lena")) == ops.lookup_user(ctx, "lena")
    doc, _ = asyncio.run(ops.read_user_async(_ctx(db, registry, clock), uid))
    assert [g["value"] for g in doc["groups"]] == [gid]
    assert asyncio.run(ops.lookup_user_async(ctx, "nobody")) == ops.lookup_user(ctx, "nobody")
    assert asyncio.run(ops.lookup_user_async(ctx, "nobody"))[0].total == 0
    with pytest.raises(ScimError) as caught:
        asyncio.run(ops.read_user_async(ctx, "no-such-id"))
    assert caught.value.status == 404


def test_a_page_of_users_reads_each_live_group_once_in_the_order_of_one_user(db, registry, clock):
    """`groups_of` (every page of users): the live groups of each listed user, each group once whatever its
    number of sources, in the order `GET /Users/{id}` gives them; a user listed twice or in no group too."""
    from scimjit.store import users as user_rows

    ctx = _ctx(db, registry, clock)
    alice, bob, carol = (
        str(ops.create_user(ctx, {"schemas": [USER_URN], "userName": n}).document["id"])
        for n in ("alice", "bob", "carol")
    )
    zeta = _group(db, registry, clock, "zeta", [alice, bob])
    alpha = _group(db, registry, clock, "Alpha", [alice])
    brief = _group(db, registry, clock, "brief", [alice, bob], membershipTTL=60)
    with db.write() as conn:  # a second and a third source of alice's membership of zeta
        pk = conn.execute(sa.text("SELECT pk FROM groups WHERE id = :id"), {"id": zeta}).scalar_one()
        memberships.add_sourced(
            conn,
            [{"group_pk": pk, "member_id": alice, "source": s, "member_type": "User",
              "added_at": to_micros(clock.now()), "expires_at": None} for s in ("grant:g1", "grant:g2")],
        )  # fmt: skip

    def page() -> dict[str, list[tuple[str, str]]]:
        with db.snapshot() as reader:
            return user_rows.groups_of(reader, [bob, alice, carol, alice], to_micros(clock.now()))

    found = page()
    assert found == {
        alice: [(alpha, "Alpha"), (brief, "brief"), (zeta, "zeta")],
        bob: [(brief, "brief"), (zeta, "zeta")],
        carol: [],
    }
    doc, _ = ops.read_one(_ctx(db, registry, clock), "User", alice)
    assert [(g["value"], g["display"]) for g in doc["groups"]] == found[alice]
    with db.read() as conn:  # in a transaction, as a write's answer reads them
        assert user_rows.groups_of(conn, [alice], to_micros(clock.now())) == {alice: found[alice]}

    clock.advance(60)  # the TTL memberships are expired now, the sweeper has not run
    assert page() == {alice: [(alpha, "Alpha"), (zeta, "zeta")], bob: [(zeta, "zeta")], carol: []}


def test_a_page_of_users_seeks_its_members_whatever_sqlite_s_statistics_say(db, registry, clock):
    """Statistics taken while the memberships table was nearly empty (`ANALYZE`, as an operator may run it)
    must not turn the page's group read into a scan of every group per listed user: the plan is one seek in
    the member index per listed user."""
    from scimjit.store import users as user_rows

    if not db.is_sqlite:
        pytest.skip("SQLite's query planner")
    ctx = _ctx(db, registry, clock)
    uid = str(ops.create_user(ctx, {"schemas": [USER_URN], "userName": "alice"}).document["id"])
    for n in range(20):
        _group(db, registry, clock, f"g{n}", [uid] if n == 0 else [])
    with db.write() as conn:
        conn.exec_driver_sql("ANALYZE")
    try:
        compiled = user_rows._GROUPS_OF.compiled(db.engine.dialect)
        params = compiled.parameters({"ids": [uid], "now": 0})
        with db.engine.connect() as conn:
            plan = [str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.sql, params)]
        assert any("SEARCH memberships USING INDEX ix_memberships_member_id_group_pk" in p for p in plan), (
            plan
        )
        assert not any(p.startswith("SCAN groups") or p.startswith("SCAN memberships") for p in plan), plan
    finally:
        with db.write() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat1")


def test_a_listed_parameter_is_an_index_condition_on_postgresql(db, registry, clock):
    """`dialect.in_list` on PostgreSQL sends the list as JSON text: the array it builds from it must still be
    an index condition (`= ANY($0)` from an InitPlan), for the page's group read and a group's member add."""
    from scimjit.store import groups as group_rows
    from scimjit.store import users as user_rows

    if db.is_sqlite:
        pytest.skip("PostgreSQL's planner")
    uid = str(
        ops.create_user(_ctx(db, registry, clock), {"schemas": [USER_URN], "userName": "a"}).document["id"]
    )
    _group(db, registry, clock, "g", [uid])
    for prepared, params in (
        (user_rows._GROUPS_OF, {"ids": [uid, "x"], "now": 0}),
        (group_rows._LIVE_IDS, {"pk": 1, "ids": [uid], "now": 0}),
    ):
        compiled = prepared.compiled(db.engine.dialect)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a seq scan only if nothing else can run
            plan = " ".join(
                str(r[0])
                for r in conn.exec_driver_sql("EXPLAIN " + compiled.sql, compiled.parameters(params))
            )
        assert "Seq Scan on memberships" not in plan, plan
        assert "member_id)::text = ANY ($0)" in plan, plan
