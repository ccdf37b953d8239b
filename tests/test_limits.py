"""Every protective limit of docs/configuration.md, hit over HTTP: filter length and nesting, page size, Bulk
operations and payload, and body size; each refused cleanly and leaving nothing written."""

from __future__ import annotations

import httpx
import pytest

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


@pytest.fixture
def limited(server):
    s = server.services.settings
    s.max_filter_length = 60
    s.max_filter_depth = 4
    s.max_page_size = 3
    s.max_bulk_operations = 2
    s.max_bulk_payload_bytes = 2000
    s.max_body_bytes = 1500
    return server


def users(server):
    return server.client.get("/Users", params={"count": 0}).json()["totalResults"]


def test_filter_length_limit(limited):
    ok = 'userName eq "' + "a" * 30 + '"'
    assert limited.client.get("/Users", params={"filter": ok}).status_code == 200
    r = limited.client.get("/Users", params={"filter": 'userName eq "' + "a" * 60 + '"'})
    assert (
        r.status_code == 400
        and r.json()["scimType"] == "invalidFilter"
        and "longer than 60" in r.json()["detail"]
    )
    r = limited.client.post("/Users/.search", json={"filter": 'userName eq "' + "a" * 60 + '"'})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter"
    r = limited.client.get(f"{limited.url}/jit/v1/audit", params={"filter": 'action eq "' + "a" * 60 + '"'})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter"


def test_filter_nesting_limit(limited):
    assert limited.client.get("/Users", params={"filter": '((userName eq "a"))'}).status_code == 200
    deep = "(" * 6 + 'userName eq "a"' + ")" * 6
    r = limited.client.get("/Users", params={"filter": deep})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter" and "deeper" in r.json()["detail"]
    r = limited.client.get(
        f"{limited.url}/jit/v1/grants", params={"filter": deep.replace("userName", "userId")}
    )
    assert r.status_code == 400 and "deeper" in r.json()["detail"]


def test_count_is_capped_at_max_page_size(limited):
    for i in range(5):
        assert limited.client.post("/Users", json={"schemas": [USER], "userName": f"p{i}"}).status_code == 201
    page = limited.client.get("/Users", params={"count": 100}).json()
    assert page["totalResults"] == 5 and page["itemsPerPage"] == 3 and len(page["Resources"]) == 3
    page = limited.client.get(f"{limited.url}/jit/v1/audit", params={"count": 100}).json()
    assert page["totalResults"] == 5 and page["itemsPerPage"] == 3
    config = limited.client.get("/ServiceProviderConfig").json()
    assert config["filter"]["maxResults"] == 3


def _bulk(n: int, pad: int = 0) -> dict:
    return {
        "schemas": [BULK],
        "Operations": [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": f"b{i}",
                "data": {"schemas": [USER], "userName": f"b{i}", "title": "x" * pad},
            }
            for i in range(n)
        ],
    }


def test_bulk_operation_count_limit(limited):
    r = limited.client.post("/Bulk", json=_bulk(3))
    assert r.status_code == 413 and "maxOperations is 2" in r.json()["detail"]
    assert users(limited) == 0
    assert limited.client.post("/Bulk", json=_bulk(2)).status_code == 200
    assert users(limited) == 2
    config = limited.client.get("/ServiceProviderConfig").json()
    assert config["bulk"]["maxOperations"] == 2 and config["bulk"]["maxPayloadSize"] == 2000


def test_bulk_payload_limit(limited):
    r = limited.client.post("/Bulk", json=_bulk(2, pad=1200))
    assert r.status_code == 413 and "maxPayloadSize" in r.json()["detail"]
    assert users(limited) == 0


def test_body_size_limit_declared_and_streamed(limited):
    big = {"schemas": [USER], "userName": "big", "title": "x" * 2000}
    r = limited.client.post("/Users", json=big)
    assert r.status_code == 413 and "1500 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"schemas": ["' + USER.encode() + b'"], "userName": "big", "title": "'
        for _ in range(40):
            yield b"x" * 100
        yield b'"}'

    r = httpx.post(
        f"{limited.scim}/Users",
        content=chunks(),
        headers={"Authorization": f"Bearer {limited.admin_token}", "Content-Type": "application/scim+json"},
    )
    assert r.status_code == 413
    assert users(limited) == 0
