"""Real Entra ID and Okta requests (tests/idp_captures, MIT-licensed data of elimity-com/scim) replayed against a running server; ids in the
captures are the capturing server's, so each scenario maps them to the ids this server hands out."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

CAPTURES = (
    Path(__file__).resolve().parents[1] / "idp_captures"
)  # inside the repository: a fresh clone has them


def capture(idp: str, name: str) -> dict:
    return json.loads((CAPTURES / idp / f"{name}.json").read_text())


def replay(server, idp: str, name: str, ids: dict[str, str] | None = None, headers: dict | None = None):
    """Send a captured request, with capture ids replaced by ours; returns the response."""
    cap = capture(idp, name)
    text = orjson.dumps({"path": cap["path"], "body": cap.get("request")}).decode()
    for theirs, ours in (ids or {}).items():
        text = text.replace(theirs, ours)
    sent = orjson.loads(text)
    parts = urlsplit(sent["path"])
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    kwargs = {"params": params, "headers": headers or {}}
    if sent["body"] is not None:
        kwargs["json"] = sent["body"]
    return server.client.request(cap["method"], parts.path, **kwargs)


def test_entra_provisioning_cycle(server):
    missing = replay(server, "entra", "get_user_query_0")
    assert missing.status_code == 200
    assert missing.json()["totalResults"] == 0 and missing.json()["Resources"] == []

    created = replay(server, "entra", "create_user")
    assert created.status_code == 201
    user = created.json()
    sent = capture("entra", "create_user")["request"]
    assert user["userName"] == sent["userName"] and user["externalId"] == sent["externalId"]
    assert user["emails"][0]["value"] == sent["emails"][0]["value"]
    uid = user["id"]

    found = server.client.get("/Users", params={"filter": f'userName eq "{sent["userName"].upper()}"'}).json()
    assert [u["id"] for u in found["Resources"]] == [uid]

    group = replay(server, "entra", "create_group")
    assert group.status_code == 201
    gid = group.json()["id"]
    by_name = replay(server, "entra", "get_group_dn").json()
    assert [g["id"] for g in by_name["Resources"]] == [gid]
    lookup = server.client.get(f"/Groups/{gid}", params={"excludedAttributes": "members"})
    assert lookup.status_code == 200 and "members" not in lookup.json()

    update = capture("entra", "update_group")
    r = replay(
        server, "entra", "update_group", {update["path"].rsplit("/", 1)[1]: gid, "f648f8d5ea4e4cd38e9c": uid}
    )
    assert r.status_code == 200
    after = server.client.get(f"/Groups/{gid}").json()
    assert after["displayName"] == update["request"]["Operations"][0]["value"]
    assert "members" not in after  # added then removed with Entra's legacy `Remove members` value list

    user_patch = capture("entra", "update_user")
    r = replay(server, "entra", "update_user", {user_patch["path"].rsplit("/", 1)[1]: uid})
    assert r.status_code == 200
    stored = server.client.get(f"/Users/{uid}").json()
    ops = {o["path"]: o["value"] for o in user_patch["request"]["Operations"]}
    assert stored["emails"] == [
        {"primary": True, "type": "work", "value": ops['emails[type eq "work"].value']}
    ]
    assert stored["name"]["familyName"] == "updatedFamilyName"
    assert stored["userName"] == ops["userName"] and stored["active"] is False


def test_entra_legacy_string_booleans_and_member_removal(server):
    user = server.client.post(
        "/Users",
        json={"schemas": [capture("entra", "create_user")["request"]["schemas"][0]], "userName": "legacy"},
    ).json()
    r = server.client.patch(
        f"/Users/{user['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
        },
    )
    assert r.status_code == 200 and r.json()["active"] is False
    filtered = server.client.get("/Users", params={"filter": "active eq false"}).json()
    assert [u["id"] for u in filtered["Resources"]] == [user["id"]]


def test_okta_provisioning_cycle(server):
    okta = {"User-Agent": "Okta SCIM Client 1.0.0"}
    exists = replay(server, "okta", "user_exists", headers=okta)
    assert exists.status_code == 200 and exists.json()["totalResults"] == 0

    created = replay(server, "okta", "create_user", headers=okta)
    assert created.status_code == 201
    user = created.json()
    assert "password" not in user and user["userName"] == "test.user@okta.local"
    uid = user["id"]
    again = replay(server, "okta", "create_user", headers=okta)
    assert again.status_code == 409 and again.json()["scimType"] == "uniqueness"
    assert replay(server, "okta", "user_exists", headers=okta).json()["totalResults"] == 1

    theirs = capture("okta", "update_user")["path"].rsplit("/", 1)[1]
    put = replay(server, "okta", "update_user", {theirs: uid}, headers=okta)
    assert put.status_code == 200
    assert server.client.get(f"/Users/{uid}").json()["name"] == {
        "givenName": "Another",
        "middleName": "Excited",
        "familyName": "User",
    }

    deactivate = replay(server, "okta", "update_user_patch", {theirs: uid}, headers=okta)
    assert deactivate.status_code == 200 and deactivate.json()["active"] is False
    assert server.client.get(f"/Users/{uid}").json()["active"] is False

    group = replay(server, "okta", "create_group", headers=okta)
    assert group.status_code == 201
    gid = group.json()["id"]
    gtheirs = capture("okta", "update_group_name")["path"].rsplit("/", 1)[1]
    other = server.client.post(
        "/Users", json={"schemas": user["schemas"], "userName": "other@okta.local"}
    ).json()
    r = replay(
        server,
        "okta",
        "update_group_membership",
        {
            gtheirs: gid,
            "23a35c27-23d3-4c03-b4c5-6443c09e7173": uid,
            "89bb1940-b905-4575-9e7f-6f887cfb368e": other["id"],
        },
        headers=okta,
    )
    assert r.status_code == 200  # a small group answers with itself (`group_patch_response_max_members`)
    members = server.client.get(f"/Groups/{gid}").json()["members"]
    assert sorted(m["value"] for m in members) == sorted([uid, other["id"]])

    renamed = replay(server, "okta", "update_group_name", {gtheirs: gid}, headers=okta)
    assert renamed.status_code == 200
    assert server.client.get(f"/Groups/{gid}").json()["displayName"] == "Test SCIMv2"
    assert len(server.client.get(f"/Groups/{gid}").json()["members"]) == 2  # a rename keeps the members

    wrong = server.client.get("/Users", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
