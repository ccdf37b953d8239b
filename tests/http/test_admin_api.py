"""Admin views (/jit/v1/audit, accounts, grants, requests, outbox) and their CLI: SCIM filters, sorting and
paging in SQL, JSON-lines export, the admin scope, and the registry they use staying out of SCIM discovery."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from scimjit.clock import to_micros
from scimjit.store import admin, audit
from scimjit.store.tables import access_requests, accounts, grants, outbox


def seed(db, clock):
    now = clock.now()
    us = to_micros(now)
    with db.write() as conn:
        for i in range(7):
            audit.record(
                conn,
                actor="entra" if i % 2 else "okta",
                action="login.refused" if i < 3 else "scim.user.create",
                outcome="refused" if i < 3 else "success",
                resource_type="User",
                resource_id=f"u{i}",
                details={"reason": "not_entitled"} if i < 3 else {},
                at_micros=to_micros(now - timedelta(hours=7 - i)),
            )
        for i, (app, status) in enumerate([("wiki", "active"), ("wiki", "disabled"), ("crm", "active")]):
            conn.execute(
                accounts.insert().values(
                    application=app,
                    user_id=f"u{i}",
                    user_name=f"User{i}",
                    status=status,
                    roles=["r"],
                    created_at=us - i,
                    updated_at=us,
                    last_login_at=us - 1000 * i,
                )
            )
        for i, status in enumerate(["active", "expired", "active"]):
            conn.execute(
                grants.insert().values(
                    id=f"g{i}",
                    user_id=f"u{i}",
                    group_id="admins",
                    status=status,
                    starts_at=us,
                    expires_at=us + (i + 1) * 3_600_000_000,
                    justification=f"Ticket OPS-{i}",
                    created_by="alice",
                    created_at=us,
                    updated_at=us,
                )
            )
        conn.execute(
            access_requests.insert().values(
                id="r1",
                user_id="u1",
                group_id="admins",
                status="pending",
                duration_seconds=3600,
                justification="on call",
                requested_by="u1",
                approvals=[],
                created_at=us,
                expires_at=us + 1,
            )
        )
        for i, status in enumerate(["pending", "dead", "done", "pending"]):
            conn.execute(
                outbox.insert().values(
                    event_id=f"e{i}",
                    type="account.create",
                    application="wiki",
                    user_id=f"u{i}",
                    ordering_key=f"wiki:u{i}",
                    payload={"n": i},
                    status=status,
                    attempts=i,
                    next_attempt_at=us,
                    created_at=us - (4 - i) * 60_000_000,
                )
            )


def get(server, path, **params):
    r = server.client.get(f"{server.url}/jit/v1/{path}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_admin_lists_filter_sort_and_page_in_camel_case(server):
    seed(server.services.db, server.clock)
    page = get(
        server,
        "audit",
        filter='action eq "login.refused" and actor eq "OKTA"',
        sortBy="at",
        sortOrder="descending",
    )
    assert page["totalResults"] == 2 and page["itemsPerPage"] == 2 and page["startIndex"] == 1
    assert [r["resourceId"] for r in page["Resources"]] == ["u2", "u0"]
    assert page["Resources"][0]["details"] == {"reason": "not_entitled"}
    assert page["Resources"][0]["resourceType"] == "User"

    page = get(server, "audit", count=2, startIndex=3)
    assert page["totalResults"] == 7 and [r["id"] for r in page["Resources"]] == [3, 4]

    since = (server.clock.now() - timedelta(hours=2, minutes=30)).isoformat().replace("+00:00", "Z")
    page = get(server, "audit", filter=f'at gt "{since}"')
    assert [r["resourceId"] for r in page["Resources"]] == ["u5", "u6"]

    page = get(server, "accounts", filter='application eq "wiki"', sortBy="lastLoginAt")
    assert [(a["userId"], a["status"]) for a in page["Resources"]] == [("u1", "disabled"), ("u0", "active")]
    assert page["Resources"][0]["roles"] == ["r"] and page["Resources"][0]["lastLoginAt"].endswith("Z")
    assert get(server, "accounts", application="wiki", status="active")["totalResults"] == 1

    page = get(
        server,
        "grants",
        filter='justification co "ops-1" or status eq "active"',
        sortBy="expiresAt",
        sortOrder="descending",
    )
    assert [g["id"] for g in page["Resources"]] == ["g2", "g1", "g0"]
    assert get(server, "grants", filter='not (status eq "active")')["totalResults"] == 1

    assert get(server, "requests", filter='status eq "pending"')["Resources"][0]["durationSeconds"] == 3600

    page = get(server, "outbox", filter='status ne "done" and attempts ge 1')
    assert [(e["eventId"], e["status"]) for e in page["Resources"]] == [("e1", "dead"), ("e3", "pending")]
    assert get(server, "outbox", status="pending", after=1)["Resources"][0]["eventId"] == "e3"
    assert get(server, "outbox", filter="claimedBy pr")["totalResults"] == 0


def test_admin_list_errors_are_scim_errors(server):
    for params in (
        {"filter": 'nosuch eq "x"'},
        {"filter": 'details eq "x"'},
        {"filter": "action eq"},
        {"filter": 'at gt "yesterday"'},
        {"sortBy": "details"},
        {"sortOrder": "sideways"},
        {"count": "many"},
        {"format": "xml"},
    ):
        r = server.client.get(f"{server.url}/jit/v1/audit", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_admin_views_need_the_admin_scope(server):
    token = server.token("writer", "scim:write", "scim:read")
    for path in ("audit", "accounts", "grants", "requests", "outbox"):
        assert httpx.get(f"{server.url}/jit/v1/{path}").status_code == 401
        r = httpx.get(f"{server.url}/jit/v1/{path}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403, path


def test_count_is_capped_by_max_page_size_and_negative_count_is_zero(server):
    seed(server.services.db, server.clock)
    server.services.settings.max_page_size = 3
    assert get(server, "audit", count=100)["itemsPerPage"] == 3
    page = get(server, "audit", count=-1)
    assert page["itemsPerPage"] == 0 and page["totalResults"] == 7


def test_audit_export_streams_json_lines_in_order(server):
    seed(server.services.db, server.clock)
    with server.client.stream(
        "GET", f"{server.url}/jit/v1/audit", params={"format": "jsonl", "filter": 'outcome eq "success"'}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [orjson.loads(line) for line in r.iter_lines() if line]
    assert [x["resourceId"] for x in lines] == ["u3", "u4", "u5", "u6"]
    r = server.client.get(f"{server.url}/jit/v1/audit", params={"format": "jsonl", "filter": "bad"})
    assert r.status_code == 400  # the filter is checked before the stream starts


def test_stream_pages_by_key_across_batches(db, clock):
    seed(db, clock)
    ids = [r["id"] for r in admin.stream(db, admin.VIEWS["audit"], batch=2)]
    assert ids == sorted(ids) and len(ids) == 7


def test_admin_schemas_stay_out_of_the_scim_registry(server):
    r = server.client.get("/ResourceTypes")
    assert {rt["name"] for rt in r.json()["Resources"]} == {"User", "Group"}


# ------------------------------------------------------------------ CLI


def run_cli(monkeypatch, db, *argv):
    from scimjit.cli import main

    monkeypatch.setenv("SCIMJIT_DATABASE_URL", db.test_url)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli_db(db, clock):
    """Seeded relative to the real clock: the CLI's `--since` and `purge` read the system time."""
    clock.set(datetime.now(UTC))
    seed(db, clock)
    return db


def test_cli_lists_views_as_tables_and_json(monkeypatch, cli_db):
    code, out, err = run_cli(
        monkeypatch, cli_db, "grants", "list", "--filter", 'status eq "active"', "--sort-by", "id"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "userId", "groupId", "status", "startsAt", "expiresAt", "createdBy"]
    assert [line.split()[0] for line in lines[2:]] == ["g0", "g2"]
    assert "(2 of 2)" in err

    code, out, _ = run_cli(
        monkeypatch, cli_db, "accounts", "list", "--filter", 'userName sw "user"', "--count", "1", "--json"
    )
    body = orjson.loads(out)
    assert code == 0 and body["totalResults"] == 3 and len(body["Resources"]) == 1

    code, out, _ = run_cli(monkeypatch, cli_db, "accounts", "list", "--application", "crm")
    assert code == 0 and "crm" in out and "wiki" not in out

    code, out, _ = run_cli(monkeypatch, cli_db, "requests", "list", "--json")
    assert orjson.loads(out)["Resources"][0]["id"] == "r1"

    code, _, err = run_cli(monkeypatch, cli_db, "grants", "list", "--filter", "status eq")
    assert code == 2 and "error:" in err


def test_cli_audit_table_json_lines_and_since(monkeypatch, cli_db):
    code, out, _ = run_cli(monkeypatch, cli_db, "audit", "--filter", 'action eq "login.refused"')
    assert code == 0 and out.count("login.refused") == 3 and "not_entitled" in out

    code, out, err = run_cli(monkeypatch, cli_db, "audit", "--json", "--since", "210m")
    records = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["resourceId"] for r in records] == ["u4", "u5", "u6"]
    assert "3 audit record(s) exported" in err


def test_cli_audit_purge_uses_the_retention_and_records_itself(monkeypatch, cli_db):
    code, _, err = run_cli(monkeypatch, cli_db, "audit", "purge", "--older-than", "1d")
    assert code == 0 and "purged 0" in err
    code, _, err = run_cli(monkeypatch, cli_db, "audit", "purge", "--older-than", "270m")
    assert code == 0 and "purged 3" in err
    code, out, _ = run_cli(monkeypatch, cli_db, "audit", "--json")
    actions = [orjson.loads(line)["action"] for line in out.splitlines()]
    assert actions == ["scim.user.create"] * 4 + ["audit.purge"] * 2
    monkeypatch.setenv("SCIMJIT_AUDIT_RETENTION", "0")
    code, _, err = run_cli(monkeypatch, cli_db, "audit", "purge")
    assert code == 0 and "keep forever" in err
