"""Every protective limit of docs/configuration.md, hit over HTTP: filter length and nesting, page size, Bulk
operations and payload, and body size; each refused cleanly and leaving nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


@pytest.fixture
def limited(server):
    s = server.services.settings
    s.max_filter_length = 60
    s.max_filter_depth = 4
    s.filter_max_terms = 3
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


def test_filter_term_limit(limited):
    three = 'id eq "a" or id eq "b" or title pr'
    assert limited.client.get("/Users", params={"filter": three}).status_code == 200
    four = three + ' or id eq "c"'
    for r in (
        limited.client.get("/Users", params={"filter": four}),
        limited.client.post("/Users/.search", json={"filter": four}),
        limited.client.post("/.search", json={"filter": four}),
        limited.client.get(
            "/Groups", params={"filter": "members[type pr or type pr or type pr or value pr]"}
        ),
    ):
        assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter", r.text
        assert "more than 3 comparisons" in r.json()["detail"] and "filter_max_terms" in r.json()["detail"]
    r = limited.client.get(
        f"{limited.url}/jit/v1/audit", params={"filter": "actor pr or actor pr or action pr or actor pr"}
    )
    assert r.status_code == 400 and "more than 3 comparisons" in r.json()["detail"]


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


# ------------------------------------------------------------------ per-address limit (scimjit.http.ratelimit)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_defaults_let_real_clients_through_and_bound_anonymous_callers():
    from scimjit.config import Settings

    s = Settings.load(environ={})
    assert (s.rate_limit_per_second, s.rate_limit_burst) == (1000.0, 2000)
    assert (s.client_rate_limit_per_second, s.client_rate_limit_burst) == (20.0, 200)
    assert s.group_patch_response_max_members == 100
    s = Settings.load(
        environ={
            "SCIMJIT_CLIENT_RATE_LIMIT_PER_SECOND": "0.5",
            "SCIMJIT_CLIENT_RATE_LIMIT_BURST": "3",
            "SCIMJIT_GROUP_PATCH_RESPONSE_MAX_MEMBERS": "7",
        }
    )
    assert (s.client_rate_limit_per_second, s.client_rate_limit_burst) == (0.5, 3)
    assert s.group_patch_response_max_members == 7


def test_buckets_stay_bounded_under_address_spray_and_peeks_store_nothing():
    from scimjit.http.ratelimit import RateLimiter

    t = FakeMonotonic()
    limiter = RateLimiter(1, 2, clock=t, max_keys=1000, subject="address")
    for i in range(50_000):
        limiter.charge(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(limiter) == 1000
    assert all(limiter.peek(f"192.0.2.{i}") == 0 for i in range(200)) and len(limiter) == 1000
    # the most recently used keys are the ones kept, with their state
    last = "10.0.195.79"  # i = 49,999
    limiter.charge(last)
    assert limiter.peek(last) > 0 and limiter.wait_time(last) > 0
    assert RateLimiter(0, 1, clock=t).peek("x") == 0  # 0 disables


@dataclass
class Guarded:
    url: str
    services: Any
    clock: FakeMonotonic
    admin: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def guarded(db, clock) -> Iterator[Guarded]:
    """A server with a per-address bucket of 5 refilling at 1/s, on a clock that moves only when told."""
    from scimjit.config import Settings
    from scimjit.http.app import create_app
    from scimjit.http.ratelimit import RateLimiter
    from scimjit.services import Services
    from tests.live_server import serve

    settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0)
    services = Services.build(settings, db=db, clock=clock)
    app = create_app(services=services)
    t = FakeMonotonic()
    app.state.client_limiter = RateLimiter(1, 5, clock=t, subject="address")
    admin = services.tokens.create("idp", ["scim:read", "scim:write"])
    with serve(app) as url:
        yield Guarded(url, services, t, admin)


@contextmanager
def token_lookups(services) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM tokens" in statement:
            seen.append(statement)

    sa.event.listen(services.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(services.db.engine, "before_cursor_execute", record)


def test_a_bogus_token_flood_gets_429_while_a_valid_token_keeps_working(guarded):
    bogus = "sjt_0123456789abcdef_" + "x" * 43  # well-formed: each one costs a lookup unless refused first
    with guarded.client(guarded.admin) as idp, guarded.client(bogus) as flood:
        assert idp.get("/scim/v2/Users").status_code == 200
        statuses = [flood.get("/scim/v2/Users").status_code for _ in range(5)]
        assert statuses == [401] * 5
        with token_lookups(guarded.services) as lookups:
            refused = [flood.get("/scim/v2/Users") for _ in range(50)]
            ok = [idp.get("/scim/v2/Users").status_code for _ in range(20)]
        assert {r.status_code for r in refused} == {429}
        body = refused[0].json()
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == "429"
        assert "address" in body["detail"] and refused[0].headers["retry-after"] == "1"
        assert ok == [200] * 20  # the valid token is charged to its own bucket only
        assert len(lookups) == 20  # the valid token's lookups (no cache here); none for the refused flood
        # the same for a missing token and on /jit/v1 (JIT error shape there)
        with guarded.client() as anonymous:
            assert anonymous.get("/scim/v2/Groups").status_code == 429
            r = anonymous.get("/jit/v1/apps")
            assert r.status_code == 429 and r.json()["error"] == "rate_limited" and r.headers["retry-after"]
            r = anonymous.get("/jit/v1/audit")  # the admin views answer SCIM errors, their 429 too
            assert r.status_code == 429 and r.json()["status"] == "429"
        guarded.clock.now += 1  # one more failure is allowed per second
        assert [flood.get("/scim/v2/Users").status_code for _ in range(2)] == [401, 429]
        assert (
            idp.post("/scim/v2/Users", json={"schemas": [USER], "userName": "still-works"}).status_code == 201
        )


def test_a_login_hook_flood_is_refused_before_any_work(guarded):
    body = {"application": "wiki", "id_token": "eyJhbGciOiJSUzI1NiJ9.e30.sig"}
    with guarded.client("sjt_feedfeedfeedfeed_" + "y" * 43) as flood:
        statuses = [flood.post("/jit/v1/logins", json=body).status_code for _ in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        r = flood.post("/jit/v1/logins", json=body)
        assert r.json()["error"] == "rate_limited" and r.headers["retry-after"] == "1"


def test_anonymous_sign_in_and_id_token_endpoints_are_charged_every_request(guarded):
    with guarded.client() as browser:
        statuses = [browser.get("/jit/v1/apps/wiki/login").status_code for _ in range(3)]
        statuses += [browser.get("/jit/v1/apps/wiki/callback?code=c&state=s").status_code for _ in range(2)]
        assert 429 not in statuses
        assert browser.get("/jit/v1/apps/wiki/login").status_code == 429
        assert browser.get("/jit/v1/apps/wiki/callback").status_code == 429
        r = browser.post("/jit/v1/requests", json={"application": "wiki", "id_token": "x", "group": "g"})
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    guarded.clock.now += 10
    with guarded.client() as browser:
        assert browser.get("/jit/v1/apps/wiki/login").status_code != 429
