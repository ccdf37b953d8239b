"""The SCIM protocol over a real socket: every endpoint, the error paths, and the state each call leaves."""

from __future__ import annotations

import httpx
import pytest

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def make_user(server, user_name="bjensen", **extra):
    body = {
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
    }
    body.update(extra)
    r = server.client.post("/Users", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def make_group(server, name="Admins", members=()):
    r = server.client.post(
        "/Groups", json={"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
    )
    assert r.status_code == 201, r.text
    return r.json()


# ------------------------------------------------------------------ auth


def test_missing_token_is_401_scim_error_with_challenge(server):
    r = httpx.get(f"{server.scim}/Users")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    assert body["schemas"] == [ERROR] and body["status"] == "401"
    assert r.headers["content-type"].startswith("application/scim+json")


def test_bad_token_is_401(server):
    r = httpx.get(f"{server.scim}/Users", headers={"Authorization": "Bearer sjt_nope_nope"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_read_scope_cannot_write_and_revoked_token_is_refused(server):
    token = server.token("reader", "scim:read")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.scim}/Users", headers=headers).status_code == 200
    r = httpx.post(f"{server.scim}/Users", headers=headers, json={"schemas": [USER], "userName": "x"})
    assert r.status_code == 403
    assert server.client.get("/Users", params={"filter": 'userName eq "x"'}).json()["totalResults"] == 0
    server.services.tokens.revoke("reader")
    assert httpx.get(f"{server.scim}/Users", headers=headers).status_code == 401


def test_tokens_are_stored_hashed(server):
    import sqlalchemy as sa

    from scimjit.store.tables import tokens

    token = server.token("hashed", "scim:read")
    secret = token.split("_", 2)[2]  # sjt_<hex id>_<secret>; the secret itself may hold "_"
    with server.services.db.read() as conn:
        row = conn.execute(sa.select(tokens).where(tokens.c.name == "hashed")).one()
    assert secret not in str(tuple(row))


def test_discovery_needs_a_token_by_default(server):
    assert httpx.get(f"{server.scim}/ServiceProviderConfig").status_code == 401
    login_only = server.token("login-only", "login")
    r = httpx.get(f"{server.scim}/ServiceProviderConfig", headers={"Authorization": f"Bearer {login_only}"})
    assert r.status_code == 200


# ------------------------------------------------------------------ discovery


def test_service_provider_config_advertises_what_is_enforced(server):
    spc = server.client.get("/ServiceProviderConfig").json()
    settings = server.services.settings
    assert spc["patch"]["supported"] and spc["etag"]["supported"] and spc["sort"]["supported"]
    assert spc["bulk"]["maxOperations"] == settings.max_bulk_operations
    assert spc["bulk"]["maxPayloadSize"] == settings.max_bulk_payload_bytes
    assert spc["filter"]["maxResults"] == settings.max_page_size
    assert spc["pagination"]["cursor"] is True


def test_resource_types_and_schemas_come_from_the_schema_files(server):
    rts = server.client.get("/ResourceTypes").json()
    names = {rt["name"]: rt for rt in rts["Resources"]}
    assert set(names) == {"User", "Group"}
    assert names["User"]["schemaExtensions"][0]["schema"] == ENTERPRISE
    assert server.client.get("/ResourceTypes/User").json()["endpoint"] == "/Users"
    schemas = server.client.get("/Schemas").json()["Resources"]
    ids = {s["id"] for s in schemas}
    assert {USER, GROUP, ENTERPRISE} <= ids
    user_schema = server.client.get(f"/Schemas/{USER}").json()
    password = next(a for a in user_schema["attributes"] if a["name"] == "password")
    assert password["returned"] == "never"
    assert server.client.get("/Schemas/urn:nope").status_code == 404


def test_me_is_501(server):
    r = server.client.get("/Me")
    assert r.status_code == 501 and r.json()["status"] == "501"


# ------------------------------------------------------------------ errors


def test_unknown_path_is_scim_404(server):
    r = server.client.get("/Nope")
    assert r.status_code == 404 and r.json()["schemas"] == [ERROR]
    r = server.client.get("/Users/does-not-exist")
    assert r.status_code == 404 and r.json()["status"] == "404"


def test_malformed_json_is_invalid_syntax(server):
    r = server.client.post("/Users", content=b"{nope", headers={"Content-Type": "application/scim+json"})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidSyntax"


def test_body_over_limit_is_413_and_nothing_is_written(server):
    big = (
        b'{"schemas":["'
        + USER.encode()
        + b'"],"userName":"big","nickName":"'
        + b"x" * (2 * 1024 * 1024)
        + b'"}'
    )
    r = server.client.post("/Users", content=big, headers={"Content-Type": "application/scim+json"})
    assert r.status_code == 413
    assert server.client.get("/Users", params={"filter": 'userName eq "big"'}).json()["totalResults"] == 0


def test_plain_json_is_accepted_and_scim_json_returned(server):
    r = server.client.post(
        "/Users",
        content=b'{"schemas":["' + USER.encode() + b'"],"userName":"plain"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/scim+json"


# ------------------------------------------------------------------ users


def test_user_lifecycle_with_etags(server):
    created = make_user(server, emails=[{"value": "bjensen@example.com", "type": "work", "primary": True}])
    uid = created["id"]
    assert created["meta"]["version"] == 'W/"1"'
    assert created["meta"]["location"].endswith(f"/Users/{uid}")
    r = server.client.get(f"/Users/{uid}")
    assert r.headers["etag"] == 'W/"1"' and r.json()["userName"] == "bjensen"
    assert server.client.get(f"/Users/{uid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304

    replaced = server.client.put(
        f"/Users/{uid}",
        json={"schemas": [USER], "userName": "bjensen", "displayName": "Babs"},
        headers={"If-Match": 'W/"1"'},
    )
    assert replaced.status_code == 200 and replaced.json()["meta"]["version"] == 'W/"2"'
    assert "emails" not in replaced.json()  # PUT replaces

    stale = server.client.put(
        f"/Users/{uid}",
        json={"schemas": [USER], "userName": "bjensen", "displayName": "Stale"},
        headers={"If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412
    assert server.client.get(f"/Users/{uid}").json()["displayName"] == "Babs"

    assert server.client.delete(f"/Users/{uid}").status_code == 204
    assert server.client.get(f"/Users/{uid}").status_code == 404


def test_user_name_is_unique_case_insensitively(server):
    make_user(server, "Alice")
    r = server.client.post("/Users", json={"schemas": [USER], "userName": "alice"})
    assert r.status_code == 409 and r.json()["scimType"] == "uniqueness"
    bob = make_user(server, "bob")
    r = server.client.put(f"/Users/{bob['id']}", json={"schemas": [USER], "userName": "ALICE"})
    assert r.status_code == 409
    r = server.client.patch(
        f"/Users/{bob['id']}",
        json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": "aLiCe"}]},
    )
    assert r.status_code == 409
    assert server.client.get(f"/Users/{bob['id']}").json()["userName"] == "bob"


def test_id_meta_groups_on_input_are_ignored_and_id_change_refused(server):
    r = server.client.post(
        "/Users",
        json={
            "schemas": [USER],
            "userName": "ro",
            "id": "mine",
            "meta": {"version": "x"},
            "groups": [{"value": "g"}],
        },
    )
    assert r.status_code == 201
    user = r.json()
    assert user["id"] != "mine" and "groups" not in user
    r = server.client.put(f"/Users/{user['id']}", json={"schemas": [USER], "userName": "ro", "id": "other"})
    assert r.status_code == 400 and r.json()["scimType"] == "mutability"


def test_password_is_never_returned_nor_stored_in_plaintext(server):
    import sqlalchemy as sa

    from scimjit.store.tables import users

    user = make_user(server, "pw", password="t1meMa$heen")
    assert "password" not in user
    assert (
        "password" not in server.client.get(f"/Users/{user['id']}", params={"attributes": "password"}).json()
    )
    with server.services.db.read() as conn:
        row = conn.execute(sa.select(users).where(users.c.id == user["id"])).one()
    assert "t1meMa$heen" not in str(tuple(row))
    assert row.password_hash.startswith("scrypt$")


def test_attributes_and_excluded_attributes(server):
    user = make_user(server, "proj", emails=[{"value": "p@example.com", "type": "work"}], title="Boss")
    r = server.client.get(f"/Users/{user['id']}", params={"attributes": "userName,emails.value"})
    body = r.json()
    assert body["userName"] == "proj" and body["emails"] == [{"value": "p@example.com"}]
    assert "title" not in body and "name" not in body and body["id"] == user["id"]
    r = server.client.get(f"/Users/{user['id']}", params={"excludedAttributes": "title,name"})
    body = r.json()
    assert "title" not in body and "name" not in body and body["userName"] == "proj"


def test_patch_returns_resource_or_204_when_asked_for_nothing(server):
    user = make_user(server, "patchy")
    ops = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "P"}]}
    r = server.client.patch(f"/Users/{user['id']}", json=ops, params={"attributes": "displayName"})
    assert r.status_code == 200 and r.json()["displayName"] == "P" and "name" not in r.json()
    assert r.headers["etag"] == 'W/"2"'
    ops["Operations"][0]["value"] = "Q"
    r = server.client.patch(f"/Users/{user['id']}", json=ops, headers={"Prefer": "return=minimal"})
    assert r.status_code == 204
    assert server.client.get(f"/Users/{user['id']}").json()["displayName"] == "Q"


# ------------------------------------------------------------------ groups


def test_group_members_and_user_groups(server):
    alice = make_user(server, "alice")
    bob = make_user(server, "bob")
    group = make_group(server, "Engineers", [alice["id"]])
    assert [m["value"] for m in group["members"]] == [alice["id"]]
    gid = group["id"]
    r = server.client.patch(
        f"/Groups/{gid}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": bob["id"]}]}],
        },
    )
    assert r.status_code == 200
    assert {m["value"] for m in r.json()["members"]} == {alice["id"], bob["id"]}
    assert server.client.get(f"/Users/{bob['id']}").json()["groups"][0]["value"] == gid
    r = server.client.patch(
        f"/Groups/{gid}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "remove", "path": f'members[value eq "{alice["id"]}"]'}],
        },
    )
    assert [m["value"] for m in r.json()["members"]] == [bob["id"]]
    assert "groups" not in server.client.get(f"/Users/{alice['id']}").json()
    no_members = server.client.get(f"/Groups/{gid}", params={"excludedAttributes": "members"}).json()
    assert "members" not in no_members and no_members["displayName"] == "Engineers"


def test_member_ids_need_not_exist_yet_and_grant_nothing(server):
    group = make_group(server, "Solo")
    r = server.client.patch(
        f"/Groups/{group['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": "ghost"}]}],
        },
    )
    assert r.status_code == 200
    after = server.client.get(f"/Groups/{group['id']}").json()
    assert after["members"] == [{"value": "ghost", "$ref": f"{server.scim}/Users/ghost", "type": "User"}]
    assert after["meta"]["version"] == 'W/"2"'


def test_a_group_cannot_contain_itself(server):
    group = make_group(server, "Loop")
    r = server.client.patch(
        f"/Groups/{group['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": group["id"]}]}],
        },
    )
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"
    assert "members" not in server.client.get(f"/Groups/{group['id']}").json()


def test_deleting_a_user_removes_its_memberships(server):
    alice = make_user(server, "alice")
    group = make_group(server, "G", [alice["id"]])
    server.client.delete(f"/Users/{alice['id']}")
    assert "members" not in server.client.get(f"/Groups/{group['id']}").json()


# ------------------------------------------------------------------ lists


def test_list_paging_and_filter(server):
    for i in range(7):
        make_user(server, f"user{i}")
    r = server.client.get("/Users", params={"startIndex": 3, "count": 2, "sortBy": "userName"})
    body = r.json()
    assert body["totalResults"] == 7 and body["itemsPerPage"] == 2 and body["startIndex"] == 3
    assert [u["userName"] for u in body["Resources"]] == ["user2", "user3"]
    r = server.client.get("/Users", params={"count": 0})
    assert r.json()["totalResults"] == 7 and r.json()["Resources"] == []
    r = server.client.get("/Users", params={"filter": 'userName eq "USER5"'})
    assert [u["userName"] for u in r.json()["Resources"]] == ["user5"]
    r = server.client.get("/Users", params={"filter": "userName eq"})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter"
    r = server.client.post(
        "/Users/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'userName sw "user"',
            "count": 3,
        },
    )
    assert r.json()["totalResults"] == 7 and len(r.json()["Resources"]) == 3


def test_root_search_spans_users_and_groups(server):
    make_user(server, "zed", displayName="Zed")
    make_group(server, "Zed Team")
    r = server.client.post(
        "/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'displayName sw "zed"',
        },
    )
    assert r.status_code == 200
    kinds = sorted(res["meta"]["resourceType"] for res in r.json()["Resources"])
    assert kinds == ["Group", "User"] and r.json()["totalResults"] == 2


# ------------------------------------------------------------------ bulk


def test_bulk_with_bulk_id_references(server):
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u1",
                "data": {"schemas": [USER], "userName": "bulk1"},
            },
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g1",
                "data": {"schemas": [GROUP], "displayName": "BulkGroup", "members": [{"value": "bulkId:u1"}]},
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "dup",
                "data": {"schemas": [USER], "userName": "bulk1"},
            },
            {"method": "DELETE", "path": "/Users/unknown"},
        ],
    }
    r = server.client.post("/Bulk", json=body)
    assert r.status_code == 200
    results = r.json()["Operations"]
    assert [o["status"] for o in results] == ["201", "201", "409", "404"]
    group = server.client.get(results[1]["location"].split("/scim/v2")[1]).json()
    user_id = results[0]["location"].rsplit("/", 1)[1]
    assert [m["value"] for m in group["members"]] == [user_id]


def test_bulk_fail_on_errors_stops(server):
    ops = [
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": f"b{i}",
            "data": {"schemas": [USER], "userName": "same"},
        }
        for i in range(4)
    ]
    r = server.client.post(
        "/Bulk",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "failOnErrors": 1,
            "Operations": ops,
        },
    )
    assert [o["status"] for o in r.json()["Operations"]] == ["201", "409"]


def test_bulk_limits_are_413(server):
    server.services.settings.max_bulk_operations = 2
    ops = [{"method": "DELETE", "path": f"/Users/x{i}"} for i in range(3)]
    r = server.client.post(
        "/Bulk", json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}
    )
    assert r.status_code == 413
    server.services.settings.max_bulk_payload_bytes = 100
    r = server.client.post(
        "/Bulk",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": ops[:1],
            "pad": "x" * 200,
        },
    )
    assert r.status_code == 413


BODIES = {
    "put": {"schemas": [USER], "userName": "x"},
    "patch": {"schemas": [PATCH], "Operations": [{"op": "add", "path": "title", "value": "t"}]},
}


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_writes_to_missing_resources_are_404(server, method):
    kwargs = {"json": BODIES[method]} if method in BODIES else {}
    r = getattr(server.client, method)("/Users/missing", **kwargs)
    assert r.status_code == 404 and r.json()["status"] == "404"


def test_root_search_honours_excluded_attributes_per_type(server):
    alice = make_user(server, "zoe", displayName="Zoe")
    make_group(server, "Zoe Team", [alice["id"]])
    r = server.client.post(
        "/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'displayName sw "zoe"',
            "excludedAttributes": ["name", "members"],
        },
    )
    resources = r.json()["Resources"]
    assert len(resources) == 2
    assert all("name" not in res and "members" not in res for res in resources)


def test_member_display_is_kept_as_sent(server):
    alice = make_user(server, "alice")
    group = make_group(server, "Shown")
    server.client.patch(
        f"/Groups/{group['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {"op": "add", "path": "members", "value": [{"value": alice["id"], "display": "Alice A."}]}
            ],
        },
    )
    members = server.client.get(f"/Groups/{group['id']}").json()["members"]
    assert members == [
        {
            "value": alice["id"],
            "$ref": f"{server.scim}/Users/{alice['id']}",
            "type": "User",
            "display": "Alice A.",
        }
    ]


def test_replacing_members_keeps_the_ttl_clock_of_members_that_stay(server):
    ttl_urn = "urn:scimjit:params:scim:schemas:extension:jit:2.0:Group"
    alice = make_user(server, "alice")
    bob = make_user(server, "bob")
    r = server.client.post(
        "/Groups",
        json={
            "schemas": [GROUP, ttl_urn],
            "displayName": "Temp",
            ttl_urn: {"membershipTTL": 3600},
            "members": [{"value": alice["id"]}],
        },
    )
    gid = r.json()["id"]
    server.clock.advance(3000)
    replace = {
        "schemas": [PATCH],
        "Operations": [
            {"op": "replace", "path": "members", "value": [{"value": alice["id"]}, {"value": bob["id"]}]}
        ],
    }
    assert server.client.patch(f"/Groups/{gid}", json=replace).status_code == 200
    server.clock.advance(700)  # alice's hour is up; bob's began at the replace
    members = server.client.get(f"/Groups/{gid}").json()["members"]
    assert [m["value"] for m in members] == [bob["id"]]
    assert "groups" not in server.client.get(f"/Users/{alice['id']}").json()


def test_put_without_active_keeps_the_users_active_state(server):
    user = make_user(server, "quiet", active=False)
    r = server.client.put(f"/Users/{user['id']}", json={"schemas": [USER], "userName": "quiet", "title": "T"})
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["title"] == "T"
    r = server.client.put(
        f"/Users/{user['id']}", json={"schemas": [USER], "userName": "quiet", "active": True}
    )
    assert r.json()["active"] is True


def test_re_adding_an_expired_member_starts_a_fresh_lifetime(server):
    ttl_urn = "urn:scimjit:params:scim:schemas:extension:jit:2.0:Group"
    alice = make_user(server, "alice")
    gid = server.client.post(
        "/Groups",
        json={
            "schemas": [GROUP, ttl_urn],
            "displayName": "T",
            ttl_urn: {"membershipTTL": 60},
            "members": [{"value": alice["id"]}],
        },
    ).json()["id"]
    server.clock.advance(61)  # expired, not yet swept
    assert "members" not in server.client.get(f"/Groups/{gid}").json()
    add = {
        "schemas": [PATCH],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": alice["id"]}]}],
    }
    assert server.client.patch(f"/Groups/{gid}", json=add).status_code == 200
    server.clock.advance(59)
    assert [m["value"] for m in server.client.get(f"/Groups/{gid}").json()["members"]] == [alice["id"]]
    server.clock.advance(2)
    assert "members" not in server.client.get(f"/Groups/{gid}").json()
