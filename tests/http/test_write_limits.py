"""The write-side limits of issue 11 §1b over HTTP: operations per PATCH (`patch_max_operations`) and the nesting of a Bulk operation's data (bulkId resolution); each refused with
a SCIM error, nothing written, and no traceback in the log."""

from __future__ import annotations

import logging
from typing import Any

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def _add_emails(count: int) -> dict[str, Any]:
    ops = [{"op": "add", "path": "emails", "value": [{"value": f"e{i}@example.com"}]} for i in range(count)]
    return {"schemas": [PATCH_OP], "Operations": ops}


def test_patch_over_the_operation_cap_is_too_many_and_changes_nothing(server):
    server.services.settings.patch_max_operations = 5
    created = server.client.post("/Users", json={"schemas": [USER], "userName": "capped"}).json()
    r = server.client.patch(f"/Users/{created['id']}", json=_add_emails(6))
    assert r.status_code == 400 and r.json()["scimType"] == "tooMany"
    assert "6 operations" in r.json()["detail"] and "at most 5" in r.json()["detail"]
    after = server.client.get(f"/Users/{created['id']}").json()
    assert "emails" not in after and after["meta"]["version"] == created["meta"]["version"]
    r = server.client.patch(f"/Users/{created['id']}", json=_add_emails(5))
    assert r.status_code == 200 and len(r.json()["emails"]) == 5


def test_the_cap_applies_inside_bulk(server):
    server.services.settings.patch_max_operations = 2
    uid = server.client.post("/Users", json={"schemas": [USER], "userName": "bulk-capped"}).json()["id"]
    body = {
        "schemas": [BULK],
        "Operations": [{"method": "PATCH", "path": f"/Users/{uid}", "data": _add_emails(3)}],
    }
    result = server.client.post("/Bulk", json=body).json()["Operations"][0]
    assert result["status"] == "400" and result["response"]["scimType"] == "tooMany"
    assert "emails" not in server.client.get(f"/Users/{uid}").json()


def test_the_service_provider_config_stays_plain_rfc_7643(server):
    """No scimjit extension object in it: strict clients (scim2-tester) refuse any key RFC 7643 does not define."""
    spc = server.client.get("/ServiceProviderConfig").json()
    assert spc["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
    assert not [key for key in spc if key.startswith("urn:")]


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"x": value}
    return value


def test_deeply_nested_bulk_data_is_invalid_syntax_without_a_traceback(server, caplog):
    caplog.set_level(logging.DEBUG)
    body = {
        "schemas": [BULK],
        "Operations": [
            {"method": "POST", "bulkId": "a", "path": "/Users", "data": {"schemas": [USER], "userName": "a"}},
            {
                "method": "POST",
                "bulkId": "b",
                "path": "/Users",
                "data": {"schemas": [USER], "userName": "b", "nickName": _nested(900, "bulkId:a")},
            },
            {"method": "POST", "bulkId": "c", "path": "/Users", "data": {"schemas": [USER], "userName": "c"}},
        ],
    }
    r = server.client.post("/Bulk", json=body)
    assert r.status_code == 200
    first, deep, last = r.json()["Operations"]
    assert first["status"] == "201" and last["status"] == "201"  # the others are not held back
    assert deep["status"] == "400" and deep["response"]["scimType"] == "invalidSyntax"
    assert "nest" in deep["response"]["detail"]
    names = {u["userName"] for u in server.client.get("/Users").json()["Resources"]}
    assert names == {"a", "c"}
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_bulk_data_of_ordinary_depth_still_resolves_bulk_ids(server):
    body = {
        "schemas": [BULK],
        "Operations": [
            {"method": "POST", "bulkId": "u", "path": "/Users", "data": {"schemas": [USER], "userName": "u"}},
            {
                "method": "POST",
                "bulkId": "g",
                "path": "/Groups",
                "data": {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": "g",
                    "members": [{"value": "bulkId:u"}],
                },
            },
        ],
    }
    user, group = server.client.post("/Bulk", json=body).json()["Operations"]
    members = server.client.get(group["location"]).json()["members"]
    assert [m["value"] for m in members] == [user["location"].rsplit("/", 1)[1]]
