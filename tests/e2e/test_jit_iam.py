"""Logins with ID tokens from a real OpenID Connect provider (Canaille, via pytest-iam), through the HTTP
login hook of a running scimjit: the provider's real discovery document, JWKS and RS512 signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from scimjit.clock import FrozenClock
from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.services import Services
from tests.jit_helpers import WebhookReceiver, add_group, add_user
from tests.live_server import serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, JsonWebSignature

REDIRECT = "http://localhost:5555/callback"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Provider:
    """The pytest-iam server, and how to get a real ID token from it (authorization code flow, no browser)."""

    def __init__(self, iam_server: Any, private_jwk: dict[str, Any]) -> None:
        self.iam = iam_server
        self.issuer = iam_server.url.rstrip("/")
        self.private_jwk = private_jwk
        self.conf = httpx.get(f"{self.issuer}/.well-known/openid-configuration").json()

    def client(self, client_id: str) -> Any:
        client = self.iam.models.Client(
            client_id=client_id,
            client_secret="s3cret",
            client_name=client_id,
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code"],
            response_types=["code"],
            scope=["openid", "profile", "email"],
            token_endpoint_auth_method="client_secret_basic",
        )
        self.iam.backend.save(client)
        client.audience = [client]
        self.iam.backend.save(client)
        return client

    def id_token(self, client: Any, user_name: str) -> str:
        user = self.iam.random_user(user_name=user_name, emails=[f"{user_name}@example.com"])
        self.iam.login(user)
        self.iam.consent(user, client)
        try:
            params = {
                "response_type": "code",
                "client_id": client.client_id,
                "redirect_uri": REDIRECT,
                "scope": "openid profile email",
                "nonce": uuid.uuid4().hex,
                "state": uuid.uuid4().hex,
            }
            r = httpx.get(self.conf["authorization_endpoint"], params=params)
            assert r.status_code == 302, r.text
            code = httpx.URL(r.headers["location"]).params["code"]
            data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
            tokens = httpx.post(
                self.conf["token_endpoint"], data=data, auth=(client.client_id, "s3cret")
            ).json()
        finally:
            self.iam.logout()
        return str(tokens["id_token"])

    def resign(self, id_token: str, alg: str = "RS512", **changes: Any) -> str:
        """The same token re-signed with the provider's own private key, after changing some claims (a
        token only the provider could have made: the checks after the signature must catch it)."""
        header, payload, _ = id_token.split(".")
        claims = {**json.loads(unb64(payload)), **changes}
        hdr = {**json.loads(unb64(header)), "alg": alg}
        key = JsonWebKey.import_key(self.private_jwk)
        return JsonWebSignature([alg]).serialize_compact(hdr, json.dumps(claims).encode(), key).decode()


@pytest.fixture(scope="session")
def provider(iam_server, iam_configuration) -> Provider:
    return Provider(iam_server, iam_configuration["CANAILLE_OIDC"]["ACTIVE_JWKS"][0])


def app_table(name: str, issuer: str, webhook: str, **overrides: Any) -> dict[str, Any]:
    table = {
        "name": name,
        "issuer": issuer,
        "audience": [name],
        "match": {"claim": "email", "attribute": "emails.value"},
        "require_email_verified": False,  # Canaille's ID tokens carry no email_verified claim
        "groups": [f"{name}-users"],
        "on_first_login": "create",
        "roles": {f"{name}-admins": "admin"},
        "connector": {"type": "webhook", "url": webhook, "secret": "change-me"},
    }
    table.update(overrides)
    return table


class Running:
    def __init__(self, url: str, services: Services, clock: FrozenClock, hook: WebhookReceiver) -> None:
        self.url, self.services, self.clock, self.hook = url, services, clock, hook
        self._tokens: dict[str, str] = {}

    def login(self, app: str, id_token: str) -> httpx.Response:
        if app not in self._tokens:
            self._tokens[app] = self.services.tokens.create(f"{app}-login", ["login"], application=app)
        headers = {"Authorization": f"Bearer {self._tokens[app]}"}
        body = {"application": app, "id_token": id_token}
        return httpx.post(f"{self.url}/jit/v1/logins", json=body, headers=headers, timeout=30)


@pytest.fixture
def scimjit(db, provider) -> Iterator[Running]:
    suffix = uuid.uuid4().hex[:6]
    clock = FrozenClock(datetime.now(UTC))  # the provider signs with real time
    with WebhookReceiver().running() as hook:
        apps = [
            app_table(f"wiki{suffix}", provider.issuer, hook.url),
            app_table(f"strict{suffix}", provider.issuer, hook.url, algorithms=["RS256"]),
            app_table(
                f"bysub{suffix}", provider.issuer, hook.url, match={"claim": "sub", "attribute": "userName"}
            ),
        ]
        settings = Settings.load(
            environ={}, database_url=db.url, token_cache_seconds=0, document={"applications": apps, "jit": {}}
        )
        services = Services.build(settings, db=db, clock=clock)
        with serve(create_app(services=services)) as url:
            running = Running(url, services, clock, hook)
            running.suffix = suffix  # type: ignore[attr-defined]
            yield running


def names(scimjit: Running) -> tuple[str, str, str]:
    s = scimjit.suffix  # type: ignore[attr-defined]
    return f"wiki{s}", f"strict{s}", f"bysub{s}"


def seed(db, user_name: str, app: str, *, active: bool = True, entitled: bool = True) -> str:
    user_id = add_user(db, user_name, emails=[f"{user_name}@example.com"], active=active)
    add_group(db, f"{app}-users", [user_id] if entitled else [])
    add_group(db, f"{app}-admins", [user_id])
    return user_id


def test_first_login_creates_the_second_does_not(db, provider, scimjit):
    wiki, _, bysub = names(scimjit)
    user_name = f"alice{uuid.uuid4().hex[:6]}"
    user_id = seed(db, user_name, wiki)
    add_group(db, f"{bysub}-users", [user_id])
    id_token = provider.id_token(provider.client(wiki), user_name)
    header = json.loads(unb64(id_token.split(".")[0]))
    assert header["alg"] == "RS512"

    first = scimjit.login(wiki, id_token)
    assert first.status_code == 200, first.text
    assert first.json()["account"]["status"] == "created"
    assert first.json()["user"]["id"] == user_id and first.json()["roles"] == ["admin"]
    second = scimjit.login(wiki, provider.id_token(provider.client(f"{wiki}"), user_name))
    assert second.json()["account"]["status"] == "existing"
    assert [e["type"] for e in scimjit.hook.events] == ["account.create"]
    assert scimjit.hook.events[0]["user"]["userName"] == user_name

    # the `sub` claim mapped to userName works as well
    r = scimjit.login(bysub, provider.id_token(provider.client(bysub), user_name))
    assert r.json()["account"]["status"] == "created"


def test_tampered_and_misdirected_tokens_are_rejected(db, provider, scimjit):
    wiki, strict, _ = names(scimjit)
    user_name = f"bob{uuid.uuid4().hex[:6]}"
    seed(db, user_name, wiki)
    id_token = provider.id_token(provider.client(wiki), user_name)
    header, payload, signature = id_token.split(".")

    def reason(app: str, token: str) -> tuple[int, str]:
        r = scimjit.login(app, token)
        return r.status_code, r.json()["error"]

    # wrong signature: a claim changed after signing, or the signature bytes flipped
    forged_payload = b64(json.dumps({**json.loads(unb64(payload)), "email": "root@example.com"}).encode())
    assert reason(wiki, f"{header}.{forged_payload}.{signature}") == (401, "invalid_signature")
    flipped = b64(bytes(b ^ 1 for b in unb64(signature)))
    assert reason(wiki, f"{header}.{payload}.{flipped}") == (401, "invalid_signature")
    # wrong audience: a genuine token of another client
    other = provider.id_token(provider.client(f"other{uuid.uuid4().hex[:6]}"), user_name)
    assert reason(wiki, other) == (401, "wrong_audience")
    # wrong issuer, signed by the provider's real key
    assert reason(wiki, provider.resign(id_token, iss="http://localhost:1")) == (401, "wrong_issuer")
    # algorithms: RS512 is outside this app's allowlist; `none` and HMAC-with-the-public-key are never accepted
    assert reason(strict, provider.resign(id_token, aud=[strict])) == (401, "unsupported_algorithm")
    none = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    assert reason(wiki, f"{none}.{payload}.") == (401, "unsupported_algorithm")
    jwks = httpx.get(provider.conf["jwks_uri"]).json()
    public_pem = JsonWebKey.import_key(jwks["keys"][0]).as_pem(is_private=False)
    hs = b64(json.dumps({"alg": "HS512", "kid": json.loads(unb64(header))["kid"]}).encode())
    mac = b64(hmac.new(public_pem, f"{hs}.{payload}".encode(), hashlib.sha512).digest())
    assert reason(wiki, f"{hs}.{payload}.{mac}") == (401, "unsupported_algorithm")
    # expiry: the same genuine token, two hours later
    assert scimjit.login(wiki, id_token).status_code == 200
    scimjit.clock.advance(hours=2)
    assert reason(wiki, id_token) == (401, "expired")
    assert reason(wiki, provider.resign(id_token, exp=int(datetime.now(UTC).timestamp()) - 3600)) == (
        401,
        "expired",
    )


def test_inactive_and_unentitled_users_are_refused(db, provider, scimjit):
    wiki, _, _ = names(scimjit)
    client = provider.client(wiki)
    inactive = f"carol{uuid.uuid4().hex[:6]}"
    seed(db, inactive, wiki, active=False)
    r = scimjit.login(wiki, provider.id_token(client, inactive))
    assert (r.status_code, r.json()["error"]) == (403, "inactive")
    outsider = f"dave{uuid.uuid4().hex[:6]}"
    add_user(db, outsider, emails=[f"{outsider}@example.com"])
    r = scimjit.login(wiki, provider.id_token(client, outsider))
    assert (r.status_code, r.json()["error"]) == (403, "not_entitled")
    stranger = f"erin{uuid.uuid4().hex[:6]}"
    r = scimjit.login(wiki, provider.id_token(client, stranger))
    assert (r.status_code, r.json()["error"]) == (403, "unknown_user")
    assert scimjit.hook.requests == []
