"""The JIT endpoints over a real socket: the login hook with application-bound tokens, the JSON error shape,
and the outbox admin API; plus the in-process worker of `serve` delivering what logins enqueue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from scimjit.config import Settings
from scimjit.delivery import worker
from scimjit.http.app import create_app
from scimjit.services import Services
from tests.jit_helpers import LocalIssuer, WebhookReceiver, add_group, add_user, update_user, wiki_config
from tests.live_server import serve


@dataclass
class Jit:
    url: str
    services: Services
    issuer: LocalIssuer
    hook: WebhookReceiver
    clock: Any
    admin: dict[str, str]
    login_token: dict[str, str]
    app: Any = None

    def token(self, **claims: Any) -> str:
        claims.setdefault("preferred_username", "alice")
        return self.issuer.token(self.clock.now().timestamp(), **claims)

    def login(self, id_token: str | None = None, app: str = "wiki", headers: dict[str, str] | None = None):
        body = {"application": app, "id_token": id_token or self.token()}
        return httpx.post(
            f"{self.url}/jit/v1/logins",
            json=body,
            headers=self.login_token if headers is None else headers,
            timeout=30,
        )


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@pytest.fixture
def jit(db, clock, issuer) -> Iterator[Jit]:
    with WebhookReceiver().running() as hook:
        raw = wiki_config(issuer.url, hook.url, jit='login_wait = "1s"\nworker_poll_interval = "0.05s"')
        settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0, document=raw)
        services = Services.build(settings, db=db, clock=clock)
        app = create_app(services=services, background=[worker.background_task(services.engine)])
        alice = add_user(db, "alice")
        add_group(db, "wiki-users", [alice])
        add_user(db, "bob")
        admin = services.tokens.create("admin", ["admin"])
        login_token = services.tokens.create("wiki-login", ["login"], application="wiki")
        with serve(app) as url:
            yield Jit(
                url,
                services,
                issuer,
                hook,
                clock,
                {"Authorization": f"Bearer {admin}"},
                {"Authorization": f"Bearer {login_token}"},
                app,
            )


def test_login_creates_then_finds_the_account(jit):
    r = jit.login()
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["account"]["status"] == "created" and body["account"]["downstreamId"] == "wiki-alice"
    assert body["user"]["userName"] == "alice" and body["roles"] == []
    r = jit.login()
    assert r.json()["account"]["status"] == "existing"
    assert len(jit.hook.of_type("account.create")) == 1


def test_errors_are_json_with_reason_codes(jit):
    cases = [
        (jit.login(jit.token(aud="other")), 401, "wrong_audience"),
        (jit.login("garbage"), 401, "invalid_token"),
        (jit.login(jit.token(preferred_username="bob")), 403, "not_entitled"),
        (jit.login(jit.token(preferred_username="zed")), 403, "unknown_user"),
        (jit.login(headers={}), 401, "unauthorized"),
        (jit.login(headers={"Authorization": "Bearer sjt_nope_nope"}), 401, "unauthorized"),
        (jit.login(app="crm"), 403, "wrong_application"),
    ]
    for response, status, reason in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"] == reason
        assert set(response.json()) == {"error", "detail"}
    bad = httpx.post(f"{jit.url}/jit/v1/logins", json={"application": "wiki"}, headers=jit.login_token)
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")
    notjson = httpx.post(f"{jit.url}/jit/v1/logins", content=b"{", headers=jit.login_token)
    assert (notjson.status_code, notjson.json()["error"]) == (400, "invalid_request")


def test_a_scim_token_cannot_call_the_login_hook(jit):
    scim = jit.services.tokens.create("provisioner", ["scim:write"])
    r = jit.login(headers={"Authorization": f"Bearer {scim}"})
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")


def test_transient_failure_is_503_with_retry_after(jit):
    jit.hook.fail_next(503)
    r = jit.login()
    assert r.status_code == 503
    assert r.json()["error"] == "downstream_unavailable"
    assert int(r.headers["retry-after"]) >= 1
    assert jit.login().json()["account"]["status"] == "created"


def test_the_in_process_worker_delivers_updates(jit, db):
    jit.login()
    user_id = jit.login().json()["user"]["id"]
    update_user(db, user_id, displayName="Alice L.")
    assert jit.login().status_code == 200
    deadline = time.monotonic() + 10
    while not jit.hook.of_type("account.update") and time.monotonic() < deadline:
        time.sleep(0.05)
    (update,) = jit.hook.of_type("account.update")
    assert update["user"]["displayName"] == "Alice L."


def test_outbox_admin_api(jit):
    jit.hook.fail_next(400)
    assert jit.login().json()["error"] == "provisioning_failed"
    dead = httpx.get(f"{jit.url}/jit/v1/outbox", params={"status": "dead"}, headers=jit.admin).json()
    assert dead["totalResults"] == 1
    event_id = dead["Resources"][0]["id"]
    one = httpx.get(f"{jit.url}/jit/v1/outbox/{event_id}", headers=jit.admin).json()
    assert one["status"] == "dead" and one["event"]["type"] == "account.create"
    assert httpx.get(f"{jit.url}/jit/v1/outbox/{event_id}", headers=jit.login_token).status_code == 403
    r = httpx.post(f"{jit.url}/jit/v1/outbox/{event_id}/retry", headers=jit.admin)
    assert r.json() == {"retried": [event_id]}
    r = httpx.post(f"{jit.url}/jit/v1/outbox/{event_id}/retry", headers=jit.admin)
    assert (r.status_code, r.json()["error"]) == (409, "not_dead")
    assert httpx.post(f"{jit.url}/jit/v1/outbox/retry", json={}, headers=jit.admin).status_code == 400
    assert httpx.post(f"{jit.url}/jit/v1/outbox/retry", json={"allDead": True}, headers=jit.admin).json() == {
        "retried": []
    }
    apps = httpx.get(f"{jit.url}/jit/v1/apps", headers=jit.admin).json()["applications"]
    assert apps[0]["name"] == "wiki" and apps[0]["connector"]["secret"] == "***"
    accounts = httpx.get(f"{jit.url}/jit/v1/accounts", headers=jit.admin).json()
    assert accounts["Resources"][0]["status"] in ("pending", "active")


def test_refused_id_tokens_are_charged_to_the_address_valid_tokens_elsewhere_are_not(jit):
    """The login hook under a flood of bad ID tokens sent with a valid login token: each refusal takes one
    from the address's bucket (default 200), then the hook answers 429 before verifying anything."""
    from scimjit.http.ratelimit import RateLimiter

    burst = jit.services.settings.client_rate_limit_burst
    frozen = 1000.0  # a clock that does not move: no refill while the test runs
    jit.app.state.client_limiter = RateLimiter(
        jit.services.settings.client_rate_limit_per_second, burst, clock=lambda: frozen, subject="address"
    )
    idp = httpx.Client(base_url=jit.url, headers=jit.admin, timeout=30)
    assert idp.get("/scim/v2/Users").status_code == 200  # an IdP at work before the flood
    with httpx.Client(base_url=jit.url, headers=jit.login_token, timeout=30) as app_server:
        body = {"application": "wiki", "id_token": "garbage"}
        statuses = [app_server.post("/jit/v1/logins", json=body).status_code for _ in range(burst)]
        assert statuses == [401] * burst
        r = app_server.post("/jit/v1/logins", json={"application": "wiki", "id_token": jit.token()})
        assert (
            r.status_code == 429
            and r.json()["error"] == "rate_limited"
            and int(r.headers["retry-after"]) >= 1
        )
    assert not jit.hook.of_type("account.create")  # refused before any work
    # the IdP's valid token, from the same address, is charged to its own bucket only
    assert [idp.get("/scim/v2/Users").status_code for _ in range(3)] == [200] * 3
    idp.close()


def test_a_down_issuer_is_asked_once_and_answers_503_with_retry_after(db, clock):
    """Issue 11 §3: while the issuer was down, 40 logins made 40 discovery fetches and answered 401."""
    with LocalIssuer().running() as down, WebhookReceiver().running() as hook:
        raw = wiki_config(down.url, hook.url, extra='redirect_after_login = "http://127.0.0.1:9/done"')
        settings = Settings.load(
            environ={},
            database_url=db.url,
            token_cache_seconds=0,
            base_url="http://127.0.0.1:1",
            document=raw,
        )
        services = Services.build(settings, db=db, clock=clock)
        login_token = services.tokens.create("wiki-login", ["login"], application="wiki")
        headers = {"Authorization": f"Bearer {login_token}"}
        down.down = True
        token = down.token(clock.now().timestamp(), preferred_username="alice")
        with serve(create_app(services=services)) as url:
            for _ in range(20):
                r = httpx.post(
                    f"{url}/jit/v1/logins", json={"application": "wiki", "id_token": token}, headers=headers
                )
                assert (r.status_code, r.json()["error"]) == (503, "issuer_unavailable")
                assert r.headers["retry-after"] == "30"  # the frozen clock: the whole backoff is left
            for _ in range(20):  # the code flow shares the verifier's discovery cache and its backoff
                r = httpx.get(f"{url}/jit/v1/apps/wiki/login")
                assert r.status_code == 302
                assert r.headers["location"] == "http://127.0.0.1:9/done?error=issuer_unavailable"
    assert down.requests == 1
