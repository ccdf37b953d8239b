"""userName compares by its PRECIS key (RFC 8265) in SCIM uniqueness and filters, over a real socket, on SQLite
and PostgreSQL: U+212A KELVIN SIGN is refused, fullwidth letters map to their ordinary ones."""

from __future__ import annotations

import pytest

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
KELVIN_KATE = "\u212aate"
FULLWIDTH_KATE = "\uff4b\uff41\uff54\uff45"


def post_user(server, user_name):
    return server.client.post("/Users", json={"schemas": [USER], "userName": user_name})


def user_names(server, filter_):
    body = server.client.get("/Users", params={"filter": filter_}).json()
    return sorted(r["userName"] for r in body["Resources"])


def assert_refused_naming_kelvin(response):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["scimType"] == "invalidValue"
    assert "U+212A KELVIN SIGN" in body["detail"]


def test_post_with_a_kelvin_sign_is_refused_and_nothing_is_written(server):
    assert_refused_naming_kelvin(post_user(server, KELVIN_KATE))
    assert server.client.get("/Users").json()["totalResults"] == 0
    assert post_user(server, "kate").status_code == 201  # the name it impersonated is still free


def test_put_and_patch_to_a_kelvin_sign_are_refused_and_the_name_stays(server):
    kate = post_user(server, "kate").json()
    r = server.client.put(f"/Users/{kate['id']}", json={"schemas": [USER], "userName": KELVIN_KATE})
    assert_refused_naming_kelvin(r)
    r = server.client.patch(
        f"/Users/{kate['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "userName", "value": KELVIN_KATE}],
        },
    )
    assert_refused_naming_kelvin(r)
    assert server.client.get(f"/Users/{kate['id']}").json()["userName"] == "kate"
    assert user_names(server, 'userName eq "kate"') == ["kate"]


def test_fullwidth_user_name_is_the_same_name_as_ascii(server):
    assert post_user(server, FULLWIDTH_KATE).status_code == 201
    r = post_user(server, "Kate")
    assert r.status_code == 409 and r.json()["scimType"] == "uniqueness"
    assert user_names(server, 'userName eq "kate"') == [FULLWIDTH_KATE]  # stored as sent, found by its key


def test_filters_compare_keys(server):
    post_user(server, "kate")
    post_user(server, "Kate Smith")
    assert user_names(server, 'userName eq "KATE"') == ["kate"]
    assert user_names(server, f'userName eq "{FULLWIDTH_KATE}"') == ["kate"]
    assert user_names(server, 'userName eq "kate smith"') == ["Kate Smith"]
    assert user_names(server, 'userName sw "KA"') == ["Kate Smith", "kate"]
    assert user_names(server, 'userName co "E S"') == ["Kate Smith"]
    assert user_names(server, 'userName sw "\uff2b"') == ["Kate Smith", "kate"]  # fullwidth K fragment


@pytest.mark.parametrize("op", ["eq", "sw", "co", "ew"])
def test_a_kelvin_sign_in_a_filter_matches_nobody(server, op):
    post_user(server, "kate")
    value = KELVIN_KATE if op in ("eq", "sw") else "\u212aat" if op == "co" else "\u212aate"
    assert user_names(server, f'userName {op} "{value}"') == []
    assert user_names(server, f'not (userName {op} "{value}")') == ["kate"]


def test_a_kelvin_sign_in_ne_matches_everybody(server):
    post_user(server, "kate")
    assert user_names(server, f'userName ne "{KELVIN_KATE}"') == ["kate"]
