"""What IdPs send that the schema does not say the same way: foreign schema URNs, unqualified extension names,
Entra's manager shapes, and unknown attributes, which are ignored but never silently (audited, counted, and
refused under `strict_attributes`). Over a real socket; the state is read back after every write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from scimjit.scim.errors import ScimError
from scimjit.scim.filter import parse_filter
from scimjit.scim.ignored import MAX_NAMES, Ignored
from scimjit.scim.patch import apply_patch
from scimjit.scim.resource import normalise
from scimjit.scim.schema import ENTERPRISE_URN, AmbiguousAttribute, Registry, load_registry
from scimjit.store.tables import audit_log
from tests.conftest import Server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
OKTA_GROUP = "urn:okta:scim:schemas:extension:okta:2.0:Group"  # an Okta-like extension URN
ACME = "urn:example:params:scim:schemas:extension:acme:2.0:User"


@pytest.fixture
def strict_server(db: Any, clock: Any) -> Iterator[Server]:
    from scimjit.config import Settings
    from scimjit.http.app import create_app
    from scimjit.services import Services
    from tests.live_server import serve

    settings = Settings.load(
        environ={"SCIMJIT_STRICT_ATTRIBUTES": "true"},
        database_url=db.url,
        token_cache_seconds=0,
    )
    assert settings.strict_attributes is True
    services = Services.build(settings, db=db, clock=clock)
    admin = services.tokens.create("test-admin", ["admin"])
    with serve(create_app(services=services)) as url:
        srv = Server(url, services, clock, admin)
        yield srv
        srv.client.close()


def patch_body(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(ops)}


def audits(server: Server, action: str, resource_id: str) -> list[dict[str, Any]]:
    """The audit details of `action` on `resource_id`, oldest first."""
    query = (
        sa.select(audit_log.c.details)
        .where(audit_log.c.action == action, audit_log.c.resource_id == resource_id)
        .order_by(audit_log.c.id)
    )
    with server.services.db.read() as conn:
        return [json.loads(d) if isinstance(d, str) else d for d in conn.execute(query).scalars().all()]


def ignored_metric(server: Server, resource_type: str) -> float:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    text = httpx.get(f"{server.url}/metrics", headers=headers).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "scimjit_scim_ignored_attributes_total"
                and sample.labels.get("resource_type") == resource_type
            ):
                return float(sample.value)
    return 0.0


def make_user(server: Server, user_name: str, **extra: Any) -> dict[str, Any]:
    r = server.client.post("/Users", json={"schemas": [USER], "userName": user_name, **extra})
    assert r.status_code == 201, r.text
    return r.json()


# ---------------------------------------------------------------- foreign schema URNs


def test_entra_adscim_group_is_created_and_the_urn_audited_and_counted(server: Server) -> None:
    before = ignored_metric(server, "Group")
    body = {  # Microsoft's own example of the request Entra sends (SCIM tutorial, "Create Group")
        "schemas": [GROUP, ADSCIM_GROUP],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "displayName",
        "meta": {"resourceType": "Group"},
    }
    r = server.client.post("/Groups", json=body)
    assert r.status_code == 201, r.text
    group_id = r.json()["id"]
    read = server.client.get(f"/Groups/{group_id}").json()
    assert read["schemas"] == [GROUP]  # only the server's own schemas, never the foreign one
    assert read["displayName"] == "displayName"
    assert read["externalId"] == "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"
    assert (
        server.client.get("/Groups", params={"filter": 'displayName eq "displayName"'}).json()["totalResults"]
        == 1
    )
    (record,) = audits(server, "scim.group.create", group_id)
    assert record["ignored"] == [ADSCIM_GROUP] and record["ignoredCount"] == 1
    assert ignored_metric(server, "Group") == before + 1


def test_okta_like_extension_urn_and_object_are_ignored_on_post_put_and_patch(server: Server) -> None:
    body = {
        "schemas": [GROUP, OKTA_GROUP],
        "displayName": "Engineering",
        OKTA_GROUP: {"description": "pushed by Okta"},
    }
    r = server.client.post("/Groups", json=body)
    assert r.status_code == 201, r.text
    group_id = r.json()["id"]
    assert r.json()["schemas"] == [GROUP] and OKTA_GROUP not in r.json()
    put = server.client.put(f"/Groups/{group_id}", json={**body, "displayName": "Engineering 2"})
    assert put.status_code == 200, put.text
    patched = server.client.patch(
        f"/Groups/{group_id}",
        json=patch_body(
            {"op": "replace", "value": {"displayName": "Engineering 3", OKTA_GROUP: {"description": "x"}}},
            {"op": "add", "path": f"{OKTA_GROUP}:description", "value": "y"},
        ),
    )
    assert patched.status_code == 200, patched.text
    read = server.client.get(f"/Groups/{group_id}").json()
    assert read["displayName"] == "Engineering 3" and read["schemas"] == [GROUP] and OKTA_GROUP not in read
    assert audits(server, "scim.group.create", group_id)[0]["ignored"] == [OKTA_GROUP]
    assert audits(server, "scim.group.replace", group_id)[0]["ignored"] == [OKTA_GROUP]
    assert audits(server, "scim.group.patch", group_id)[0]["ignored"] == [
        OKTA_GROUP,  # the key of the path-less value
        f"{OKTA_GROUP}:description",  # the explicit path
    ]


def test_schemas_must_still_name_the_core_schema(server: Server) -> None:
    r = server.client.post("/Groups", json={"schemas": [ADSCIM_GROUP], "displayName": "NoCore"})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"
    assert GROUP in r.json()["detail"]
    assert (
        server.client.get("/Groups", params={"filter": 'displayName eq "NoCore"'}).json()["totalResults"] == 0
    )


def test_patchop_schemas_stay_strict(server: Server) -> None:
    user = make_user(server, "patchop")
    r = server.client.patch(
        f"/Users/{user['id']}",
        json={"schemas": [ADSCIM_GROUP], "Operations": [{"op": "replace", "path": "title", "value": "x"}]},
    )
    assert r.status_code == 400 and r.json()["scimType"] == "invalidSyntax"
    assert "title" not in server.client.get(f"/Users/{user['id']}").json()


# ---------------------------------------------------------------- unqualified extension names


def test_entra_legacy_manager_patch_forms_store_manager_value(server: Server) -> None:
    boss, other = make_user(server, "boss"), make_user(server, "other")
    user = make_user(server, "report")
    path = f"/Users/{user['id']}"

    def manager() -> Any:
        return server.client.get(path).json().get(ENTERPRISE_URN, {}).get("manager")

    r = server.client.patch(
        path,
        json=patch_body(
            {
                "op": "Add",
                "path": "manager",
                "value": [{"$ref": boss["meta"]["location"], "value": boss["id"]}],
            }
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["version"] != user["meta"]["version"]  # not a silent no-op any more
    assert manager()["value"] == boss["id"]
    assert ENTERPRISE_URN in server.client.get(path).json()["schemas"]

    assert (
        server.client.patch(
            path, json=patch_body({"op": "Replace", "path": "manager", "value": other["id"]})
        ).status_code
        == 200
    )
    assert manager() == {"value": other["id"]}  # a bare id string; the $ref that named boss is gone

    assert (
        server.client.patch(
            path, json=patch_body({"op": "Replace", "value": {"manager": {"value": boss["id"]}}})
        ).status_code
        == 200
    )
    assert manager() == {"value": boss["id"]}  # path-less, {"value": id}

    assert (
        server.client.patch(
            path, json=patch_body({"op": "Add", "value": {"manager": [{"value": other["id"]}]}})
        ).status_code
        == 200
    )
    assert manager() == {"value": other["id"]}  # path-less, the array form

    filtered = server.client.get("/Users", params={"filter": f'manager.value eq "{other["id"]}"'}).json()
    assert [u["id"] for u in filtered["Resources"]] == [user["id"]]

    assert server.client.patch(path, json=patch_body({"op": "Remove", "path": "manager"})).status_code == 200
    read = server.client.get(path).json()
    assert manager() is None and ENTERPRISE_URN not in read
    assert not any("ignored" in a for a in audits(server, "scim.user.patch", user["id"]))


def test_manager_with_two_values_is_refused_not_cut(server: Server) -> None:
    a, b, user = make_user(server, "a"), make_user(server, "b"), make_user(server, "c")
    r = server.client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "Add", "path": "manager", "value": [{"value": a["id"]}, {"value": b["id"]}]}),
    )
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"
    assert ENTERPRISE_URN not in server.client.get(f"/Users/{user['id']}").json()


def test_post_and_put_with_unqualified_enterprise_attributes(server: Server) -> None:
    user = make_user(server, "dana", department="R&D", employeeNumber="42", costCenter="CC1")
    read = server.client.get(f"/Users/{user['id']}").json()
    assert read[ENTERPRISE_URN] == {"department": "R&D", "employeeNumber": "42", "costCenter": "CC1"}
    assert read["schemas"] == [USER, ENTERPRISE_URN]
    assert "department" not in read  # stored under the extension, not at the top level

    r = server.client.put(
        f"/Users/{user['id']}",
        json={
            "schemas": [USER],
            "userName": "dana",
            "department": "Sales",
            "organization": "Acme",
            ENTERPRISE_URN: {"organization": "Acme Corp"},  # the URN-qualified value wins
        },
    )
    assert r.status_code == 200, r.text
    read = server.client.get(f"/Users/{user['id']}").json()
    assert read[ENTERPRISE_URN] == {"department": "Sales", "organization": "Acme Corp"}
    assert "ignored" not in audits(server, "scim.user.create", user["id"])[0]


def test_filter_on_unqualified_extension_attribute_equals_the_qualified_one(server: Server) -> None:
    dana = make_user(server, "dana", department="R&D", employeeNumber="42")
    make_user(server, "erin", department="Sales")
    for text in ('department eq "R&D"', f'{ENTERPRISE_URN}:department eq "R&D"', 'employeeNumber eq "42"'):
        found = server.client.get("/Users", params={"filter": text}).json()
        assert [u["id"] for u in found["Resources"]] == [dana["id"]], text
    sorted_ = server.client.get("/Users", params={"sortBy": "department", "attributes": "department"})
    assert [u.get(ENTERPRISE_URN, {}).get("department") for u in sorted_.json()["Resources"]] == [
        "R&D",
        "Sales",
    ]


def test_core_names_stay_core_and_names_in_two_extensions_stay_ambiguous(tmp_path) -> None:
    (tmp_path / "acme.json").write_text(
        json.dumps(
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
                "id": ACME,
                "name": "AcmeUser",
                "description": "Acme attributes",
                "x-scimjit-extends": ["User"],
                "attributes": [
                    {"name": "department", "type": "string"},
                    {"name": "displayName", "type": "string"},
                    {"name": "badgeNumber", "type": "string"},
                ],
            }
        )
    )
    registry = load_registry([tmp_path])
    rt = registry.resource_type("User")
    assert registry.resolve(rt, "displayName").full_path == "displayName"  # core wins
    assert registry.resolve(rt, "badgeNumber").full_path == f"{ACME}:badgeNumber"
    assert registry.resolve(rt, "employeeNumber").full_path == f"{ENTERPRISE_URN}:employeeNumber"
    with pytest.raises(AmbiguousAttribute, match="qualify it"):
        registry.resolve(rt, "department")
    ignored = Ignored()
    doc = normalise(registry, rt, {"userName": "x", "department": "R&D", "badgeNumber": "7"}, ignored=ignored)
    assert doc == {"schemas": [USER, ACME], "userName": "x", ACME: {"badgeNumber": "7"}}
    assert ignored.names == ["department"]
    with pytest.raises(ScimError) as err:
        parse_filter(registry, rt, 'department eq "R&D"')
    assert err.value.scim_type == "invalidFilter" and ENTERPRISE_URN in err.value.detail


# ---------------------------------------------------------------- ignored, never silently


def test_ignored_attributes_are_audited_by_name_and_counted(server: Server) -> None:
    before = ignored_metric(server, "User")
    user = make_user(
        server,
        "frank",
        favouriteColour="green",
        name={"givenName": "Frank", "nickname2": "F"},
        emails=[{"value": "f@example.com", "type": "work", "verified": True}],
    )
    read = server.client.get(f"/Users/{user['id']}").json()
    assert read["name"] == {"givenName": "Frank"} and read["emails"] == [
        {"value": "f@example.com", "type": "work"}
    ]
    (record,) = audits(server, "scim.user.create", user["id"])
    assert record["ignored"] == ["favouriteColour", "name.nickname2", "emails.verified"]
    assert "green" not in json.dumps(record)  # names only, never values
    assert ignored_metric(server, "User") == before + 3


def test_deactivation_next_to_unknown_attributes_still_deactivates(server: Server) -> None:
    user = make_user(server, "gina", active=True)
    before = ignored_metric(server, "User")
    r = server.client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Replace", "path": "extensionAttribute7", "value": "x"},
            {"op": "Add", "value": {"urn:example:custom:2.0:User:costCentre": "1"}},
        ),
    )
    assert r.status_code == 200, r.text
    assert server.client.get(f"/Users/{user['id']}").json()["active"] is False
    (record,) = audits(server, "scim.user.patch", user["id"])
    assert record["changed"] == ["active"]
    assert record["ignored"] == ["extensionAttribute7", "urn:example:custom:2.0:User:costCentre"]
    assert ignored_metric(server, "User") == before + 2


def test_bulk_writes_audit_what_they_ignored(server: Server) -> None:
    r = server.client.post(
        "/Bulk",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g1",
                    "data": {"schemas": [GROUP, ADSCIM_GROUP], "displayName": "BulkADSCIM"},
                }
            ],
        },
    )
    assert r.status_code == 200, r.text
    (result,) = r.json()["Operations"]
    assert result["status"] == "201"
    group_id = result["location"].rsplit("/", 1)[1]
    assert server.client.get(f"/Groups/{group_id}").json()["displayName"] == "BulkADSCIM"
    assert audits(server, "scim.group.create", group_id)[0]["ignored"] == [ADSCIM_GROUP]


def test_ignored_names_are_capped_and_counted_exactly(registry: Registry) -> None:
    ignored = Ignored()
    body = {"userName": "x", **{f"custom{i}": "v" for i in range(MAX_NAMES + 20)}, "z" * 500: 1}
    normalise(registry, registry.resource_type("User"), body, ignored=ignored)
    assert len(ignored.names) == MAX_NAMES and ignored.count == MAX_NAMES + 21


# ---------------------------------------------------------------- strict_attributes


def test_strict_mode_refuses_what_would_be_ignored(strict_server: Server) -> None:
    client = strict_server.client
    r = client.post("/Groups", json={"schemas": [GROUP, ADSCIM_GROUP], "displayName": "Strict"})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"
    assert ADSCIM_GROUP in r.json()["detail"] and "strict_attributes" in r.json()["detail"]
    assert client.get("/Groups", params={"filter": 'displayName eq "Strict"'}).json()["totalResults"] == 0

    r = client.post("/Users", json={"schemas": [USER], "userName": "s", "favouriteColour": "green"})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"
    assert "favouriteColour" in r.json()["detail"]

    user = make_user(
        strict_server, "s", department="R&D", active=True
    )  # known names, unqualified or not, still pass
    path = f"/Users/{user['id']}"
    r = client.patch(
        path,
        json=patch_body(
            {"op": "replace", "path": "active", "value": False},
            {"op": "replace", "path": "extensionAttribute7", "value": "x"},
        ),
    )
    assert r.status_code == 400 and r.json()["scimType"] == "invalidPath"
    assert "extensionAttribute7" in r.json()["detail"]
    r = client.patch(path, json=patch_body({"op": "add", "value": {"nickName": "s", "shoeSize": 9}}))
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"
    r = client.get("/Users", params={"filter": "shoeSize eq 9"})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter"
    read = client.get(path).json()  # every refused write left the user as it was
    assert read["meta"]["version"] == user["meta"]["version"] and read["active"] is True
    assert "nickName" not in read
    assert not audits(strict_server, "scim.user.patch", user["id"])


def test_strict_mode_is_off_by_default_and_read_from_env_and_toml(tmp_path) -> None:
    from scimjit.config import Settings

    assert Settings.load(environ={}).strict_attributes is False
    assert Settings.load(environ={"SCIMJIT_STRICT_ATTRIBUTES": "1"}).strict_attributes is True
    config = tmp_path / "scimjit.toml"
    config.write_text("[server]\nstrict_attributes = true\n")
    assert Settings.load(environ={"SCIMJIT_CONFIG": str(config)}).strict_attributes is True


def test_patch_engine_notes_unknown_paths_sub_attributes_and_value_keys(registry: Registry) -> None:
    rt = registry.resource_type("User")
    ignored = Ignored()
    result = apply_patch(
        registry,
        rt,
        {"schemas": [USER], "id": "u1", "userName": "x"},
        patch_body(
            {"op": "add", "path": "name.middleName2", "value": "M"},
            {"op": "add", "path": "emails", "value": [{"value": "x@example.com", "label": "home"}]},
            {"op": "replace", "value": {"department": "R&D", "unmapped": 1, "schemas": [ADSCIM_GROUP]}},
        ),
        ignored,
    )
    assert result.document[ENTERPRISE_URN] == {"department": "R&D"}
    assert result.document["emails"] == [{"value": "x@example.com"}]
    assert ignored.names == ["name.middleName2", "emails.label", "unmapped"]
