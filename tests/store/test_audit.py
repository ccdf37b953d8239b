"""The audit trail: the scrubber, `record` / `purge` on both databases, and one record per SCIM write with the
actor, resource, operation and changed attribute names, never a secret."""

from __future__ import annotations

from datetime import timedelta

import httpx
import orjson
import pytest
import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.redact import REDACTED, is_secret_key, mask, scrub
from scimjit.store import audit
from scimjit.store.tables import audit_log

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


# ------------------------------------------------------------------ scrubber


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "client_secret",
        "clientSecret",
        "id_token",
        "access-token",
        "Authorization",
        "refresh_token",
        "X-Api-Key",
        "api_key",
        "private_key",
        "cookie",
        "credentials",
        "newPassword",
    ],
)
def test_secret_keys_are_recognised(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["userName", "token_name", "changed", "reason", "application", "roles"])
def test_ordinary_keys_are_kept(key):
    assert not is_secret_key(key)


def test_scrub_drops_secret_keys_at_any_depth_and_masks_token_like_values():
    value = {
        "userName": "alice",
        "password": "hunter2",
        "nested": {"client_secret": "s3cret", "ok": [1, {"id_token": JWT, "keep": "yes"}]},
        "error": f"downstream said 401 for Bearer abcdefghijklmnop and {JWT}",
        "token": "sjt_0123abcd_secretpart",
        "note": "see sjt_0123abcd_secretpart",
        "when": __import__("datetime").datetime(2030, 1, 1),
        "ids": ("a", "b"),
    }
    out = scrub(value)
    assert out == {
        "userName": "alice",
        "nested": {"ok": [1, {"keep": "yes"}]},
        "error": f"downstream said 401 for {REDACTED} and {REDACTED}",
        "note": f"see {REDACTED}",
        "when": "2030-01-01 00:00:00",
        "ids": ["a", "b"],
    }
    text = orjson.dumps(out).decode()
    for secret in ("hunter2", "s3cret", JWT, "secretpart", "abcdefghijklmnop"):
        assert secret not in text


def test_every_character_whitespace_matches_is_the_space_or_unprintable():
    """`mask` skips its regular expression for a text with no `sjt_`, no `eyJ`, no ASCII space and only
    printable characters: sound only if no printable character but the space matches `\\s`."""
    import re
    import sys

    whitespace = re.compile(r"\s")
    found = [chr(c) for c in range(sys.maxunicode + 1) if whitespace.match(chr(c))]
    assert " " in found and "\u3000" in found  # the check sees the Unicode ones
    assert [c for c in found if c != " " and c.isprintable()] == []


@pytest.mark.parametrize("gap", [" ", "\t", "\n", "\xa0", "\u2003", "\u3000", "  \t"])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BASIC", "Basic"])
def test_a_credential_after_any_whitespace_is_masked(scheme, gap):
    assert mask(f"x{scheme}{gap}abcdefghijkl") == f"x{REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "/scim/v2/Users/sjt_0123abcd_secretpart",
        "/scim/v2/Users/" + JWT,
        "plain-prefix" + JWT,
    ],
)
def test_token_shapes_without_whitespace_are_masked(text):
    assert JWT not in mask(text) and "secretpart" not in mask(text) and REDACTED in mask(text)


@pytest.mark.parametrize(
    "text", ["/scim/v2/Users/000e91e8-709f-40f7-bf37-9c3e5618ba20", "127.0.0.1", "Bearer", "Bearer-x-y-z-w"]
)
def test_texts_that_hold_no_secret_are_kept_as_they_are(text):
    assert mask(text) is text


def test_scrub_treats_subclasses_and_other_containers_as_their_json_types():
    from collections import OrderedDict

    class Name(str):
        pass

    out = scrub(OrderedDict(a=Name("see sjt_0123abcd_secretpart"), b=(1, 2.5, True, None), password="x"))
    assert out == {"a": f"see {REDACTED}", "b": [1, 2.5, True, None]}
    assert type(out) is dict and type(out["b"]) is list


# ------------------------------------------------------------------ store


def _rows(db):
    with db.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.id)).mappings()]


def test_record_is_part_of_the_callers_transaction(db, clock):
    at = to_micros(clock.now())
    with db.write() as conn:
        audit.record(
            conn, actor="t", action="grant.create", outcome="success", details={"x": 1}, at_micros=at
        )
    with pytest.raises(RuntimeError), db.write() as conn:
        audit.record(conn, actor="t", action="grant.revoke", outcome="success", at_micros=at)
        raise RuntimeError("the change failed: its audit record must go too")
    rows = _rows(db)
    assert [r["action"] for r in rows] == ["grant.create"]
    assert rows[0]["details"] == {"x": 1} and rows[0]["at"] == at and rows[0]["actor"] == "t"


def test_record_scrubs_details_and_clips_long_fields(db, clock):
    audit.record_now(
        db,
        at=clock.now(),
        actor="x" * 500,
        action="login.refused",
        outcome="refused",
        resource_type="Application",
        resource_id="wiki",
        request_id="r1",
        details={"reason": "expired", "id_token": JWT, "claims": {"nonce": "n", "password": "p"}},
    )
    (row,) = _rows(db)
    assert len(row["actor"]) == 256
    assert row["details"] == {"reason": "expired", "claims": {"nonce": "n"}}
    assert (row["resource_type"], row["resource_id"], row["request_id"]) == ("Application", "wiki", "r1")


def test_purge_deletes_only_what_is_older_in_batches(db, clock):
    now = clock.now()
    with db.write() as conn:
        for days in range(10):
            audit.record(
                conn,
                actor="t",
                action="scim.user.create",
                outcome="success",
                at_micros=to_micros(now - timedelta(days=days)),
            )
    seen: list[int] = []
    deleted = audit.purge(db, now - timedelta(days=4, hours=12), batch=2, progress=seen.append)
    assert deleted == 5 and sum(seen) == 5 and len(seen) == 3
    ages = sorted((to_micros(now) - r["at"]) // 86_400_000_000 for r in _rows(db))
    assert ages == [0, 1, 2, 3, 4]
    assert audit.purge_expired(db, now, 0) == 0  # 0 keeps forever
    assert audit.purge_expired(db, now, 2.5 * 86400) == 2
    assert len(_rows(db)) == 3


def test_retention_setting_parses_durations():
    from scimjit.config import Settings

    assert Settings.load(environ={}).audit_retention == 365 * 86400
    assert Settings.load(environ={"SCIMJIT_AUDIT_RETENTION": "90d"}).audit_retention == 90 * 86400


# ------------------------------------------------------------------ SCIM writes over HTTP


def _audit(server, **params):
    r = server.client.get(f"{server.url}/jit/v1/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json()["Resources"]


def test_every_scim_write_is_audited_with_actor_resource_operation_and_changed_names(server):
    writer = server.token("entra-prod", "scim:write")
    c = httpx.Client(base_url=server.scim, headers={"Authorization": f"Bearer {writer}"})
    r = c.post(
        "/Users",
        json={"schemas": [USER], "userName": "alice", "password": "Hunter2!", "title": "Eng"},
        headers={"X-Request-Id": "req-create-1"},
    )
    assert r.status_code == 201 and r.headers["x-request-id"] == "req-create-1"
    uid = r.json()["id"]
    r = c.put(
        f"/Users/{uid}",
        json={"schemas": [USER], "userName": "alice", "title": "Lead", "password": "N3w!pass"},
    )
    assert r.status_code == 200
    put_request_id = r.headers["x-request-id"]
    r = c.patch(
        f"/Users/{uid}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "name.familyName", "value": "Smith"},
                {"op": "add", "path": f"{ENTERPRISE}:department", "value": "R&D"},
            ],
        },
    )
    assert r.status_code == 200
    other = c.post("/Users", json={"schemas": [USER], "userName": "bob"}).json()["id"]
    g = c.post(
        "/Groups", json={"schemas": [GROUP], "displayName": "Admins", "members": [{"value": uid}]}
    ).json()
    r = c.patch(
        f"/Groups/{g['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {"op": "add", "path": "members", "value": [{"value": other}]},
                {"op": "remove", "path": f'members[value eq "{uid}"]'},
            ],
        },
    )
    assert r.status_code == 200
    r = c.put(
        f"/Groups/{g['id']}",
        json={"schemas": [GROUP], "displayName": "Admins 2", "members": [{"value": other}]},
    )
    assert r.status_code == 200
    assert c.delete(f"/Groups/{g['id']}").status_code == 204
    assert c.delete(f"/Users/{uid}").status_code == 204

    records = _audit(server, filter='action sw "scim."', sortBy="id")
    summary = [(r["action"], r["actor"], r["resourceType"], r["outcome"]) for r in records]
    assert summary == [
        ("scim.user.create", "entra-prod", "User", "success"),
        ("scim.user.replace", "entra-prod", "User", "success"),
        ("scim.user.patch", "entra-prod", "User", "success"),
        ("scim.user.create", "entra-prod", "User", "success"),
        ("scim.group.create", "entra-prod", "Group", "success"),
        ("scim.group.patch", "entra-prod", "Group", "success"),
        ("scim.group.replace", "entra-prod", "Group", "success"),
        ("scim.group.delete", "entra-prod", "Group", "success"),
        ("scim.user.delete", "entra-prod", "User", "success"),
    ]
    create, replace, patch, _, gcreate, gpatch, gput, gdelete, delete = records
    assert create["resourceId"] == uid and create["requestId"] == "req-create-1"
    # the client chose that request id: kept, and the row says whose word it is
    assert create["details"] == {
        "userName": "alice",
        "changed": ["password", "title", "userName"],
        "requestIdFrom": "client",
    }
    assert replace["requestId"] == put_request_id
    assert "requestIdFrom" not in replace["details"]  # scimjit made this one
    assert replace["details"]["changed"] == ["password", "title"]
    assert patch["details"]["changed"] == ["name", f"{ENTERPRISE}:department"]  # name was absent: all of it
    assert gcreate["details"] == {
        "displayName": "Admins",
        "changed": ["displayName", "members"],
        "membersAdded": 1,
        "membersRemoved": 0,
        "addedIds": [uid],
        "removedIds": [],
    }
    assert gpatch["details"]["addedIds"] == [other] and gpatch["details"]["removedIds"] == [uid]
    # a PUT re-sending an unchanged member records no membership change for it
    assert gput["details"]["changed"] == ["displayName"] and "addedIds" not in gput["details"]
    assert gdelete["resourceId"] == g["id"] and delete["details"] == {"userName": "alice"}
    assert all(r["at"].endswith("Z") for r in records)
    dump = orjson.dumps(_audit(server)).decode()
    assert "Hunter2!" not in dump and "N3w!pass" not in dump and writer not in dump


def test_member_lists_in_audit_details_are_capped_but_counted(server):
    ids = [
        server.client.post("/Users", json={"schemas": [USER], "userName": f"u{i}"}).json()["id"]
        for i in range(105)
    ]
    r = server.client.post(
        "/Groups", json={"schemas": [GROUP], "displayName": "Big", "members": [{"value": i} for i in ids]}
    )
    assert r.status_code == 201
    (record,) = _audit(server, filter='action eq "scim.group.create"')
    assert record["details"]["membersAdded"] == 105 and len(record["details"]["addedIds"]) == audit.MAX_IDS


def test_failed_writes_leave_no_audit_record(server):
    server.client.post("/Users", json={"schemas": [USER], "userName": "dup"})
    r = server.client.post("/Users", json={"schemas": [USER], "userName": "dup"})
    assert r.status_code == 409
    assert len(_audit(server, filter='action eq "scim.user.create"')) == 1


def test_bulk_writes_are_audited_with_the_bulk_callers_identity(server):
    r = server.client.post(
        "/Bulk",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "a",
                    "data": {"schemas": [USER], "userName": "b1"},
                },
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g",
                    "data": {"schemas": [GROUP], "displayName": "G", "members": [{"value": "bulkId:a"}]},
                },
            ],
        },
    )
    assert r.status_code == 200
    records = _audit(server)
    assert [x["action"] for x in records] == ["scim.user.create", "scim.group.create"]
    assert {x["actor"] for x in records} == {"test-admin"}
    assert len({x["requestId"] for x in records}) == 1
