"""Group PATCH as IdPs send it (Entra, Okta, AWS: one PATCH per membership change, no `attributes`, no
`Prefer`): 200 with the group while it is small, 204 with the exact ETag once it is big, never the member
list of a big group; and a PATCH of 1,000 member changes touches only those rows, in a few statements."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import sqlalchemy as sa

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def make_group(server, members: list[str]) -> dict:
    r = server.client.post(
        "/Groups",
        json={
            "schemas": [GROUP],
            "displayName": f"g-{uuid.uuid4().hex[:8]}",
            "members": [{"value": m} for m in members],
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def entra_add(server, gid: str, member_ids: list[str], query: str = "", **headers: str) -> httpx.Response:
    """Entra's exact request: `"op":"Add"`, path `members`, values with `value` only, no query, no Prefer."""
    body = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "Add", "path": "members", "value": [{"value": m} for m in member_ids]}],
    }
    return server.client.patch(f"/Groups/{gid}{query}", json=body, headers=headers)


def live_members(server, gid: str) -> set[str]:
    with server.services.db.read() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT m.member_id FROM memberships m JOIN groups g ON g.pk = m.group_pk WHERE g.id = :id"
            ),
            {"id": gid},
        )
        return {r[0] for r in rows}


def test_small_group_answers_200_with_the_group(server):
    group = make_group(server, ids(3))
    new = ids(1)
    r = entra_add(server, group["id"], new)
    assert r.status_code == 200
    body = r.json()
    assert {m["value"] for m in body["members"]} == live_members(server, group["id"]) and len(
        body["members"]
    ) == 4
    assert r.headers["etag"] == server.client.get(f"/Groups/{group['id']}").headers["etag"] == 'W/"2"'


def test_big_group_answers_204_with_the_exact_etag_and_the_change_is_stored(server):
    server.services.settings.group_patch_response_max_members = 10
    group = make_group(server, ids(10))
    new = ids(1)
    r = entra_add(server, group["id"], new)
    assert r.status_code == 204 and r.content == b""
    assert r.headers["etag"] == server.client.get(f"/Groups/{group['id']}").headers["etag"] == 'W/"2"'
    assert new[0] in live_members(server, group["id"]) and len(live_members(server, group["id"])) == 11
    # the threshold counts the members after the change: back at 10, the group is returned again
    r = server.client.patch(
        f"/Groups/{group['id']}",
        json={
            "schemas": [PATCH_OP],
            "Operations": [{"op": "Remove", "path": f'members[value eq "{new[0]}"]'}],
        },
    )
    assert r.status_code == 200 and len(r.json()["members"]) == 10 and r.headers["etag"] == 'W/"3"'


def test_naming_attributes_always_gets_200_with_them(server):
    server.services.settings.group_patch_response_max_members = 2
    group = make_group(server, ids(5))
    r = entra_add(server, group["id"], ids(1), "?attributes=displayName")
    assert (
        r.status_code == 200 and r.json()["displayName"] == group["displayName"] and "members" not in r.json()
    )
    r = entra_add(server, group["id"], ids(1), "?excludedAttributes=members")
    assert r.status_code == 200 and "members" not in r.json() and r.headers["etag"] == 'W/"3"'
    r = entra_add(server, group["id"], ids(1), "?attributes=members")
    assert r.status_code == 200 and len(r.json()["members"]) == 8  # asked for: RFC 7644 §3.5.2 MUST
    # a displayName change on a big group: the same rule, 204
    r = server.client.patch(
        f"/Groups/{group['id']}",
        json={
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "displayName", "value": "Renamed"}],
        },
    )
    assert (
        r.status_code == 204
        and server.client.get(f"/Groups/{group['id']}").json()["displayName"] == "Renamed"
    )


def test_prefer_minimal_and_bulk_are_unchanged(server):
    group = make_group(server, ids(1))
    r = entra_add(server, group["id"], ids(1), Prefer="return=minimal")
    assert r.status_code == 204 and r.headers["etag"] == 'W/"2"'
    server.services.settings.group_patch_response_max_members = 0
    bulk = {
        "schemas": [BULK],
        "Operations": [
            {
                "method": "PATCH",
                "path": f"/Groups/{group['id']}",
                "data": {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "Add", "path": "members", "value": [{"value": "x1"}]}],
                },
            }
        ],
    }
    r = server.client.post("/Bulk", json=bulk)
    assert r.status_code == 200 and r.json()["Operations"][0]["status"] == "200"


@contextmanager
def statements(server) -> Iterator[list[tuple[str, int]]]:
    """Every SQL statement the server runs meanwhile, with the number of parameter sets it carried."""
    seen: list[tuple[str, int]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, len(parameters) if executemany else 1))

    engine = server.services.db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def membership_statements(seen: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(s, n) for s, n in seen if "memberships" in s]


def test_a_thousand_member_changes_in_one_patch_touch_only_those_rows(server):
    existing = ids(2000)
    group = make_group(server, existing)
    gid = group["id"]

    with statements(server) as small:
        assert entra_add(server, gid, ids(10)).status_code == 204
    new = ids(1000)
    with statements(server) as seen:
        assert entra_add(server, gid, new).status_code == 204
    assert live_members(server, gid) >= set(new) and len(live_members(server, gid)) == 3010

    # no per-member round trip: the same statements as a 10-member add, but for one more 500-id chunk
    assert len(seen) <= len(small) + 1, seen
    inserts = [n for s, n in membership_statements(seen) if s.lstrip().upper().startswith("INSERT")]
    assert inserts == [1000]  # one statement carrying exactly the new rows
    # no read of the whole group: every membership read is bounded by the ids sent or by a LIMIT
    for stmt, _ in membership_statements(seen):
        if stmt.lstrip().upper().startswith("SELECT"):
            assert _bounded(stmt), stmt

    gone = new[:1000]
    with statements(server) as seen:
        r = server.client.patch(
            f"/Groups/{gid}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "Remove", "path": "members", "value": [{"value": m} for m in gone]}],
            },
        )
    assert r.status_code == 204
    assert live_members(server, gid) == set(existing) | (live_members(server, gid) - set(existing))
    assert not (live_members(server, gid) & set(gone)) and len(live_members(server, gid)) == 2010
    deletes = [s for s, _ in membership_statements(seen) if s.lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 1 and "member_id IN" in deletes[0]
    for stmt, _ in membership_statements(seen):
        if stmt.lstrip().upper().startswith("SELECT"):
            assert _bounded(stmt), stmt
    assert len(seen) <= len(small) + 3, seen


def _bounded(stmt: str) -> bool:
    """A membership read bounded by the ids sent (an IN list, SQLite's `IN (SELECT value FROM json_each(?))`,
    PostgreSQL's `= ANY (...)`: `store.dialect.in_list`) or by a LIMIT."""
    return "member_id IN" in stmt or "member_id = ANY" in stmt or "LIMIT" in stmt


@pytest.mark.parametrize("size", [0, 1])
def test_zero_threshold_still_returns_an_empty_group(server, size):
    server.services.settings.group_patch_response_max_members = 0
    group = make_group(server, [])
    r = server.client.patch(
        f"/Groups/{group['id']}",
        json={"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": "z"}]},
    )
    assert r.status_code == 200 and r.json()["displayName"] == "z"
    if size:
        assert entra_add(server, group["id"], ids(size)).status_code == 204


def test_the_threshold_counts_live_members_only(server):
    """Members whose time ran out are not members: a group of 12 rows, 3 of them expired, is a group of 9,
    and an add makes it 10, at the threshold: 200 with exactly the live ones."""
    server.services.settings.group_patch_response_max_members = 10
    members = ids(12)
    group = make_group(server, members)
    with server.services.db.write() as conn:
        conn.execute(
            sa.text(
                "UPDATE memberships SET expires_at = 1 WHERE member_id IN (:a, :b, :c)"
                " AND group_pk = (SELECT pk FROM groups WHERE id = :id)"
            ),
            {"a": members[0], "b": members[1], "c": members[2], "id": group["id"]},
        )
    new = ids(1)
    r = entra_add(server, group["id"], new)
    assert r.status_code == 200, r.text
    assert {m["value"] for m in r.json()["members"]} == {*members[3:], *new}
    r = entra_add(server, group["id"], ids(1))  # 11 live members: over the threshold
    assert r.status_code == 204


def test_the_live_member_count_reads_one_index_only(server):
    """The count behind every plain Group PATCH reads `ix_memberships_group_pk_member_id_expires_at` alone,
    no table row per member (SQLite: a covering index; PostgreSQL: an index-only scan)."""
    from scimjit.store.groups import _LIVE_MEMBERS_UP_TO

    db = server.services.db
    group = make_group(server, ids(300))
    compiled = _LIVE_MEMBERS_UP_TO.compiled(db.engine.dialect)
    with db.write() as conn:
        pk = conn.execute(sa.text("SELECT pk FROM groups WHERE id = :id"), {"id": group["id"]}).scalar_one()
    params = compiled.parameters({"pk": pk, "now": 0, "limit": 101})
    if db.is_sqlite:
        with db.engine.connect() as conn:
            plan = " ".join(
                str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.sql, params)
            )
        assert "COVERING INDEX ix_memberships_group_pk_member_id_expires_at" in plan, plan
    else:  # a database of many groups, statistics up to date, as PostgreSQL plans in production
        other = make_group(server, [])
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO memberships (group_pk, member_id, source, member_type, added_at)"
                " SELECT g.pk, 'm' || n, 'scim', 'User', 0 FROM groups g, generate_series(1, 20000) n"
                f" WHERE g.id = '{other['id']}'"
            )
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE memberships")
            big = conn.exec_driver_sql(f"SELECT pk FROM groups WHERE id = '{other['id']}'").scalar_one()
            for group_pk in (pk, big):  # the big group too: no hash of all its members before the limit
                params = compiled.parameters({"pk": group_pk, "now": 0, "limit": 101})
                plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + compiled.sql, params).scalars())
                assert "Index Only Scan using ix_memberships_group_pk_member_id_expires_at" in plan, plan
                assert "HashAggregate" not in plan, plan
