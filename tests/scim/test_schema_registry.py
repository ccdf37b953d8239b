"""The schema files are the single source of truth, and a deployment can add an extension without code."""

from __future__ import annotations

import json

import pytest

from scimjit.scim.schema import ENTERPRISE_URN, UnknownAttribute, load_registry

ACME = "urn:example:params:scim:schemas:extension:acme:2.0:User"


def test_core_resolution_is_case_insensitive(registry):
    rt = registry.resource_type("User")
    ref = registry.resolve(rt, "NAME.familyname")
    assert ref.path == "name.familyName" and not ref.extension
    ext = registry.resolve(rt, f"{ENTERPRISE_URN}:manager.value")
    assert ext.extension and ext.full_path == f"{ENTERPRISE_URN}:manager.value"
    assert registry.resolve(rt, "meta.lastModified").leaf.type == "dateTime"
    with pytest.raises(UnknownAttribute):
        registry.resolve(rt, "nope")


def test_schema_urns_resolve_in_any_case_and_the_longest_urn_wins():
    """`canonical_urn` and `split_urn` read maps a ResourceType derives once; an extension URN that starts
    with another schema's URN plus `:` must still be split at the longer one."""
    from scimjit.scim.schema import USER_URN, ResourceType

    nested = f"{USER_URN}:acme"
    rt = ResourceType("User", "/Users", "", USER_URN, ((ENTERPRISE_URN, False), (nested, False)))
    registry = load_registry()
    assert rt.schema_ids == (USER_URN, ENTERPRISE_URN, nested)
    assert registry.canonical_urn(rt, ENTERPRISE_URN.upper()) == ENTERPRISE_URN
    assert registry.canonical_urn(rt, "urn:nope") is None
    assert registry.split_urn(rt, f"{nested.upper()}:badge") == (nested, "badge")
    assert registry.split_urn(rt, f"{USER_URN}:name.givenName") == (USER_URN, "name.givenName")
    assert registry.split_urn(rt, ENTERPRISE_URN.lower()) == (ENTERPRISE_URN, "")
    assert registry.split_urn(rt, "userName") == (None, "userName")
    assert rt == ResourceType("User", "/Users", "", USER_URN, ((ENTERPRISE_URN, False), (nested, False)))


def test_deployment_extension_is_loaded_served_and_resolvable(tmp_path):
    (tmp_path / "acme.json").write_text(
        json.dumps(
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
                "id": ACME,
                "name": "AcmeUser",
                "description": "Acme attributes",
                "x-scimjit-extends": ["User"],
                "attributes": [{"name": "badgeNumber", "type": "string", "caseExact": True}],
            }
        )
    )
    registry = load_registry([tmp_path])
    rt = registry.resource_type("User")
    assert (ACME, False) in rt.extensions
    assert registry.resolve(rt, f"{ACME}:badgeNumber").leaf.case_exact
    served = {d["id"]: d for d in registry.schema_documents()}
    assert "x-scimjit-extends" not in served[ACME]
    assert rt.document()["schemaExtensions"][-1] == {"schema": ACME, "required": False}


def test_extension_attributes_round_trip_over_http(server):
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_URN],
        "userName": "ext",
        ENTERPRISE_URN: {"employeeNumber": "701984", "manager": {"value": "boss"}},
    }
    created = server.client.post("/Users", json=body).json()
    assert created[ENTERPRISE_URN]["employeeNumber"] == "701984"
    found = server.client.get(
        "/Users", params={"filter": f'{ENTERPRISE_URN}:employeeNumber eq "701984"'}
    ).json()
    assert [u["id"] for u in found["Resources"]] == [created["id"]]
    by_manager = server.client.get(
        "/Users", params={"filter": f'{ENTERPRISE_URN}:manager.value eq "boss"'}
    ).json()
    assert by_manager["totalResults"] == 1
    only_ext = server.client.get(f"/Users/{created['id']}", params={"attributes": ENTERPRISE_URN}).json()
    assert set(only_ext) == {"schemas", "id", ENTERPRISE_URN}
