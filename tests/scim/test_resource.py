"""`scim.resource`: POST/PUT bodies into canonical documents, value coercion, members, equality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scimjit.scim.errors import ScimError
from scimjit.scim.ignored import Ignored
from scimjit.scim.resource import (
    coerce,
    is_empty,
    is_equal_value,
    members_of,
    missing_required,
    normalise,
    parse_datetime,
)
from scimjit.scim.schema import ENTERPRISE_URN, GROUP_URN, JIT_GROUP_URN, USER_URN, Attribute, Registry

# In the repository (MIT test data of elimity-com/scim); `requires_captures` stays as a label, never a skip.
CAPTURES = Path(__file__).resolve().parents[1] / "idp_captures"
requires_captures = pytest.mark.usefixtures()


def capture(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES / name).read_text())["request"]


def user(registry: Registry, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return normalise(registry, registry.resource_type("User"), body, **kwargs)


def group(registry: Registry, body: dict[str, Any]) -> dict[str, Any]:
    return normalise(registry, registry.resource_type("Group"), body)


def scim_type(exc: pytest.ExceptionInfo[ScimError]) -> str | None:
    assert exc.value.status == 400
    return exc.value.scim_type


@requires_captures
def test_entra_create_user(registry: Registry) -> None:
    doc = user(registry, capture("entra/create_user.json"))
    assert doc == {
        "schemas": [USER_URN, ENTERPRISE_URN],  # declared, kept although it holds no data
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
        "active": True,
        "emails": [
            {
                "primary": True,
                "type": "work",
                "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com",
            }
        ],
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
    }  # meta (readOnly) and roles: [] (unassigned) are gone


@requires_captures
def test_okta_create_user_keeps_password_for_the_caller_and_drops_groups(registry: Registry) -> None:
    doc = user(registry, capture("okta/create_user.json"))
    assert doc["password"] == "1mz050nq"
    assert "groups" not in doc
    assert doc["schemas"] == [USER_URN]
    assert doc["locale"] == "en-US"


@requires_captures
def test_okta_put_drops_id_and_meta(registry: Registry) -> None:
    doc = user(registry, capture("okta/update_user.json"))
    assert "id" not in doc and "meta" not in doc and "groups" not in doc
    assert doc["name"] == {"givenName": "Another", "middleName": "Excited", "familyName": "User"}


@requires_captures
@pytest.mark.parametrize("name", ["entra/create_group.json", "okta/create_group.json"])
def test_create_group_captures(registry: Registry, name: str) -> None:
    body = capture(name)
    doc = group(registry, body)
    assert doc["schemas"] == [GROUP_URN]
    assert doc["displayName"] == body["displayName"]
    assert "members" not in doc and "meta" not in doc


def test_names_are_case_insensitive_and_stored_canonically(registry: Registry) -> None:
    doc = user(
        registry,
        {
            "SCHEMAS": [USER_URN.upper()],
            "USERNAME": "babs",
            "Name": {"GIVENNAME": "Barbara"},
            "Emails": [{"VALUE": "babs@example.com", "Type": "work"}],
            ENTERPRISE_URN.lower(): {"EMPLOYEENUMBER": "42"},
        },
    )
    assert doc == {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "userName": "babs",
        "name": {"givenName": "Barbara"},
        "emails": [{"value": "babs@example.com", "type": "work"}],
        ENTERPRISE_URN: {"employeeNumber": "42"},
    }


def test_unknown_schema_urn_is_ignored_and_noted(registry: Registry) -> None:
    ignored = Ignored()
    doc = user(
        registry, {"schemas": [USER_URN, "urn:example:custom:2.0:User"], "userName": "babs"}, ignored=ignored
    )
    assert doc == {"schemas": [USER_URN], "userName": "babs"}  # only the server's own schemas are kept
    assert ignored.names == ["urn:example:custom:2.0:User"]


def test_unknown_schema_urn_is_invalid_value_when_strict(registry: Registry) -> None:
    with pytest.raises(ScimError) as err:
        user(
            registry,
            {"schemas": [USER_URN, "urn:example:custom:2.0:User"], "userName": "babs"},
            ignored=Ignored(strict=True),
        )
    assert scim_type(err) == "invalidValue"
    assert "urn:example:custom:2.0:User" in err.value.detail


def test_schemas_given_must_name_the_core_schema(registry: Registry) -> None:
    for schemas in (["urn:example:custom:2.0:User"], [ENTERPRISE_URN]):
        with pytest.raises(ScimError) as err:
            user(registry, {"schemas": schemas, "userName": "babs"})
        assert scim_type(err) == "invalidValue"
        assert USER_URN in err.value.detail


def test_schemas_must_be_a_list_of_strings(registry: Registry) -> None:
    with pytest.raises(ScimError) as err:
        user(registry, {"schemas": USER_URN, "userName": "babs"})
    assert scim_type(err) == "invalidValue"


def test_unknown_attributes_and_extensions_are_ignored(registry: Registry) -> None:
    doc = user(
        registry,
        {
            "userName": "babs",
            "favouriteColour": "green",
            "name": {"givenName": "B", "nickname2": "x"},
            "urn:example:custom:2.0:User": {"costCentre": "1"},
            ENTERPRISE_URN: {"department": "R&D", "floor": 3},
        },
    )
    assert doc == {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "userName": "babs",
        "name": {"givenName": "B"},
        ENTERPRISE_URN: {"department": "R&D"},
    }


def test_read_only_attributes_are_dropped(registry: Registry) -> None:
    doc = user(
        registry,
        {
            "id": "abc",
            "meta": {"resourceType": "User"},
            "userName": "babs",
            "groups": [{"value": "g1"}],
            ENTERPRISE_URN: {"manager": {"value": "m1", "displayName": "Boss"}},
        },
    )
    assert doc == {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "userName": "babs",
        ENTERPRISE_URN: {"manager": {"value": "m1"}},
    }


def test_required_attributes(registry: Registry) -> None:
    with pytest.raises(ScimError) as err:
        user(registry, {"schemas": [USER_URN], "displayName": "Babs"})
    assert scim_type(err) == "invalidValue"
    assert "userName" in err.value.detail
    with pytest.raises(ScimError) as err:
        user(registry, {"userName": ""})  # empty is absent
    assert scim_type(err) == "invalidValue"
    with pytest.raises(ScimError) as err:
        group(registry, {"members": []})
    assert "displayName" in err.value.detail
    assert user(registry, {"displayName": "Babs"}, partial=True) == {
        "schemas": [USER_URN],
        "displayName": "Babs",
    }


def test_missing_required_lists_what_is_missing(registry: Registry) -> None:
    rt = registry.resource_type("User")
    assert missing_required(registry, rt, {"displayName": "x"}) == ["userName"]
    assert missing_required(registry, rt, {"userName": "x"}) == []


@pytest.mark.parametrize("raw", [True, "True", "true", "TRUE"])
def test_boolean_strings_as_entra_sends_them(registry: Registry, raw: Any) -> None:
    assert user(registry, {"userName": "b", "active": raw})["active"] is True


@pytest.mark.parametrize("raw", [False, "False", "false"])
def test_false_boolean_strings(registry: Registry, raw: Any) -> None:
    assert user(registry, {"userName": "b", "active": raw})["active"] is False


@pytest.mark.parametrize("raw", ["yes", 1, 0, {"x": 1}])
def test_other_booleans_are_invalid_value(registry: Registry, raw: Any) -> None:
    with pytest.raises(ScimError) as err:
        user(registry, {"userName": "b", "active": raw})
    assert scim_type(err) == "invalidValue"


def test_integer(registry: Registry) -> None:
    rt = registry.resource_type("Group")
    doc = normalise(registry, rt, {"displayName": "g", JIT_GROUP_URN: {"membershipTTL": 3600.0}})
    assert doc[JIT_GROUP_URN] == {"membershipTTL": 3600}
    assert isinstance(doc[JIT_GROUP_URN]["membershipTTL"], int)
    assert doc["schemas"] == [GROUP_URN, JIT_GROUP_URN]
    for bad in ["3600", True, 1.5]:
        with pytest.raises(ScimError) as err:
            normalise(registry, rt, {"displayName": "g", JIT_GROUP_URN: {"membershipTTL": bad}})
        assert scim_type(err) == "invalidValue"


def test_extension_must_be_an_object(registry: Registry) -> None:
    with pytest.raises(ScimError) as err:
        user(registry, {"userName": "b", ENTERPRISE_URN: "x"})
    assert scim_type(err) == "invalidValue"


def test_decimal() -> None:
    attr = Attribute("score", "decimal")
    assert coerce(attr, 2, "score") == 2.0
    assert isinstance(coerce(attr, 2, "score"), float)
    for bad in ["2", True, float("nan"), 10**400]:
        with pytest.raises(ScimError):
            coerce(attr, bad, "score")


def test_datetime_is_validated_and_stored_in_utc() -> None:
    attr = Attribute("when", "dateTime")
    assert coerce(attr, "2024-01-31T13:00:00+01:00", "when") == "2024-01-31T12:00:00Z"
    assert coerce(attr, "2024-01-31t12:00:00.5z", "when") == "2024-01-31T12:00:00.500000Z"
    assert coerce(attr, "2024-01-31T12:00:00", "when") == "2024-01-31T12:00:00Z"
    for bad in ["2024-01-31", "2024W01", "31/01/2024 12:00", "2024-13-01T00:00:00Z", 1706702400]:
        with pytest.raises(ScimError) as err:
            coerce(attr, bad, "when")
        assert err.value.scim_type == "invalidValue"
    assert parse_datetime("nonsense") is None


def test_binary_must_be_base64(registry: Registry) -> None:
    doc = user(registry, {"userName": "b", "x509Certificates": [{"value": "TUlJ\nQ0FB"}]})
    assert doc["x509Certificates"] == [{"value": "TUlJ\nQ0FB"}]
    with pytest.raises(ScimError) as err:
        user(registry, {"userName": "b", "x509Certificates": [{"value": "not base64!"}]})
    assert scim_type(err) == "invalidValue"
    with pytest.raises(ScimError):
        user(registry, {"userName": "b", "x509Certificates": [{"value": "\x80"}]})


def test_string_attributes_take_strings_only(registry: Registry) -> None:
    with pytest.raises(ScimError) as err:
        user(registry, {"userName": 42})
    assert scim_type(err) == "invalidValue"
    assert "userName" in err.value.detail


def test_single_value_for_multi_valued_is_wrapped(registry: Registry) -> None:
    doc = user(registry, {"userName": "b", "emails": {"value": "b@example.com"}})
    assert doc["emails"] == [{"value": "b@example.com"}]


def test_complex_value_must_be_an_object(registry: Registry) -> None:
    with pytest.raises(ScimError) as err:
        user(registry, {"userName": "b", "name": "Barbara"})  # name has no `value` sub-attribute
    assert scim_type(err) == "invalidValue"
    with pytest.raises(ScimError):
        user(registry, {"userName": "b", "emails": [["nested"]]})


def test_bare_manager_id_becomes_its_value(registry: Registry) -> None:
    doc = user(registry, {"userName": "b", ENTERPRISE_URN: {"manager": "m-1"}})
    assert doc[ENTERPRISE_URN] == {"manager": {"value": "m-1"}}


def test_at_most_one_primary(registry: Registry) -> None:
    emails = [{"value": "a@x", "primary": True}, {"value": "b@x", "primary": "True"}]
    with pytest.raises(ScimError) as err:
        user(registry, {"userName": "b", "emails": emails})
    assert scim_type(err) == "invalidValue"


def test_empty_values_are_absent(registry: Registry) -> None:
    doc = user(
        registry,
        {
            "userName": "b",
            "displayName": "",
            "nickName": None,
            "name": {"givenName": None},
            "emails": [None, {}, {"value": ""}],
            "roles": [],
            ENTERPRISE_URN: {},
        },
    )
    assert doc == {"schemas": [USER_URN], "userName": "b"}


def test_canonical_values_are_not_enforced(registry: Registry) -> None:
    doc = user(registry, {"userName": "b", "emails": [{"value": "smtp:b@x", "type": "proxyAddress"}]})
    assert doc["emails"][0]["type"] == "proxyAddress"


def test_body_must_be_an_object(registry: Registry) -> None:
    with pytest.raises(ScimError) as err:
        user(registry, ["userName"])  # type: ignore[arg-type]
    assert scim_type(err) == "invalidSyntax"


def test_group_members_are_kept_for_the_caller(registry: Registry) -> None:
    doc = group(
        registry,
        {
            "displayName": "g",
            "members": [{"value": "u1", "type": "user", "$ref": None}, {"value": "g2", "display": "G"}],
        },
    )
    assert doc["members"] == [{"value": "u1", "type": "user"}, {"value": "g2", "display": "G"}]
    assert members_of(doc["members"]) == [
        {"value": "u1", "type": "User"},
        {"value": "g2", "type": None, "display": "G"},
    ]


def test_members_of_validates_and_dedupes() -> None:
    assert members_of(None) == []
    assert members_of([{"value": "a"}, {"value": "a", "type": "Group"}]) == [{"value": "a", "type": None}]
    with pytest.raises(ScimError) as err:
        members_of([{"display": "no id"}])
    assert err.value.scim_type == "invalidValue"
    with pytest.raises(ScimError):
        members_of([{"value": "a", "type": "Robot"}])


def test_is_equal_value_honours_case_exact(registry: Registry) -> None:
    rt = registry.resource_type("User")
    emails = registry.resolve(rt, "emails").attr
    assert is_equal_value(emails, {"value": "A@X", "type": "Work"}, {"type": "work", "value": "a@x"})
    assert not is_equal_value(emails, {"value": "a@x"}, {"value": "a@x", "type": "work"})
    external_id = registry.resolve(rt, "externalId").attr
    assert not is_equal_value(external_id, "ABC", "abc")
    assert is_equal_value(external_id, "abc", "abc")
    assert not is_equal_value(registry.resolve(rt, "active").attr, True, 1)


def test_is_empty() -> None:
    assert all(is_empty(v) for v in (None, "", [], {}))
    assert not any(is_empty(v) for v in (0, False, " ", [None], {"a": None}))
