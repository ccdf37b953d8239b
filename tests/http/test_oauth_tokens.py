"""SCIM clients authenticated with OAuth 2.0 access tokens of a configured authorization server
(`[[authorization_servers]]`): JWT access tokens (RFC 9068) signed by a local issuer whose JWKS a local HTTP
server serves, and opaque tokens checked at a local introspection endpoint (RFC 7662), through a running
scimjit."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import sqlalchemy as sa

from scimjit.clock import FrozenClock
from scimjit.config import ConfigError, Settings
from scimjit.config.authservers import GRANTABLE_SCOPES
from scimjit.http.app import create_app
from scimjit.services import Services
from scimjit.store.tables import audit_log
from scimjit.store.tokens import SCOPES
from tests.jit_helpers import LocalIssuer, _QuietHandler, _serve
from tests.live_server import serve

AT = {"typ": "at+jwt"}
USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"}


class Introspection:
    """An RFC 7662 endpoint: answers by token, checks the client's Basic credentials, counts its calls."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.answers: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.down = False
        self.url = ""

    def active(self, token: str, **claims: Any) -> None:
        self.answers[token] = {"active": True, "iss": self.issuer, **claims}

    @contextmanager
    def running(self) -> Iterator[Introspection]:
        endpoint = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                endpoint.calls += 1
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                basic = "Basic " + base64.b64encode(b"scimjit:intro-secret").decode()
                if endpoint.down:
                    status, body = 503, {}
                elif self.headers.get("Authorization") != basic:
                    status, body = 401, {"error": "invalid_client"}
                else:
                    token = form.get("token", [""])[0]
                    status, body = 200, endpoint.answers.get(token, {"active": False})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        with _serve(Handler) as url:
            self.url = url + "/introspect"
            yield self


class Running:
    def __init__(self, url: str, issuer: LocalIssuer, intro: Introspection, clock: FrozenClock) -> None:
        self.url, self.issuer, self.intro, self.clock = url, issuer, intro, clock

    def now(self) -> float:
        return self.clock.now().timestamp()

    def jwt(self, **kwargs: Any) -> str:
        kwargs.setdefault("aud", "https://scim.example")
        kwargs.setdefault("header", AT)
        kwargs.setdefault("scope", "scim.write")
        kwargs.setdefault("client_id", "entra-app")
        return self.issuer.token(self.now(), **kwargs)

    def get(self, token: str, path: str = "/Users") -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def create(self, token: str, user_name: str) -> httpx.Response:
        body = {**USER, "userName": user_name}
        return httpx.post(
            f"{self.url}/Users", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


@pytest.fixture
def limits(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`[server]` overrides of a test (the per-address limit of the flood test)."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def running(db, limits) -> Iterator[Running]:
    clock = FrozenClock()
    with LocalIssuer().running() as issuer, Introspection(issuer.url).running() as intro:
        document = {
            "authorization_servers": [
                {
                    "issuer": issuer.url,
                    "audience": "https://scim.example",
                    "algorithms": ["RS256"],
                    "introspection_endpoint": intro.url,
                    "client_id": "scimjit",
                    "client_secret": "intro-secret",
                    "introspection_cache": "60s",
                    "scopes": {"scim.write": ["scim:write", "scim:read"], "scim.read": "scim:read"},
                    "clients": {"canaille": ["scim:write", "scim:read"]},
                }
            ]
        }
        settings = Settings.load(environ={}, database_url=db.url, document=document, **limits)
        services = Services.build(settings, db=db, clock=clock)
        with serve(create_app(services=services)) as url:
            yield Running(url + "/scim/v2", issuer, intro, clock)


def scim_detail(r: httpx.Response) -> str:
    return str(r.json()["detail"])


# --- JWT access tokens (RFC 9068) ------------------------------------------------------------------------


def test_a_good_jwt_access_token_writes_and_is_named_by_its_client(running, db):
    r = running.create(running.jwt(), "alice")
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    r = running.get(running.jwt(scope="scim.read"), f"/Users/{user_id}")
    assert r.status_code == 200 and r.json()["userName"] == "alice"
    # the audit trail names the OAuth principal
    host = running.issuer.url.removeprefix("http://")
    with db.engine.connect() as conn:
        actor = conn.execute(
            sa.select(audit_log.c.actor).where(
                audit_log.c.action == "scim.user.create", audit_log.c.resource_id == user_id
            )
        ).scalar_one()
    assert actor == f"oauth:{host}:entra-app"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"header": {"typ": "JWT"}}, "typ at+jwt"),
        ({"header": {}}, "typ at+jwt"),
        ({"aud": "https://other.example"}, "aud"),
        ({"lifetime": -600}, "expired"),
        ({"iat": None, "nbf": 10**10}, "not valid yet"),
        ({"alg": "RS512"}, "alg"),
        ({"header": {**AT, "kid": "nope"}}, "kid"),
    ],
)
def test_a_bad_jwt_access_token_is_401_invalid_token(running, change, reason):
    token = running.jwt(**change) if "alg" not in change else running.jwt(alg="RS512")
    r = running.get(token)
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert reason in scim_detail(r)


def test_alg_none_and_hmac_are_refused(running):
    claims = {
        "iss": running.issuer.url,
        "aud": "https://scim.example",
        "exp": int(running.now()) + 300,
        "iat": int(running.now()),
        "scope": "scim.write",
        "client_id": "entra-app",
    }

    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    unsigned = f"{part({'alg': 'none', 'typ': 'at+jwt'})}.{part(claims)}."
    assert running.get(unsigned).status_code == 401
    hs = f"{part({'alg': 'HS256', 'typ': 'at+jwt'})}.{part(claims)}.{part('x')}"
    r = running.get(hs)
    assert r.status_code == 401 and "alg" in scim_detail(r)


def test_a_forged_signature_and_an_unknown_issuer_are_refused(running):
    stranger = LocalIssuer.new_key()
    r = running.get(running.jwt(key=stranger, header={**AT, "kid": running.issuer.keys[0].kid}))
    assert r.status_code == 401 and "signature" in scim_detail(r)
    r = running.get(running.jwt(iss="https://evil.example"))
    assert r.status_code == 401 and "not a configured authorization server" in scim_detail(r)


def test_a_jwt_that_maps_to_no_scimjit_scope_is_403(running):
    r = running.get(running.jwt(scope="profile", client_id="someone-else"))
    assert r.status_code == 403, r.text
    assert "maps to no scimjit scope" in scim_detail(r)
    # a read scope does not write
    r = running.create(running.jwt(scope="scim.read", client_id="someone-else"), "bob")
    assert r.status_code == 403 and "scim:write" in scim_detail(r)


def test_the_issuer_keys_unreachable_is_503_not_401(running):
    running.issuer.down = True
    r = running.get(running.jwt())
    assert r.status_code == 503 and r.headers["retry-after"]


# --- opaque tokens (RFC 7662) -----------------------------------------------------------------------------


def test_an_active_opaque_token_is_mapped_by_client_and_cached(running):
    token = uuid.uuid4().hex
    running.intro.active(token, client_id="canaille", scope="openid profile", exp=int(running.now()) + 3600)
    r = running.create(token, "carol")
    assert r.status_code == 201, r.text
    assert running.get(token).status_code == 200
    assert running.intro.calls == 1  # the second request used the cached answer
    running.clock.advance(61)  # past introspection_cache: asked again
    assert running.get(token).status_code == 200
    assert running.intro.calls == 2


def test_a_cached_answer_never_outlives_the_token(running):
    token = uuid.uuid4().hex
    running.intro.active(token, client_id="canaille", exp=int(running.now()) + 10)
    assert running.get(token).status_code == 200
    running.clock.advance(11)
    running.intro.answers[token]["exp"] = int(running.now()) - 1
    r = running.get(token)
    assert r.status_code == 401 and "expired" in scim_detail(r)
    assert running.intro.calls == 2


def test_an_inactive_or_unknown_opaque_token_is_401_and_the_refusal_is_cached(running):
    r = running.get("not-a-known-token")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert "not active" in scim_detail(r)
    assert running.get("not-a-known-token").status_code == 401
    assert running.intro.calls == 1


def test_an_opaque_token_that_maps_to_nothing_is_403(running):
    token = uuid.uuid4().hex
    running.intro.active(token, client_id="stranger", scope="openid")
    r = running.get(token)
    assert r.status_code == 403 and "maps to no scimjit scope" in scim_detail(r)


def test_client_grants_never_reach_a_token_a_user_got_through_that_client(running):
    user_token = uuid.uuid4().hex
    running.intro.active(user_token, client_id="canaille", sub="alice", scope="openid profile")
    r = running.get(user_token)
    assert r.status_code == 403 and "maps to no scimjit scope" in scim_detail(r)
    # the same for a JWT: client credentials (sub = client_id) map, a user's token does not
    assert running.get(running.jwt(scope="openid", client_id="canaille", sub="canaille")).status_code == 200
    assert running.get(running.jwt(scope="openid", client_id="canaille", sub="alice")).status_code == 403


def test_an_unreachable_introspection_endpoint_is_503_and_not_hammered(running):
    token = uuid.uuid4().hex
    running.intro.active(token, client_id="canaille")
    running.intro.down = True
    for _ in range(5):
        r = running.get(token)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert running.intro.calls == 1  # one attempt, then the failure is remembered for a few seconds
    running.intro.down = False
    running.clock.advance(6)
    assert running.get(token).status_code == 200


def test_a_burst_with_one_new_token_asks_the_introspection_endpoint_once():
    """Concurrent requests with the same uncached token share one introspection."""
    from scimjit.config import AuthorizationServerConfig, JitSettings
    from scimjit.http.oauth import OAuthVerifier

    clock = FrozenClock()
    with Introspection("http://127.0.0.1:1").running() as intro:
        server = AuthorizationServerConfig(
            issuer="http://127.0.0.1:1",
            introspection_endpoint=intro.url,
            client_id="scimjit",
            client_secret="intro-secret",
            clients={"canaille": ("scim:write",)},
        )
        token = uuid.uuid4().hex
        intro.active(token, iss="http://127.0.0.1:1", client_id="canaille")
        verifier = OAuthVerifier((server,), JitSettings(), clock)

        async def burst() -> list[Any]:
            try:
                return await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
            finally:
                await verifier.aclose()

        principals = asyncio.run(burst())
    assert {p.name for p in principals} == {"oauth:127.0.0.1:1:canaille"}
    assert intro.calls == 1 and verifier.introspections == 1


@pytest.mark.parametrize(
    "limits", [{"client_rate_limit_per_second": 0.001, "client_rate_limit_burst": 2}], indirect=True
)
def test_a_flood_of_bogus_tokens_stops_reaching_the_introspection_endpoint(running):
    token = uuid.uuid4().hex
    running.intro.active(token, client_id="canaille")
    assert running.get(token).status_code == 200  # a good token, remembered (KnownTokens)
    statuses = [running.get(uuid.uuid4().hex).status_code for _ in range(6)]
    assert statuses == [401, 401, 429, 429, 429, 429]
    assert running.intro.calls == 3  # the good token and two bogus ones; none once the bucket is empty
    assert running.get(token).status_code == 200  # the good token is not throttled by the flood


def test_scimjit_tokens_keep_working_without_the_network(running, db):
    services = Services.build(Settings.load(environ={}, database_url=db.url), db=db)
    token = services.tokens.create("entra", ["scim:read"])
    running.intro.down = True
    running.issuer.down = True
    assert running.get(token).status_code == 200
    assert running.intro.calls == 0


# --- configuration ----------------------------------------------------------------------------------------


def test_grantable_scopes_are_scimjits_scopes():
    assert GRANTABLE_SCOPES == SCOPES


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"issuer": "https://idp.example", "audience": "x"}, "set `scopes` and/or `clients`"),
        ({"issuer": "https://idp.example", "scopes": {"a": ["scim:read"]}}, "set `audience`"),
        ({"issuer": "https://idp.example", "audience": "x", "scopes": {"a": ["root"]}}, "not root"),
        ({"issuer": "http://idp.example", "audience": "x", "clients": {"a": "admin"}}, "https://"),
        (
            {
                "issuer": "https://idp.example",
                "audience": "x",
                "clients": {"a": "admin"},
                "algorithms": ["HS256"],
            },
            "never HMAC",
        ),
        (
            {"issuer": "https://idp.example", "client_id": "c", "clients": {"a": "admin"}},
            "both `client_id` and `client_secret`",
        ),
    ],
)
def test_bad_authorization_server_tables_stop_the_start(table, message):
    with pytest.raises(ConfigError) as err:
        Settings.load(environ={}, document={"authorization_servers": [table]})
    assert message in str(err.value) and "authorization_servers" in str(err.value)


@pytest.mark.parametrize("doc", ["configuration.md", "entra.md", "okta.md"])
def test_the_documented_authorization_server_tables_are_valid(doc):
    import re
    import tomllib
    from pathlib import Path

    from scimjit.config import validate_document

    text = (Path(__file__).parents[2] / "docs" / doc).read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[authorization_servers]]" in b]
    assert blocks
    for block in blocks:
        servers = validate_document(tomllib.loads(block)).authorization_servers
        assert servers and all(s.scopes or s.clients for s in servers)
