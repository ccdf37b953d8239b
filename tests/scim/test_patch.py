"""`scim.patch.apply_patch`: RFC 7644 §3.5.2 (every example), path forms, IdP dialects replayed from real
captures, errors with their scimType, value-path semantics, primary handling and group member ops."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scimjit.scim.errors import ScimError
from scimjit.scim.patch import PATCH_OP_URN, MemberOp, PatchResult, apply_patch
from scimjit.scim.resource import normalise
from scimjit.scim.schema import ENTERPRISE_URN, GROUP_URN, JIT_GROUP_URN, USER_URN, Registry, load_registry

# In the repository (MIT test data of elimity-com/scim); `requires_captures` stays as a label, never a skip.
CAPTURES = Path(__file__).resolve().parents[1] / "idp_captures"
requires_captures = pytest.mark.usefixtures()

USER_ID = "2819c223-7f76-453a-919d-413861904646"
OTHER_ID = "902c246b-6245-4190-8e05-00816be7344a"
MANAGER = f"{ENTERPRISE_URN}:manager"


def body(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP_URN], "Operations": list(ops)}


def babs(registry: Registry) -> dict[str, Any]:
    """A stored User as the store hands it to the engine: normalised, with its id."""
    doc = normalise(
        registry,
        registry.resource_type("User"),
        {
            "schemas": [USER_URN],
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs Jensen",
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": True},
                {"value": "babs@jensen.org", "type": "home"},
            ],
            "addresses": [
                {"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood"}
            ],
            "x509Certificates": [{"value": "TUlJRFF6Q0NB"}],
        },
    )
    return {"id": USER_ID, **doc}


def a_group(registry: Registry) -> dict[str, Any]:
    doc = normalise(
        registry, registry.resource_type("Group"), {"displayName": "Tour Guides", "externalId": "e1"}
    )
    return {"id": "g-1", **doc}


@pytest.fixture
def user_doc(registry: Registry) -> dict[str, Any]:
    return babs(registry)


@pytest.fixture
def group_doc(registry: Registry) -> dict[str, Any]:
    return a_group(registry)


def patch_user(registry: Registry, doc: dict[str, Any], *ops: dict[str, Any]) -> PatchResult:
    return apply_patch(registry, registry.resource_type("User"), doc, body(*ops))


def patch_group(registry: Registry, doc: dict[str, Any], *ops: dict[str, Any]) -> PatchResult:
    return apply_patch(registry, registry.resource_type("Group"), doc, body(*ops))


def error(call: Any, *args: Any) -> ScimError:
    with pytest.raises(ScimError) as exc:
        call(*args)
    assert exc.value.status == 400
    return exc.value


def member(value: str, kind: str | None = None, display: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"value": value, "type": kind}
    if display:
        found["display"] = display
    return found


# ---------------------------------------------------------------- RFC 7644 §3.5.2 examples, each one


def test_rfc_add_member_to_group(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(
        registry,
        group_doc,
        {
            "op": "add",
            "path": "members",
            "value": [
                {
                    "display": "Babs Jensen",
                    "$ref": f"https://example.com/v2/Users/{USER_ID}",
                    "value": USER_ID,
                }
            ],
        },
    )
    assert result.member_ops == [MemberOp("add", [member(USER_ID, display="Babs Jensen")])]
    assert result.document == group_doc
    assert result.changed == set()


def test_rfc_add_without_path(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry,
        user_doc,
        {
            "op": "add",
            "value": {"emails": [{"value": "babs@jensen.org", "type": "home"}], "nickname": "Babs"},
        },
    )
    assert result.document["nickName"] == "Babs"  # the RFC spells it `nickname`: names are case-insensitive
    assert result.document["emails"] == user_doc["emails"]  # already there: nothing added
    assert result.changed == {"nickName"}


def test_rfc_remove_all_members(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(registry, group_doc, {"op": "remove", "path": "members"})
    assert result.member_ops == [MemberOp("remove_all")]


def test_rfc_remove_one_member(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(registry, group_doc, {"op": "remove", "path": f'members[value eq "{USER_ID}"]'})
    assert result.member_ops == [MemberOp("remove", [member(USER_ID)])]


def test_rfc_remove_emails_by_complex_filter(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry, user_doc, {"op": "remove", "path": 'emails[type eq "work" and value ew "example.com"]'}
    )
    assert result.document["emails"] == [{"value": "babs@jensen.org", "type": "home"}]
    assert result.changed == {"emails"}


def test_rfc_remove_certificate_by_value(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry, user_doc, {"op": "remove", "path": 'x509Certificates[value eq "TUlJRFF6Q0NB"]'}
    )
    assert "x509Certificates" not in result.document  # no values left: unassigned
    assert result.changed == {"x509Certificates"}


def test_rfc_remove_two_members_then_all_and_add(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(
        registry,
        group_doc,
        {"op": "remove", "path": f'members[value eq"{USER_ID}"]'},  # the RFC writes no space after eq
        {"op": "remove", "path": f'members[value eq"{OTHER_ID}"]'},
    )
    assert result.member_ops == [
        MemberOp("remove", [member(USER_ID)]),
        MemberOp("remove", [member(OTHER_ID)]),
    ]
    result = patch_group(
        registry,
        group_doc,
        {"op": "remove", "path": "members"},
        {"op": "add", "path": "members", "value": [{"display": "James Smith", "value": OTHER_ID}]},
    )
    assert result.member_ops == [
        MemberOp("remove_all"),
        MemberOp("add", [member(OTHER_ID, display="James Smith")]),
    ]


def test_rfc_replace_members(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(
        registry,
        group_doc,
        {
            "op": "replace",
            "path": "members",
            "value": [
                {"display": "Babs Jensen", "value": USER_ID},
                {"display": "James Smith", "value": OTHER_ID},
            ],
        },
    )
    assert result.member_ops == [
        MemberOp("remove_all"),
        MemberOp("add", [member(USER_ID, display="Babs Jensen"), member(OTHER_ID, display="James Smith")]),
    ]


def test_rfc_replace_address_by_filter(registry: Registry, user_doc: dict[str, Any]) -> None:
    work = {
        "type": "work",
        "streetAddress": "911 Universal City Plaza",
        "locality": "Hollywood",
        "region": "CA",
        "postalCode": "91608",
        "country": "US",
        "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US",
        "primary": True,
    }
    result = patch_user(
        registry, user_doc, {"op": "replace", "path": 'addresses[type eq "work"]', "value": work}
    )
    assert result.document["addresses"] == [work]


def test_rfc_replace_address_sub_attribute(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry,
        user_doc,
        {"op": "replace", "path": 'addresses[type eq "work"].streetAddress', "value": "1010 Broadway Ave"},
    )
    assert result.document["addresses"] == [
        {"type": "work", "streetAddress": "1010 Broadway Ave", "locality": "Hollywood"}
    ]
    assert result.changed == {"addresses"}


def test_rfc_replace_without_path(registry: Registry, user_doc: dict[str, Any]) -> None:
    emails = [
        {"value": "bjensen@example.com", "type": "work", "primary": True},
        {"value": "babs@jensen.org", "type": "home"},
    ]
    result = patch_user(
        registry, user_doc, {"op": "replace", "value": {"emails": emails, "nickname": "Babs"}}
    )
    assert result.document["emails"] == emails
    assert result.document["nickName"] == "Babs"
    assert result.changed == {"nickName"}  # the emails were already exactly these


# ---------------------------------------------------------------- IdP captures, replayed


def capture(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES / name).read_text())


def created(registry: Registry, rt_name: str, name: str, resource_id: str) -> dict[str, Any]:
    doc = normalise(registry, registry.resource_type(rt_name), capture(name)["request"])
    doc.pop("members", None)  # the store keeps members in their own table
    doc.pop("password", None)  # and the password as a hash
    return {"id": resource_id, **doc}


@requires_captures
def test_entra_update_user(registry: Registry) -> None:
    doc = created(registry, "User", "entra/create_user.json", "u-1")
    result = patch_user(registry, doc, *capture("entra/update_user.json")["request"]["Operations"])
    expected = capture("entra/update_user.json")["response"]
    assert result.document["userName"] == expected["userName"]
    assert result.document["active"] is False
    assert result.document["emails"] == [
        {"primary": True, "type": "work", "value": "updatedEmail@microsoft.com"}
    ]
    assert result.document["name"]["familyName"] == "updatedFamilyName"
    assert result.document["name"]["givenName"] == "givenName"
    assert result.changed == {"userName", "active", "emails", "name.familyName"}
    assert result.member_ops == []


@requires_captures
def test_entra_update_group(registry: Registry) -> None:
    doc = created(registry, "Group", "entra/create_group.json", "g-1")
    result = apply_patch(
        registry, registry.resource_type("Group"), doc, capture("entra/update_group.json")["request"]
    )
    assert result.document["displayName"] == "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
    assert result.changed == {"displayName"}
    member_id = "f648f8d5ea4e4cd38e9c"
    # `Remove members` with a value list removes just those members, not all of them
    assert result.member_ops == [
        MemberOp("add", [member(member_id)]),
        MemberOp("remove", [member(member_id)]),
    ]


@requires_captures
def test_okta_deactivate_user(registry: Registry) -> None:
    doc = created(registry, "User", "okta/create_user.json", "23a35c27-23d3-4c03-b4c5-6443c09e7173")
    result = apply_patch(
        registry, registry.resource_type("User"), doc, capture("okta/update_user_patch.json")["request"]
    )
    assert result.document == {**doc, "active": False}
    assert result.changed == {"active"}


@requires_captures
def test_okta_rename_group_echoes_its_id(registry: Registry) -> None:
    group_id = "abf4dd94-a4c0-4f67-89c9-76b03340cb9b"
    doc = created(registry, "Group", "okta/create_group.json", group_id)
    request = capture("okta/update_group_name.json")["request"]
    result = apply_patch(registry, registry.resource_type("Group"), doc, request)
    assert result.changed == set()  # the capture renames to the name it already has
    doc["displayName"] = "Old name"
    result = apply_patch(registry, registry.resource_type("Group"), doc, request)
    assert result.document["displayName"] == "Test SCIMv2"
    assert result.changed == {"displayName"}


@requires_captures
def test_okta_group_membership(registry: Registry) -> None:
    doc = created(registry, "Group", "okta/create_group.json", "abf4dd94-a4c0-4f67-89c9-76b03340cb9b")
    result = apply_patch(
        registry,
        registry.resource_type("Group"),
        doc,
        capture("okta/update_group_membership.json")["request"],
    )
    a, b = "23a35c27-23d3-4c03-b4c5-6443c09e7173", "89bb1940-b905-4575-9e7f-6f887cfb368e"
    assert result.member_ops == [
        MemberOp("remove", [member(b)]),
        MemberOp("add", [member(a, display="test.user@okta.local")]),
        MemberOp("remove_all"),
        MemberOp(
            "add", [member(a, display="test.user@okta.local"), member(b, display="test.user@okta.local")]
        ),
    ]
    assert result.changed == set()


# ---------------------------------------------------------------- dialects


def test_entra_legacy_capitalised_ops_and_string_booleans(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    result = patch_user(
        registry,
        user_doc,
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "Add", "path": "title", "value": "Guide"},
        {"op": "Remove", "path": "displayName"},
    )
    assert result.document["active"] is False
    assert result.document["title"] == "Guide"
    assert "displayName" not in result.document
    assert result.changed == {"active", "title", "displayName"}


def test_entra_path_less_dotted_and_urn_keys(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry,
        user_doc,
        {
            "op": "replace",
            "value": {
                "name.givenName": "Babs",
                f"{ENTERPRISE_URN}:employeeNumber": "701984",
                ENTERPRISE_URN: {"department": "Tour Operations", "manager": {"value": OTHER_ID}},
                'emails[type eq "work"].value': "babs@example.com",
                "active": "True",
            },
        },
    )
    doc = result.document
    assert doc["name"] == {"givenName": "Babs", "familyName": "Jensen"}
    assert doc[ENTERPRISE_URN] == {
        "employeeNumber": "701984",
        "department": "Tour Operations",
        "manager": {"value": OTHER_ID},
    }
    assert doc["emails"][0] == {"value": "babs@example.com", "type": "work", "primary": True}
    assert doc["active"] is True
    assert doc["schemas"] == [USER_URN, ENTERPRISE_URN]
    assert result.changed == {
        "name.givenName",
        "emails",
        "active",
        f"{ENTERPRISE_URN}:employeeNumber",
        f"{ENTERPRISE_URN}:department",
        f"{ENTERPRISE_URN}:manager",
    }


def test_entra_manager_as_a_bare_id(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(registry, user_doc, {"op": "Add", "path": MANAGER, "value": OTHER_ID})
    assert result.document[ENTERPRISE_URN] == {"manager": {"value": OTHER_ID}}
    result = patch_user(
        registry, result.document, {"op": "replace", "path": f"{MANAGER}.value", "value": USER_ID}
    )
    assert result.document[ENTERPRISE_URN] == {"manager": {"value": USER_ID}}
    assert result.changed == {f"{ENTERPRISE_URN}:manager.value"}
    result = patch_user(registry, result.document, {"op": "Remove", "path": MANAGER})
    assert ENTERPRISE_URN not in result.document  # the emptied extension object goes too


def test_okta_path_less_id_must_be_the_resources(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(registry, group_doc, {"op": "replace", "value": {"id": "g-1", "displayName": "New"}})
    assert result.document["displayName"] == "New"
    err = error(
        patch_group, registry, group_doc, {"op": "replace", "value": {"id": "other", "displayName": "x"}}
    )
    assert err.scim_type == "mutability"


def test_path_less_skips_what_clients_echo(registry: Registry, user_doc: dict[str, Any]) -> None:
    echoed = {
        "schemas": [USER_URN],
        "id": USER_ID,
        "meta": {"resourceType": "User", "version": 'W/"3"'},
        "groups": [{"value": "g-1"}],
        "displayName": "Babs J",
    }
    result = patch_user(registry, user_doc, {"op": "replace", "value": echoed})
    assert result.changed == {"displayName"}


def test_entra_legacy_remove_emails_by_value(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry, user_doc, {"op": "Remove", "path": "emails", "value": [{"value": "BABS@jensen.org"}]}
    )
    assert result.document["emails"] == [{"value": "bjensen@example.com", "type": "work", "primary": True}]


def test_remove_with_an_empty_value_list_removes_nothing(
    registry: Registry, group_doc: dict[str, Any]
) -> None:
    assert patch_group(registry, group_doc, {"op": "remove", "path": "members", "value": []}).member_ops == []


def test_operation_member_names_are_case_insensitive(registry: Registry, user_doc: dict[str, Any]) -> None:
    request = {
        "Schemas": [PATCH_OP_URN.upper()],
        "operations": [{"OP": "REPLACE", "Path": "title", "Value": "x"}],
    }
    result = apply_patch(registry, registry.resource_type("User"), user_doc, request)
    assert result.document["title"] == "x"


# ---------------------------------------------------------------- path forms and semantics


def test_sub_attribute_paths(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry,
        user_doc,
        {"op": "add", "path": "name.middleName", "value": "Jane"},
        {"op": "replace", "path": "name.familyName", "value": "Jensen-Smith"},
        {"op": "remove", "path": "name.givenName"},
    )
    assert result.document["name"] == {"familyName": "Jensen-Smith", "middleName": "Jane"}
    assert result.changed == {"name.middleName", "name.familyName", "name.givenName"}


def test_urn_qualified_core_and_extension_paths(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry,
        user_doc,
        {"op": "replace", "path": f"{USER_URN}:displayName", "value": "B"},
        {"op": "add", "path": f"{ENTERPRISE_URN.lower()}:EMPLOYEENUMBER", "value": "42"},
    )
    assert result.document["displayName"] == "B"
    assert result.document[ENTERPRISE_URN] == {"employeeNumber": "42"}


def test_path_naming_the_core_schema_is_like_no_path(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(registry, user_doc, {"op": "replace", "path": USER_URN, "value": {"title": "x"}})
    assert result.document["title"] == "x"


def test_path_naming_an_extension_schema(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry, user_doc, {"op": "add", "path": ENTERPRISE_URN, "value": {"costCenter": "4130"}}
    )
    assert result.document[ENTERPRISE_URN] == {"costCenter": "4130"}
    result = patch_user(registry, result.document, {"op": "remove", "path": ENTERPRISE_URN})
    assert ENTERPRISE_URN not in result.document
    assert result.changed == {f"{ENTERPRISE_URN}:costCenter"}


def test_add_merges_complex_and_replace_with_null_unassigns(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    result = patch_user(
        registry, user_doc, {"op": "add", "path": "name", "value": {"honorificPrefix": "Ms."}}
    )
    assert result.document["name"] == {
        "givenName": "Barbara",
        "familyName": "Jensen",
        "honorificPrefix": "Ms.",
    }
    result = patch_user(registry, user_doc, {"op": "replace", "path": "name", "value": {"givenName": None}})
    assert result.document["name"] == {"familyName": "Jensen"}
    result = patch_user(registry, user_doc, {"op": "replace", "path": "name", "value": None})
    assert "name" not in result.document
    result = patch_user(registry, user_doc, {"op": "replace", "path": "displayName", "value": ""})
    assert "displayName" not in result.document


def test_add_to_multi_valued_appends_and_skips_duplicates(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    result = patch_user(
        registry,
        user_doc,
        {
            "op": "add",
            "path": "emails",
            "value": {"value": "BJENSEN@example.com", "type": "Work", "primary": True},
        },
        {"op": "add", "path": "phoneNumbers", "value": [{"value": "555-555-8377", "type": "work"}]},
    )
    assert result.document["emails"] == user_doc["emails"]
    assert result.document["phoneNumbers"] == [{"value": "555-555-8377", "type": "work"}]
    assert result.changed == {"phoneNumbers"}


def test_replace_multi_valued_replaces_all(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry, user_doc, {"op": "replace", "path": "emails", "value": [{"value": "new@x.org"}]}
    )
    assert result.document["emails"] == [{"value": "new@x.org"}]
    result = patch_user(registry, user_doc, {"op": "replace", "path": "emails", "value": []})
    assert "emails" not in result.document


def test_unmatched_value_path_replace_adds_the_described_element(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    result = patch_user(
        registry,
        user_doc,
        {"op": "replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "555-0100"},
    )
    assert result.document["phoneNumbers"] == [{"type": "mobile", "value": "555-0100"}]
    result = patch_user(
        registry,
        user_doc,
        {"op": "Add", "path": 'addresses[type eq "home"]', "value": {"locality": "Burbank"}},
    )
    assert result.document["addresses"][1] == {"type": "home", "locality": "Burbank"}


def test_unmatched_primary_filter_creates_the_new_primary(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    result = patch_user(
        registry,
        user_doc,
        {"op": "replace", "path": 'emails[type eq "other" and primary eq true].value', "value": "o@x.org"},
    )
    assert result.document["emails"] == [
        {"value": "bjensen@example.com", "type": "work", "primary": False},
        {"value": "babs@jensen.org", "type": "home"},
        {"type": "other", "primary": True, "value": "o@x.org"},
    ]


def test_unmatched_filter_that_describes_no_element_is_no_target(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    for path in ['emails[type eq "a" or type eq "b"].value', 'emails[value co "zzz"].display']:
        err = error(patch_user, registry, user_doc, {"op": "replace", "path": path, "value": "x"})
        assert err.scim_type == "noTarget"


def test_value_path_add_merges_and_replace_replaces_elements(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    result = patch_user(
        registry, user_doc, {"op": "add", "path": 'emails[type eq "home"]', "value": {"display": "Home"}}
    )
    assert result.document["emails"][1] == {"value": "babs@jensen.org", "type": "home", "display": "Home"}
    result = patch_user(
        registry,
        user_doc,
        {"op": "replace", "path": 'emails[type eq "home"]', "value": {"value": "b@home.org"}},
    )
    assert result.document["emails"][1] == {"value": "b@home.org"}


def test_remove_by_value_path(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(registry, user_doc, {"op": "remove", "path": 'emails[type eq "work"].primary'})
    assert result.document["emails"][0] == {"value": "bjensen@example.com", "type": "work"}
    result = patch_user(registry, user_doc, {"op": "remove", "path": 'emails[type eq "nothing"]'})
    assert result.changed == set()  # a retried remove succeeds
    result = patch_user(registry, user_doc, {"op": "remove", "path": "emails.type"})
    assert [e.get("type") for e in result.document["emails"]] == [None, None]


def test_sub_attribute_of_multi_valued_without_filter_applies_to_all(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    result = patch_user(registry, user_doc, {"op": "replace", "path": "emails.display", "value": "Babs"})
    assert [e["display"] for e in result.document["emails"]] == ["Babs", "Babs"]


def test_primary_moves_to_the_value_made_primary(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry, user_doc, {"op": "replace", "path": 'emails[type eq "home"].primary', "value": True}
    )
    assert [e.get("primary") for e in result.document["emails"]] == [False, True]
    result = patch_user(
        registry,
        user_doc,
        {"op": "add", "path": "emails", "value": [{"value": "n@x.org", "primary": "True"}]},
    )
    assert [e.get("primary") for e in result.document["emails"]] == [False, None, True]


def test_two_primaries_are_invalid_value(registry: Registry, user_doc: dict[str, Any]) -> None:
    two = [{"value": "a@x.org", "primary": True}, {"value": "b@x.org", "primary": True}]
    err = error(patch_user, registry, user_doc, {"op": "add", "path": "emails", "value": two})
    assert err.scim_type == "invalidValue"
    err = error(patch_user, registry, user_doc, {"op": "replace", "path": "emails.primary", "value": True})
    assert err.scim_type == "invalidValue"


def test_password_is_left_in_the_document_for_the_caller(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    result = patch_user(registry, user_doc, {"op": "replace", "path": "password", "value": "s3cret"})
    assert result.document["password"] == "s3cret"
    assert result.changed == {"password"}


def test_unknown_attributes_are_skipped(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry,
        user_doc,
        {"op": "replace", "path": "favouriteColour", "value": "green"},
        {"op": "add", "path": "urn:example:custom:2.0:User:badge.number", "value": "7"},
        {"op": "remove", "path": "name.nickname2"},
        {"op": "replace", "value": {"shoeSize": 42, "active": False}},
    )
    assert result.document == {**user_doc, "active": False}
    assert result.changed == {"active"}


def test_no_op_patch_is_detectable_and_input_is_not_mutated(
    registry: Registry, user_doc: dict[str, Any]
) -> None:
    before = copy.deepcopy(user_doc)
    result = patch_user(
        registry,
        user_doc,
        {"op": "replace", "path": "displayName", "value": "Babs Jensen"},
        {"op": "add", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home"}]},
        {"op": "remove", "path": "nickName"},
        {"op": "replace", "path": "title", "value": "X"},
        {"op": "remove", "path": "title"},
    )
    assert result.changed == set()
    assert result.document == before
    assert user_doc == before
    changed = patch_user(registry, user_doc, {"op": "replace", "path": "displayName", "value": "BABS JENSEN"})
    assert changed.changed == {"displayName"}  # a change of case is a change
    assert user_doc == before


def test_operations_apply_in_order(registry: Registry, user_doc: dict[str, Any]) -> None:
    result = patch_user(
        registry,
        user_doc,
        {"op": "remove", "path": "emails"},
        {"op": "add", "path": "emails", "value": [{"value": "only@x.org"}]},
    )
    assert result.document["emails"] == [{"value": "only@x.org"}]


def test_schemas_list_gains_an_extension_with_data(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(
        registry, group_doc, {"op": "add", "path": f"{JIT_GROUP_URN}:membershipTTL", "value": 60}
    )
    assert result.document["schemas"] == [GROUP_URN, JIT_GROUP_URN]
    assert result.document[JIT_GROUP_URN] == {"membershipTTL": 60}


# ---------------------------------------------------------------- group members


def test_members_are_not_in_the_document(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(
        registry,
        group_doc,
        {"op": "add", "value": {"members": [{"value": "u-1", "type": "User"}], "displayName": "Guides"}},
    )
    assert result.member_ops == [MemberOp("add", [member("u-1", "User")])]
    assert "members" not in result.document
    assert result.changed == {"displayName"}


def test_remove_members_by_or_chain(registry: Registry, group_doc: dict[str, Any]) -> None:
    result = patch_group(
        registry, group_doc, {"op": "remove", "path": 'members[value eq "a" or value eq "b" or value eq "a"]'}
    )
    assert result.member_ops == [MemberOp("remove", [member("a"), member("b")])]


@pytest.mark.parametrize(
    "path", ['members[display eq "x"]', 'members[value co "x"]', 'members[value eq "a" and type eq "User"]']
)
def test_members_filters_other_than_value_eq_are_invalid_filter(
    registry: Registry, group_doc: dict[str, Any], path: str
) -> None:
    err = error(patch_group, registry, group_doc, {"op": "remove", "path": path})
    assert err.scim_type == "invalidFilter"
    assert "value eq" in err.detail


@pytest.mark.parametrize(
    "op",
    [
        {"op": "add", "path": 'members[value eq "a"]', "value": {"display": "x"}},
        {"op": "replace", "path": 'members[value eq "a"].display', "value": "x"},
        {"op": "remove", "path": "members.value"},
    ],
)
def test_members_paths_beyond_add_replace_remove_are_invalid_path(
    registry: Registry, group_doc: dict[str, Any], op: dict[str, Any]
) -> None:
    assert error(patch_group, registry, group_doc, op).scim_type == "invalidPath"


def test_members_need_ids(registry: Registry, group_doc: dict[str, Any]) -> None:
    err = error(
        patch_group, registry, group_doc, {"op": "add", "path": "members", "value": [{"display": "x"}]}
    )
    assert err.scim_type == "invalidValue"


def test_replace_members_with_nothing_empties_the_group(
    registry: Registry, group_doc: dict[str, Any]
) -> None:
    result = patch_group(registry, group_doc, {"op": "replace", "path": "members", "value": []})
    assert result.member_ops == [MemberOp("remove_all")]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("request_body", "scim_type"),
    [
        ([], "invalidSyntax"),
        ({"Operations": [{"op": "add", "path": "title", "value": "x"}]}, "invalidSyntax"),
        (
            {"schemas": [USER_URN], "Operations": [{"op": "add", "path": "title", "value": "x"}]},
            "invalidSyntax",
        ),
        ({"schemas": [PATCH_OP_URN]}, "invalidSyntax"),
        ({"schemas": [PATCH_OP_URN], "Operations": []}, "invalidSyntax"),
        ({"schemas": [PATCH_OP_URN], "Operations": {"op": "add"}}, "invalidSyntax"),
        ({"schemas": [PATCH_OP_URN], "Operations": ["add"]}, "invalidSyntax"),
    ],
)
def test_malformed_messages_are_invalid_syntax(
    registry: Registry, user_doc: dict[str, Any], request_body: Any, scim_type: str
) -> None:
    err = error(apply_patch, registry, registry.resource_type("User"), user_doc, request_body)
    assert err.scim_type == scim_type


@pytest.mark.parametrize(
    ("op", "scim_type"),
    [
        ({"op": "move", "path": "title", "value": "x"}, "invalidSyntax"),
        ({"path": "title", "value": "x"}, "invalidSyntax"),
        ({"op": "remove"}, "noTarget"),
        ({"op": "add", "path": "title"}, "invalidValue"),
        ({"op": "replace", "path": "title"}, "invalidValue"),
        ({"op": "add", "path": "title", "value": None}, "invalidValue"),
        ({"op": "add", "value": "not an object"}, "invalidValue"),
        ({"op": "replace", "path": "active", "value": "maybe"}, "invalidValue"),
        ({"op": "replace", "path": "userName", "value": 7}, "invalidValue"),
        ({"op": "replace", "path": "name", "value": ["x"]}, "invalidValue"),
        ({"op": "add", "path": 'emails[type eq "work"', "value": "x"}, "invalidPath"),
        ({"op": "add", "path": 'emails[type eq "work"]x', "value": "x"}, "invalidPath"),
        ({"op": "add", "path": 'emails[type eq "work"].value.x', "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "emails]", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "name.givenName.x", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "name.", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": 7, "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "userName.first", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": 'name[givenName eq "x"]', "value": "x"}, "invalidPath"),
        ({"op": "add", "path": 'name.x[type eq "x"]', "value": "x"}, "invalidPath"),
        ({"op": "remove", "path": USER_URN}, "invalidPath"),
        ({"op": "replace", "path": 'emails[type eq "work" and]', "value": "x"}, "invalidFilter"),
        ({"op": "replace", "path": 'emails[nope eq "work"]', "value": "x"}, "invalidFilter"),
        ({"op": "replace", "path": "id", "value": "new"}, "mutability"),
        ({"op": "replace", "path": "meta.lastModified", "value": "2024-01-01T00:00:00Z"}, "mutability"),
        ({"op": "add", "path": "groups", "value": [{"value": "g-1"}]}, "mutability"),
        ({"op": "add", "path": f"{MANAGER}.displayName", "value": "Boss"}, "mutability"),
        ({"op": "remove", "path": "userName"}, "mutability"),
        ({"op": "replace", "path": "userName", "value": None}, "mutability"),
        ({"op": "replace", "value": {"userName": ""}}, "mutability"),
        ({"op": "remove", "path": "emails", "value": [{"type": "work"}]}, "invalidValue"),
    ],
)
def test_errors_carry_the_rfc_scim_type(
    registry: Registry, user_doc: dict[str, Any], op: dict[str, Any], scim_type: str
) -> None:
    assert error(patch_user, registry, user_doc, op).scim_type == scim_type


def test_errors_name_the_operation(registry: Registry, user_doc: dict[str, Any]) -> None:
    err = error(
        patch_user,
        registry,
        user_doc,
        {"op": "replace", "path": "title", "value": "x"},
        {"op": "replace", "path": "active", "value": "maybe"},
    )
    assert "active" in err.detail


def test_group_display_name_cannot_be_removed(registry: Registry, group_doc: dict[str, Any]) -> None:
    err = error(patch_group, registry, group_doc, {"op": "remove", "path": "displayName"})
    assert err.scim_type == "mutability"


def test_immutable_attribute_can_be_set_once(tmp_path: Path) -> None:
    schema = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": "urn:example:params:scim:schemas:extension:hr:2.0:User",
        "name": "Hr",
        "x-scimjit-extends": ["User"],
        "attributes": [{"name": "badge", "type": "string", "mutability": "immutable"}],
    }
    (tmp_path / "hr.json").write_text(json.dumps(schema))
    registry = load_registry([tmp_path])
    path = f"{schema['id']}:badge"
    result = patch_user(registry, babs(registry), {"op": "add", "path": path, "value": "B-1"})
    assert result.document[schema["id"]] == {"badge": "B-1"}
    assert patch_user(registry, result.document, {"op": "add", "path": path, "value": "B-1"}).changed == set()
    err = error(patch_user, registry, result.document, {"op": "replace", "path": path, "value": "B-2"})
    assert err.scim_type == "mutability"


# ---------------------------------------------------------------- robustness

PATHS = [
    "userName",
    "displayName",
    "active",
    "name",
    "name.givenName",
    "emails",
    "emails.value",
    'emails[type eq "work"]',
    'emails[type eq "work"].value',
    'emails[type eq "work" and primary eq true].primary',
    'emails[value co "x" or type pr]',
    "phoneNumbers",
    "x509Certificates",
    "members",
    'members[value eq "a"]',
    "id",
    "meta",
    "groups",
    "password",
    ENTERPRISE_URN,
    f"{ENTERPRISE_URN}:employeeNumber",
    MANAGER,
    f"{MANAGER}.value",
    f"{JIT_GROUP_URN}:membershipTTL",
    "unknown",
    "name.",
    "emails[",
    "emails[type eq]",
    "a.b.c",
]
SCALARS = st.none() | st.booleans() | st.sampled_from(["True", "false", "", "work", "2024-01-01T00:00:00Z"])
JSON = st.recursive(
    SCALARS | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([*PATHS, "value", "type"]), inner)
    ),
    max_leaves=8,
)
ELEMENT = st.fixed_dictionaries(
    {"value": st.sampled_from(["a", "b@x.org", "u-1"])},
    optional={"type": st.sampled_from(["work", "home", "User"]), "primary": st.booleans() | st.just("True")},
)
VALUE = SCALARS | st.lists(ELEMENT, max_size=3) | ELEMENT | JSON


@st.composite
def operation(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly plausible operations (so that many succeed), some malformed."""
    op: dict[str, Any] = {
        "op": draw(st.sampled_from([*["add", "Add", "remove", "Remove", "replace", "Replace"] * 3, "x"]))
    }
    if draw(st.integers(0, 9)):
        op["path"] = draw(st.sampled_from(PATHS)) if draw(st.integers(0, 9)) else draw(st.text(max_size=12))
    if draw(st.integers(0, 9)):
        op["value"] = draw(VALUE)
    return op


REGISTRY = load_registry()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rt_name=st.sampled_from(["User", "Group"]), operations=st.lists(operation(), min_size=1, max_size=3))
def test_random_operations_raise_only_scim_errors(rt_name: str, operations: list[dict[str, Any]]) -> None:
    doc = babs(REGISTRY) if rt_name == "User" else a_group(REGISTRY)
    before = copy.deepcopy(doc)
    try:
        result = apply_patch(REGISTRY, REGISTRY.resource_type(rt_name), doc, body(*operations))
    except ScimError as exc:
        assert exc.status == 400
        assert exc.scim_type in {
            "invalidSyntax",
            "invalidPath",
            "invalidValue",
            "invalidFilter",
            "noTarget",
            "mutability",
        }
    else:
        assert result.document["schemas"][0] in (USER_URN, GROUP_URN)
        assert bool(result.changed) == (
            {k: v for k, v in result.document.items() if k != "schemas"}
            != {k: v for k, v in before.items() if k != "schemas"}
        )
    assert doc == before


PATH_PIECES = [
    *'emails members name manager value givenName $ref urn:x:y [ ] " . : \\ ( ) not( pr'.split(),
    *[ENTERPRISE_URN, "type eq ", '"work"', " and ", " or ", "primary eq true", " "],
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rt_name=st.sampled_from(["User", "Group"]),
    op=st.sampled_from(["add", "remove", "replace"]),
    path=st.lists(st.sampled_from(PATH_PIECES), min_size=1, max_size=8).map("".join),
    value=VALUE,
)
def test_random_paths_raise_only_scim_errors(rt_name: str, op: str, path: str, value: Any) -> None:
    doc = babs(REGISTRY) if rt_name == "User" else a_group(REGISTRY)
    try:
        apply_patch(
            REGISTRY, REGISTRY.resource_type(rt_name), doc, body({"op": op, "path": path, "value": value})
        )
    except ScimError as exc:
        assert exc.status == 400
