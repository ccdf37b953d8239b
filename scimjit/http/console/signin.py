"""Sign-in to the console: the OIDC authorization code flow with PKCE against `[console] issuer`.

- `GET /console/login`: a random `state`, nonce and PKCE verifier; the verifier and nonce stay on the server
  (`store.signin_states`, purpose "console", single use, ten minutes), the browser carries only `state`.
- `GET /console/callback`: checks the state against the browser's state cookie (set by /login: a callback
  carrying someone else's code is refused, login CSRF), takes the state (a replayed or unknown state is
  refused), exchanges the code at
  the token endpoint, verifies the ID token with the engine's verifier (`provisioning.oidc`, the same checks
  as for applications, against the console's issuer and client), checks the nonce, refuses a replayed `jti`
  (`store.used_once`), maps the token to one active SCIM user with the `match` rule
  (`entitlement.identity`, exactly as applications do) and starts the session.

The redirect_uri is built from `server.base_url` only, never from the Host header (an attacker-chosen Host
would otherwise choose where the issuer sends the code).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request

from scimjit.config import ConsoleConfig
from scimjit.entitlement import identity
from scimjit.entitlement.apps import Application, ConnectorConfig, MatchRule, check_url
from scimjit.jiterrors import JitError
from scimjit.provisioning.oidc import exchange_code, issuer_id
from scimjit.services import Services
from scimjit.store import signin_states, used_once
from scimjit.store import users as user_store

log = logging.getLogger("scimjit.console")

PURPOSE = "console"
STATE_LIFETIME = 600.0  # seconds a sign-in may take at the issuer
STATE_COOKIE = "scimjit_console_state"  # binds a sign-in to the browser that started it
STATE_PATH = "/console/callback"
_endpoints_cache: dict[str, tuple[str, str, float]] = {}


def client_of(config: ConsoleConfig) -> Application:
    """The console as the verifier and the identity lookups see an application: its issuer, its client id as
    the audience, its algorithms and match rule. It has no connector and no accounts (name `console`)."""
    return Application(
        name="console",
        issuer=config.issuer,
        audience=(config.client_id,),
        match=MatchRule(claim=config.match.claim, attribute=config.match.attribute),
        groups=(),
        on_first_login="link",
        roles={},
        on_unentitled="keep",
        grace_period=0.0,
        connector=ConnectorConfig(type="none", settings={}),
        algorithms=config.algorithms,
        client_id=config.client_id,
        client_secret=config.client_secret,
        scopes=config.scopes,
    )


def redirect_uri(services: Services) -> str:
    base = services.settings.base_url.rstrip("/")
    if not base:
        raise JitError(503, "base_url_not_set", "the console needs `server.base_url` to sign people in")
    return f"{base}/console/callback"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _endpoints(services: Services, config: ConsoleConfig) -> tuple[str, str]:
    """(authorization, token) endpoints from the issuer's discovery document, kept `jwks_max_age`."""
    key = issuer_id(config.issuer)
    cached = _endpoints_cache.get(key)
    if cached is not None and time.monotonic() - cached[2] < services.settings.jit.jwks_max_age:
        return cached[0], cached[1]
    engine = services.engine
    try:
        doc = await engine.verifier.fetcher.get_json(key + "/.well-known/openid-configuration")
        if not isinstance(doc, Mapping) or issuer_id(str(doc.get("issuer", ""))) != key:
            raise ValueError("the discovery document names another issuer")
        auth, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
        if not isinstance(auth, str) or not isinstance(token, str):
            raise ValueError("the discovery document lacks its endpoints")
        found = (
            check_url(auth, "authorization_endpoint"),
            check_url(token, "token_endpoint"),
            time.monotonic(),
        )
    except (OSError, ValueError) as exc:
        log.warning("cannot read the discovery document of %s: %s", config.issuer, exc)
        raise JitError(503, "issuer_unavailable", "the sign-in service cannot be reached now") from None
    _endpoints_cache[key] = found
    return found[0], found[1]


async def start(services: Services, config: ConsoleConfig, next_path: str) -> tuple[str, str]:
    """(the URL of the issuer to send the browser to, the state); the sign-in's secrets are stored
    server-side, and the caller binds the state to this browser with a cookie (`STATE_COOKIE`)."""
    authorization, _ = await _endpoints(services, config)
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    now = services.clock.now()
    payload = {"nonce": nonce, "verifier": verifier, "next": next_path}

    def put() -> None:
        with services.db.write() as conn:
            signin_states.put(conn, state, PURPOSE, payload, now + timedelta(seconds=STATE_LIFETIME))

    await services.db.run(put)
    params = {
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": redirect_uri(services),
        "scope": " ".join(config.scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    sep = "&" if urlsplit(authorization).query else "?"
    return f"{authorization}{sep}{urlencode(params)}", state


async def finish(services: Services, config: ConsoleConfig, request: Request) -> tuple[Any, str]:
    """(the SCIM user row, where to go next) for a callback, or JitError with the reason."""
    state = request.query_params.get("state", "")
    now = services.clock.now()
    bound = request.cookies.get(STATE_COOKIE, "")
    if not state or not hmac.compare_digest(bound.encode(), state.encode()):
        # a callback in a browser that did not start this sign-in: someone else's code (login CSRF)
        raise JitError(400, "invalid_state", "this sign-in was not started in this browser: sign in again")

    def take() -> dict[str, Any] | None:
        with services.db.write() as conn:
            return signin_states.take(conn, state, PURPOSE, now)

    saved = await services.db.run(take) if state else None
    if saved is None:
        raise JitError(400, "invalid_state", "this sign-in expired or was already used: sign in again")
    if request.query_params.get("error") is not None:
        raise JitError(401, "authorization_failed", "the sign-in service did not sign you in")
    code = request.query_params.get("code")
    if not code:
        raise JitError(400, "invalid_request", "the sign-in service sent no code")
    _, token_endpoint = await _endpoints(services, config)
    id_token = await exchange_code(
        token_endpoint,
        client_id=config.client_id,
        client_secret=config.client_secret,
        code=code,
        verifier=str(saved.get("verifier", "")),
        redirect_uri=redirect_uri(services),
        timeout=services.settings.jit.http_timeout,
        issuer=config.issuer,
    )
    app = client_of(config)
    claims = await services.engine.verifier.verify(app, id_token)
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), str(saved["nonce"]).encode()):
        raise JitError(401, "invalid_nonce", "the ID token was not issued for this sign-in")
    value = claims.get(config.match.claim)
    if not isinstance(value, str) or not value:
        raise JitError(401, "missing_claim", f"the ID token has no {config.match.claim!r} claim")
    jti = claims.get("jti")
    exp = float(claims.get("exp", 0))
    skew = services.settings.jit.clock_skew

    def person() -> Any:
        with services.db.write() as conn:
            if isinstance(jti, str) and jti:
                until = now + timedelta(seconds=max(0.0, exp - now.timestamp()) + skew)
                if not used_once.claim(conn, "console-id-token", jti, until, now):
                    raise JitError(401, "replayed_token", "this ID token was used already")
            found = identity.find_subjects(conn, app, value)
            if len(found) != 1:
                raise JitError(403, "unknown_user", "no single person in the directory matches your sign-in")
            if not found[0].active:
                raise JitError(403, "inactive_user", "your account is not active")
            return user_store.find_profile(conn, found[0].user_id)

    user = await services.db.run(person)
    return user, str(saved.get("next") or "/console/")
