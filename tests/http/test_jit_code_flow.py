"""The authorization code flow run by scimjit (GET /jit/v1/apps/{name}/login + /callback) against a real OpenID
Connect provider (Canaille, via pytest-iam): PKCE, state, nonce, the code exchange, the login hook, and the
signed result the application verifies with scimjit's JWKS."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import KeySet

from scimjit.clock import FrozenClock
from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.services import Services
from scimjit.store.tables import audit_log, signin_states
from tests.jit_helpers import WebhookReceiver, add_group, add_user
from tests.live_server import free_port, serve

DONE = "http://127.0.0.1:9/done"
DOCS = Path(__file__).resolve().parents[2] / "docs"


class Flow:
    def __init__(self, iam: Any, url: str, app: str, client: Any, db: Any) -> None:
        self.iam, self.url, self.app, self.client, self.db = iam, url, app, client, db

    def start(self, **params: str) -> tuple[httpx.Response, httpx.Cookies]:
        r = httpx.get(f"{self.url}/jit/v1/apps/{self.app}/login", params=params)
        assert r.status_code == 302, r.text
        return r, r.cookies

    def authorize(self, location: str, user: Any) -> httpx.URL:
        """The provider's side: the user is logged in and consents, so the authorization endpoint answers
        with a redirect to our callback at once."""
        self.iam.login(user)
        self.iam.consent(user, self.client)
        try:
            r = httpx.get(location)
        finally:
            self.iam.logout()
        assert r.status_code == 302, r.text
        return httpx.URL(r.headers["location"])

    def callback(self, callback: httpx.URL, cookies: httpx.Cookies) -> httpx.URL:
        r = httpx.get(str(callback), cookies=cookies)
        assert r.status_code == 302, r.text
        assert "scimjit_oidc_" in r.headers.get("set-cookie", "") and "Max-Age=0" in r.headers["set-cookie"]
        return httpx.URL(r.headers["location"])

    def claims(self, done: httpx.URL) -> dict[str, Any]:
        """The signed result, verified with scimjit's published keys."""
        assert str(done.copy_with(query=None)) == DONE and set(done.params) == {"result"}
        keys = KeySet.import_key_set(httpx.get(f"{self.url}/jit/v1/jwks.json").json())
        token = jwt.decode(done.params["result"], keys, algorithms=["ES256"])
        assert token.header["typ"] == "signin-result+jwt"
        return dict(token.claims)

    def edit_state(self, state: str, **changes: Any) -> None:
        """Change what the server keeps for a sign-in (as if it had been started differently)."""
        key = hashlib.sha256(state.encode()).hexdigest()
        with self.db.write() as conn:
            payload = conn.execute(
                sa.select(signin_states.c.payload).where(signin_states.c.state_hash == key)
            ).scalar_one()
            conn.execute(
                signin_states.update()
                .where(signin_states.c.state_hash == key)
                .values(payload={**payload, **changes})
            )


def flow_settings(
    db: Any, name: str, issuer: str, hook: str, base_url: str, conditions: dict[str, Any] | None = None
) -> Settings:
    table = {
        "name": name,
        "issuer": issuer,
        "audience": [name],
        "match": {"claim": "email", "attribute": "emails.value"},
        "require_email_verified": False,  # Canaille's ID tokens carry no email_verified claim
        "groups": [f"{name}-users"],
        "connector": {"type": "webhook", "url": hook, "secret": "change-me"},
        "client_secret": "s3cret",
        "redirect_after_login": DONE,
    }
    if conditions is not None:
        table["conditions"] = conditions
    plain = {**table, "name": f"plain{name}"}
    del plain["redirect_after_login"]
    return Settings.load(
        environ={},
        database_url=db.url,
        token_cache_seconds=0,
        base_url=base_url,
        document={"applications": [table, plain], "jit": {}},
    )


@pytest.fixture
def app_conditions() -> dict[str, Any] | None:
    """The application's login `conditions` (a test parametrizes it)."""
    return None


@pytest.fixture
def flow(db, iam_server, app_conditions) -> Iterator[Flow]:
    name = f"wiki{uuid.uuid4().hex[:6]}"
    issuer = iam_server.url.rstrip("/")
    clock = FrozenClock(datetime.now(UTC))  # the provider signs with real time
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with WebhookReceiver().running() as hook:
        services = Services.build(
            flow_settings(db, name, issuer, hook.url, url, app_conditions), db=db, clock=clock
        )
        with serve(create_app(services=services), port=port):
            client = iam_server.models.Client(
                client_id=name,
                client_secret="s3cret",
                client_name=name,
                redirect_uris=[f"{url}/jit/v1/apps/{name}/callback"],
                grant_types=["authorization_code"],
                response_types=["code"],
                scope=["openid", "profile", "email"],
                token_endpoint_auth_method="client_secret_basic",
            )
            iam_server.backend.save(client)
            client.audience = [client]
            iam_server.backend.save(client)
            yield Flow(iam_server, url, name, client, db)


@pytest.fixture
def token_posts(monkeypatch, iam_server) -> list[str]:
    """The URLs of the POSTs scimjit makes to the provider: its token endpoint (the real requests go out
    unchanged)."""
    seen: list[str] = []
    real = httpx.AsyncClient.post
    provider = iam_server.url.rstrip("/")

    async def counting(self: httpx.AsyncClient, url: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        if str(url).startswith(provider):
            seen.append(str(url))
        return await real(self, url, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "post", counting)
    return seen


def person(db: Any, iam: Any, app: str, prefix: str = "alice") -> tuple[str, Any]:
    user_name = f"{prefix}{uuid.uuid4().hex[:6]}"
    user_id = add_user(db, user_name, emails=[f"{user_name}@example.com"])
    add_group(db, f"{app}-users", [user_id])
    return user_id, iam.random_user(user_name=user_name, emails=[f"{user_name}@example.com"])


def test_code_flow_creates_then_finds_the_account(db, iam_server, flow):
    user_id, user = person(db, iam_server, flow.app)

    r, cookies = flow.start()
    location = httpx.URL(r.headers["location"])
    assert location.params["response_type"] == "code" and location.params["client_id"] == flow.app
    assert location.params["code_challenge_method"] == "S256" and location.params["nonce"]
    assert location.params["redirect_uri"] == f"{flow.url}/jit/v1/apps/{flow.app}/callback"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and f"Path=/jit/v1/apps/{flow.app}" in cookie
    assert "Secure" not in cookie  # base_url is http here
    # the browser holds a random binding value only: no state, nonce or PKCE verifier leaves the server
    (value,) = cookies.values()
    state = location.params["state"]
    with db.read() as conn:
        (row,) = conn.execute(sa.select(signin_states)).all()
    assert row.state_hash == hashlib.sha256(state.encode()).hexdigest() and state not in str(row.payload)
    assert row.payload["browser"] == hashlib.sha256(value.encode()).hexdigest()
    assert value not in str(row.payload) and row.payload["verifier"] not in value
    callback = flow.authorize(str(location), user)
    assert callback.params["state"] == state and callback.params["code"]
    claims = flow.claims(flow.callback(callback, cookies))
    assert (claims["iss"], claims["aud"], claims["sub"]) == (flow.url, flow.app, user_id)
    assert claims["status"] == "created" and claims["userName"].startswith("alice")
    assert claims["exp"] - claims["iat"] == 60 and len(claims["jti"]) == 32 and "nonce" not in claims
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(signin_states)).scalar_one() == 0

    # a second full sign-in, with the application's own nonce: the account exists
    r, cookies = flow.start(nonce="app-session-42")
    again = flow.claims(flow.callback(flow.authorize(r.headers["location"], user), cookies))
    assert (again["status"], again["sub"], again["nonce"]) == ("existing", user_id, "app-session-42")
    assert again["jti"] != claims["jti"]


def test_one_state_used_three_times_is_one_sign_in_and_one_token_post(db, iam_server, flow, token_posts):
    """Issue 11 §2: one cookie and one state gave three sign-ins and three token-endpoint POSTs."""
    _, user = person(db, iam_server, flow.app)
    r, cookies = flow.start()
    callback = flow.authorize(r.headers["location"], user)
    outcomes = [dict(flow.callback(callback, cookies).params) for _ in range(3)]
    assert "result" in outcomes[0]
    assert outcomes[1:] == [{"error": "invalid_state"}] * 2
    assert len(token_posts) == 1
    with db.read() as conn:
        allowed = conn.execute(
            sa.select(sa.func.count()).select_from(audit_log).where(audit_log.c.action == "login.allowed")
        ).scalar_one()
    assert allowed == 1


def test_states_are_bound_to_the_browser_and_refused_when_foreign(db, iam_server, flow, token_posts):
    _, user = person(db, iam_server, flow.app, "bob")
    # a tampered state, a callback without the cookie, another browser's cookie: no token POST for any
    r, cookies = flow.start()
    callback = flow.authorize(r.headers["location"], user)
    tampered = callback.copy_set_param("state", callback.params["state"] + "x")
    assert dict(flow.callback(tampered, cookies).params) == {"error": "invalid_state"}
    _, other_browser = flow.start()
    assert dict(flow.callback(callback, other_browser).params) == {"error": "invalid_state"}
    # the state was presented by the wrong browser: it is spent (one use, whoever used it)
    assert dict(flow.callback(callback, cookies).params) == {"error": "invalid_state"}
    r, cookies = flow.start()
    callback = flow.authorize(r.headers["location"], user)
    assert dict(flow.callback(callback, httpx.Cookies()).params) == {"error": "invalid_state"}
    assert token_posts == []


def test_refusals_go_back_to_the_application(db, iam_server, flow):
    outsider = f"dave{uuid.uuid4().hex[:6]}"
    add_user(db, outsider, emails=[f"{outsider}@example.com"])
    user = iam_server.random_user(user_name=outsider, emails=[f"{outsider}@example.com"])
    r, cookies = flow.start()
    done = flow.callback(flow.authorize(r.headers["location"], user), cookies)
    assert dict(done.params) == {"error": "not_entitled"}

    # the server-side nonce must be the token's
    r, cookies = flow.start()
    callback = flow.authorize(r.headers["location"], user)
    flow.edit_state(callback.params["state"], nonce="another")
    assert dict(flow.callback(callback, cookies).params) == {"error": "invalid_nonce"}

    # the provider checks the PKCE verifier: another one fails the code exchange
    r, cookies = flow.start()
    callback = flow.authorize(r.headers["location"], user)
    flow.edit_state(callback.params["state"], verifier="x" * 43)
    assert dict(flow.callback(callback, cookies).params) == {"error": "code_exchange_failed"}

    # the application's nonce must be printable ASCII of bounded length
    for bad in ("", "a b", "x" * 257):
        r = httpx.get(f"{flow.url}/jit/v1/apps/{flow.app}/login", params={"nonce": bad})
        assert (r.status_code, r.json()["error"]) == (400, "invalid_request")


def test_the_redirect_uri_and_the_cookie_follow_the_configuration_only(db, iam_server):
    """Issue 11 §2: without base_url, `Host: evil.example` made the redirect_uri http://evil.example/..."""
    issuer = iam_server.url.rstrip("/")
    for base_url, secure in (("https://scim.example.com/", True), ("http://127.0.0.1:1", False)):
        settings = flow_settings(db, "wiki", issuer, "http://127.0.0.1:9/events", base_url)
        with serve(create_app(services=Services.build(settings, db=db))) as url:
            r = httpx.get(f"{url}/jit/v1/apps/wiki/login", headers={"Host": "evil.example"})
            assert r.status_code == 302, r.text
            redirect_uri = httpx.URL(r.headers["location"]).params["redirect_uri"]
            assert redirect_uri == base_url.rstrip("/") + "/jit/v1/apps/wiki/callback"
            assert ("Secure" in r.headers["set-cookie"]) is secure
    # no base_url: the flow says what to set, and starts nothing
    settings = flow_settings(db, "wiki", issuer, "http://127.0.0.1:9/events", "")
    with db.write() as conn:
        conn.execute(signin_states.delete())
    with serve(create_app(services=Services.build(settings, db=db))) as url:
        for step in ("login", "callback"):
            r = httpx.get(f"{url}/jit/v1/apps/wiki/{step}", headers={"Host": "evil.example"})
            assert (r.status_code, r.json()["error"]) == (500, "base_url_required")
            assert "base_url" in r.json()["detail"]
        assert httpx.get(f"{url}/scim/v2/ServiceProviderConfig").status_code in (200, 401)  # the rest runs
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(signin_states)).scalar_one() == 0


def test_the_documented_verification_example_runs(db, iam_server, flow):
    """docs/jit-provisioning.md, "Verifying the result": the application-side code, run as written against a
    real result; it accepts the result once, and refuses a replay, another audience and a wrong nonce."""
    (code,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", (DOCS / "jit-provisioning.md").read_text(), re.S)
        if "class SignInResults" in block
    ]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/jit-provisioning.md", "exec"), namespace)
    user_id, user = person(db, iam_server, flow.app, "erin")
    r, cookies = flow.start(nonce="n-1")
    result = flow.callback(flow.authorize(r.headers["location"], user), cookies).params["result"]

    app = namespace["SignInResults"](flow.url, flow.app)
    with pytest.raises(ValueError, match="nonce"):
        app.verify(result, nonce="n-2")
    claims = app.verify(result, nonce="n-1")
    assert claims["sub"] == user_id
    with pytest.raises(ValueError, match="used already"):
        app.verify(result, nonce="n-1")
    with pytest.raises(ValueError, match="not a valid"):
        namespace["SignInResults"](flow.url, "another-app").verify(result)
    header, payload, sig = result.split(".")
    with pytest.raises(ValueError, match="not a valid"):
        namespace["SignInResults"](flow.url, flow.app).verify(f"{header}.{payload}.{sig[:-4]}AAAA")


@pytest.mark.parametrize("app_conditions", [{"networks": ["10.0.0.0/8"]}])
def test_login_conditions_check_the_browsers_address(db, iam_server, flow):
    """The sign-in's login conditions see the browser (here 127.0.0.1), through `client_address`."""
    user_name = f"erin{uuid.uuid4().hex[:6]}"
    user_id = add_user(db, user_name, emails=[f"{user_name}@example.com"])
    add_group(db, f"{flow.app}-users", [user_id])
    user = iam_server.random_user(user_name=user_name, emails=[f"{user_name}@example.com"])
    r, cookies = flow.start()
    done = flow.callback(flow.authorize(r.headers["location"], user), cookies)
    assert dict(done.params) == {"error": "condition_not_met"}
    with db.read() as conn:
        details = conn.execute(
            sa.select(audit_log.c.details).where(audit_log.c.action == "login.refused")
        ).scalar_one()
    assert (details["condition"], details["clientIp"]) == ("network", "127.0.0.1")


def test_apps_without_the_flow_answer_404(flow):
    for path in ("login", "callback"):
        r = httpx.get(f"{flow.url}/jit/v1/apps/plain{flow.app}/{path}")
        assert (r.status_code, r.json()["error"]) == (404, "flow_not_configured")
        r = httpx.get(f"{flow.url}/jit/v1/apps/nosuch/{path}")
        assert (r.status_code, r.json()["error"]) == (404, "unknown_application")


def test_flow_keys_are_validated_at_load(monkeypatch):
    from scimjit.config import ConfigError
    from scimjit.entitlement.apps import load_applications

    base = {
        "name": "wiki",
        "issuer": "https://idp.example.com",
        "audience": ["wiki", "wiki-web"],
        "match": {"claim": "email", "attribute": "emails.value"},
        "connector": {"type": "webhook", "url": "https://wiki.example.com/hook"},
    }
    app = load_applications({"applications": [base]})["wiki"]
    assert (app.client_id, app.client_secret, app.redirect_after_login) == ("wiki", None, None)
    assert app.scopes == ("openid", "profile", "email")
    monkeypatch.setenv("WIKI_OIDC_SECRET", "s3cret")
    app = load_applications(
        {
            "applications": [
                {
                    **base,
                    "client_id": "wiki-web",
                    "client_secret_env": "WIKI_OIDC_SECRET",
                    "redirect_after_login": "https://wiki.example.com/sso/done",
                }
            ]
        }
    )["wiki"]
    assert (app.client_id, app.client_secret) == ("wiki-web", "s3cret") and "s3cret" not in repr(app)
    for bad in (
        {"client_id": "other"},
        {"scopes": ["profile"]},
        {"redirect_after_login": "http://wiki.example.com/done"},
        {"client_secret": "a", "client_secret_env": "WIKI_OIDC_SECRET"},
        {"client_secret_env": "NOT_SET_ANYWHERE_42"},
    ):
        with pytest.raises(ConfigError):
            load_applications({"applications": [{**base, **bad}]})
