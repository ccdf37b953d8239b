"""The authorization code flow run by scimjit (GET /jit/v1/apps/{name}/login + /callback) against a real OpenID
Connect provider (Canaille, via pytest-iam): PKCE, state, nonce, the code exchange, then the login hook."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from scimjit.clock import FrozenClock
from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.http.jit.signin import sign, unsign
from scimjit.services import Services
from scimjit.store.tables import audit_log
from tests.jit_helpers import WebhookReceiver, add_group, add_user
from tests.live_server import serve

DONE = "http://127.0.0.1:9/done"


class Flow:
    def __init__(self, iam: Any, url: str, app: str, client: Any) -> None:
        self.iam, self.url, self.app, self.client = iam, url, app, client

    def start(self) -> tuple[httpx.Response, httpx.Cookies]:
        r = httpx.get(f"{self.url}/jit/v1/apps/{self.app}/login")
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


@pytest.fixture
def app_conditions() -> dict[str, Any] | None:
    """The application's login `conditions` (a test parametrizes it)."""
    return None


@pytest.fixture
def flow(db, iam_server, app_conditions) -> Iterator[Flow]:
    name = f"wiki{uuid.uuid4().hex[:6]}"
    issuer = iam_server.url.rstrip("/")
    clock = FrozenClock(datetime.now(UTC))  # the provider signs with real time
    with WebhookReceiver().running() as hook:
        table = {
            "name": name,
            "issuer": issuer,
            "audience": [name],
            "match": {"claim": "email", "attribute": "emails.value"},
            "groups": [f"{name}-users"],
            "connector": {"type": "webhook", "url": hook.url, "secret": "change-me"},
            "client_secret": "s3cret",
            "redirect_after_login": DONE,
        }
        if app_conditions is not None:
            table["conditions"] = app_conditions
        plain = {**table, "name": f"plain{name}"}
        del plain["redirect_after_login"]
        settings = Settings.load(
            environ={},
            database_url=db.url,
            token_cache_seconds=0,
            session_secret="test-secret",
            document={"applications": [table, plain], "jit": {}},
        )
        services = Services.build(settings, db=db, clock=clock)
        with serve(create_app(services=services)) as url:
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
            yield Flow(iam_server, url, name, client)


def test_code_flow_creates_then_finds_the_account(db, iam_server, flow):
    user_name = f"alice{uuid.uuid4().hex[:6]}"
    user_id = add_user(db, user_name, emails=[f"{user_name}@example.com"])
    add_group(db, f"{flow.app}-users", [user_id])
    user = iam_server.random_user(user_name=user_name, emails=[f"{user_name}@example.com"])

    r, cookies = flow.start()
    location = httpx.URL(r.headers["location"])
    assert location.params["response_type"] == "code" and location.params["client_id"] == flow.app
    assert location.params["code_challenge_method"] == "S256" and location.params["nonce"]
    assert location.params["redirect_uri"] == f"{flow.url}/jit/v1/apps/{flow.app}/callback"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and f"Path=/jit/v1/apps/{flow.app}" in cookie
    callback = flow.authorize(str(location), user)
    assert callback.params["state"] == location.params["state"] and callback.params["code"]
    done = flow.callback(callback, cookies)
    assert str(done.copy_with(query=None)) == DONE
    assert dict(done.params) == {"status": "created", "user": user_id}

    # a second full sign-in: the account exists
    r, cookies = flow.start()
    done = flow.callback(flow.authorize(r.headers["location"], user), cookies)
    assert dict(done.params) == {"status": "existing", "user": user_id}

    # a tampered state, a replayed code without the cookie, a forged cookie
    r, cookies = flow.start()
    callback = flow.authorize(r.headers["location"], user)
    tampered = callback.copy_set_param("state", callback.params["state"] + "x")
    assert dict(flow.callback(tampered, cookies).params) == {"error": "invalid_state"}
    assert dict(flow.callback(callback, httpx.Cookies()).params) == {"error": "invalid_state"}
    name, value = next(iter(cookies.items()))
    payload = unsign(b"test-secret", value)
    assert payload is not None and payload["state"] == callback.params["state"]
    forged = httpx.Cookies({name: sign(b"another-key", payload)})
    assert dict(flow.callback(callback, forged).params) == {"error": "invalid_state"}


def test_refusals_go_back_to_the_application(db, iam_server, flow):
    outsider = f"dave{uuid.uuid4().hex[:6]}"
    add_user(db, outsider, emails=[f"{outsider}@example.com"])
    user = iam_server.random_user(user_name=outsider, emails=[f"{outsider}@example.com"])
    r, cookies = flow.start()
    done = flow.callback(flow.authorize(r.headers["location"], user), cookies)
    assert dict(done.params) == {"error": "not_entitled"}

    # the cookie's nonce must be the token's: a cookie of another sign-in, re-signed with the right state
    r, cookies = flow.start()
    callback = flow.authorize(r.headers["location"], user)
    name, value = next(iter(cookies.items()))
    payload = unsign(b"test-secret", value)
    assert payload is not None
    swapped = httpx.Cookies({name: sign(b"test-secret", {**payload, "nonce": "another"})})
    assert dict(flow.callback(callback, swapped).params) == {"error": "invalid_nonce"}

    # the provider checks the PKCE verifier: another one fails the code exchange
    r, cookies = flow.start()
    callback = flow.authorize(r.headers["location"], user)
    name, value = next(iter(cookies.items()))
    payload = unsign(b"test-secret", value)
    assert payload is not None
    swapped = httpx.Cookies({name: sign(b"test-secret", {**payload, "verifier": "x" * 43})})
    assert dict(flow.callback(callback, swapped).params) == {"error": "code_exchange_failed"}


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
