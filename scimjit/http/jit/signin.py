"""The OIDC authorization code flow run by scimjit, for applications that let scimjit do the sign-in.

- `GET /jit/v1/apps/{name}/login[?nonce=]`: makes a state, a nonce and a PKCE verifier (S256), keeps them on the
  server (`store.signin_states`, ten minutes, single-use) bound to this browser by a random value whose hash is
  stored and which an HttpOnly, SameSite=Lax cookie carries, and redirects to the issuer's authorization
  endpoint with `redirect_uri = <server.base_url>/jit/v1/apps/{name}/callback`.
- `GET /jit/v1/apps/{name}/callback`: takes the state (deleting it: a replay is `invalid_state`, and never a
  second code exchange), checks the cookie's binding, exchanges the code at the token endpoint
  (client_secret_basic + the PKCE verifier), verifies the ID token (the login hook's verifier, plus the nonce),
  runs the login service, and redirects to the application's `redirect_after_login` with `?result=<JWT>`: a
  short-lived result signed with scimjit's key (`delivery/signing.py`; JWKS at `/jit/v1/jwks.json`), for the
  application as audience, carrying a `jti` it remembers until `exp` to make the result single-use. A sign-in
  that fails after the redirect to the issuer goes back as `?error=<reason>` (the `JitError`'s reason code).

Why this shape (issue 11): an unsigned `?user=` could be forged by anyone; a state in a signed cookie could be
replayed; a PKCE verifier in a cookie leaves the server; a `redirect_uri` built from the `Host` header could be
pointed anywhere. So the redirect URI comes from configuration only: without `server.base_url` the flow answers
`500 base_url_required`. Applications without `redirect_after_login` answer `404 flow_not_configured`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from scimjit.config import ConfigError
from scimjit.delivery.signing import JWKS_MAX_AGE
from scimjit.engine import JitEngine
from scimjit.entitlement.apps import Application, check_url
from scimjit.http.apidoc import JSON, doc, jit_errors, path, query, ref, resp
from scimjit.http.client import client_address
from scimjit.http.jit.errors import error
from scimjit.http.ratelimit import charge_client
from scimjit.jiterrors import JitError
from scimjit.provisioning.oidc import exchange_code
from scimjit.store import signin_states
from scimjit.store.db import Database

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.oidc_flow")

COOKIE_PREFIX = "scimjit_oidc_"
COOKIE_MAX_AGE = 600  # seconds a sign-in may take at the issuer (the server-side state lives as long)
RESULT_LIFETIME = 60  # seconds the signed result is valid: the browser hands it over at once
RESULT_TYPE = "signin-result+jwt"  # the JWS `typ` of a sign-in result (not an ID token, not an access token)
MAX_APP_NONCE = 256
_SAFE_CODE = re.compile(r"^[a-z_]{1,64}$")
_SAFE_NONCE = re.compile(r"^[\x21-\x7e]{1,256}$")  # printable ASCII, no spaces


@dataclass(frozen=True, slots=True)
class _Endpoints:
    authorization: str
    token: str


async def _endpoints(engine: JitEngine, app: Application) -> _Endpoints:
    """The issuer's authorization and token endpoints, from its discovery document (the verifier's cache, with
    its backoff when the issuer is down: `503 issuer_unavailable`)."""
    doc = await engine.verifier.discovery(app.issuer)
    try:
        auth, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
        if not isinstance(auth, str) or not isinstance(token, str):
            raise ValueError("the discovery document lacks authorization_endpoint or token_endpoint")
        return _Endpoints(check_url(auth, "authorization_endpoint"), check_url(token, "token_endpoint"))
    except ValueError as exc:  # ConfigError is a ValueError
        log.warning("cannot use the discovery document of %s: %s", app.issuer, exc)
        raise JitError(503, "issuer_unavailable", "the issuer's discovery document is unusable") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cookie_name(app: Application) -> str:
    return COOKIE_PREFIX + hashlib.sha256(app.name.encode()).hexdigest()[:16]


def _purpose(app: Application) -> str:
    return f"app:{app.name}"


# --- endpoints ----------------------------------------------------------------------------------------------


def _base(request: Request) -> str:
    """The public URL, from configuration only (never the Host header): the redirect URI and the result's
    `iss` are built from it. Without it the flow cannot run."""
    configured: str = request.app.state.services.settings.base_url
    if not configured:
        raise JitError(
            500,
            "base_url_required",
            "the sign-in needs the server's public URL: set [server] base_url (SCIMJIT_BASE_URL)",
        )
    return configured.rstrip("/")


def _app(request: Request) -> tuple[JitEngine, Application, str] | Response:
    engine: JitEngine = request.app.state.services.engine
    name = request.path_params["name"]
    app = engine.apps.get(name)
    if app is None:
        return error(404, "unknown_application", f"no application named {name!r} is configured")
    if not app.redirect_after_login:
        return error(
            404, "flow_not_configured", f"{name!r} has no redirect_after_login: it signs users in itself"
        )
    try:
        base = _base(request)
    except JitError as exc:
        return error(exc.status, exc.reason, exc.detail)
    return engine, app, base


def _back_to_app(app: Application, **params: str) -> str:
    assert app.redirect_after_login is not None
    parts = urlsplit(app.redirect_after_login)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _callback_uri(base: str, app: Application) -> str:
    return f"{base}/jit/v1/apps/{app.name}/callback"


FLOW_ERRORS = {
    **jit_errors(400, 404),
    "500": resp("server.base_url is not set (base_url_required)", ref("JitError"), JSON),
}
APP_NAME = path("name")


@doc(
    "Start the OIDC authorization code flow (PKCE) for an application that lets scimjit sign users in",
    "JIT",
    {"302": resp("To the issuer's authorization endpoint (sets the sign-in cookie)"), **FLOW_ERRORS},
    params=[
        APP_NAME,
        query(
            "nonce",
            {"type": "string", "maxLength": MAX_APP_NONCE},
            "Optional: the application's own nonce, echoed in the signed result",
        ),
    ],
    secure=False,
)
async def login_start(request: Request) -> Response:
    charge_client(request)  # anonymous: every request counts against its address
    found = _app(request)
    if isinstance(found, Response):
        return found
    engine, app, base = found
    app_nonce = request.query_params.get("nonce")
    if app_nonce is not None and not _SAFE_NONCE.match(app_nonce):
        return error(400, "invalid_request", f"nonce must be 1-{MAX_APP_NONCE} printable ASCII characters")
    try:
        endpoints = await _endpoints(engine, app)
    except JitError as exc:
        return RedirectResponse(_back_to_app(app, error=exc.reason), 302)
    state, nonce, verifier, browser = (secrets.token_urlsafe(32) for _ in range(4))
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": _callback_uri(base, app),
        "scope": " ".join(app.scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    payload = {"nonce": nonce, "verifier": verifier, "browser": _digest(browser), "app_nonce": app_nonce}
    now = engine.clock.now()
    await engine.db.run(_remember, engine.db, state, _purpose(app), payload, now)
    sep = "&" if urlsplit(endpoints.authorization).query else "?"
    response = RedirectResponse(f"{endpoints.authorization}{sep}{urlencode(params)}", 302)
    response.set_cookie(
        _cookie_name(app),
        browser,
        max_age=COOKIE_MAX_AGE,
        path=f"/jit/v1/apps/{app.name}",
        secure=base.startswith("https://"),  # also behind a TLS-terminating proxy: base_url is the public URL
        httponly=True,
        samesite="lax",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _remember(db: Database, state: str, purpose: str, payload: dict[str, Any], now: datetime) -> None:
    with db.write() as conn:  # abandoned sign-ins are purged by the sweeper
        signin_states.put(conn, state, purpose, payload, now + timedelta(seconds=COOKIE_MAX_AGE))


def _take(db: Database, state: str, purpose: str, now: datetime) -> dict[str, Any] | None:
    with db.write() as conn:
        return signin_states.take(conn, state, purpose, now)


@doc(
    "Finish the sign-in: exchange the code, verify the ID token, run the login hook",
    "JIT",
    {
        "302": resp("To redirect_after_login with ?result=<signed JWT> or ?error=<reason code>"),
        **FLOW_ERRORS,
    },
    params=[
        APP_NAME,
        query("code", {"type": "string"}, "The authorization code"),
        query("state", {"type": "string"}, "The state of a sign-in this browser started (single-use)"),
    ],
    secure=False,
)
async def callback(request: Request) -> Response:
    charge_client(request)  # anonymous, and it exchanges a code and verifies an ID token
    found = _app(request)
    if isinstance(found, Response):
        return found
    engine, app, base = found
    try:
        params = await _finish(request, engine, app, base)
    except JitError as exc:  # the state, the issuer, the token or the login said no
        log.info("sign-in refused: application=%s reason=%s", app.name, exc.reason)
        params = {"error": exc.reason}
    except ConfigError:
        raise
    except Exception:  # never a stack trace to the browser; the log has it
        log.exception("sign-in failed: application=%s", app.name)
        params = {"error": "server_error"}
    response = RedirectResponse(_back_to_app(app, **params), 302)
    response.delete_cookie(
        _cookie_name(app),
        path=f"/jit/v1/apps/{app.name}",
        secure=base.startswith("https://"),
        httponly=True,
        samesite="lax",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def _finish(request: Request, engine: JitEngine, app: Application, base: str) -> dict[str, str]:
    state = request.query_params.get("state", "")
    # single-use, whatever happens next: the state is gone once read, so a replayed callback (or a racing one)
    # finds nothing and never reaches the token endpoint
    saved = await engine.db.run(_take, engine.db, state, _purpose(app), engine.clock.now()) if state else None
    cookie = request.cookies.get(_cookie_name(app), "")
    if (
        saved is None
        or not isinstance(saved.get("browser"), str)
        or not hmac.compare_digest(saved["browser"].encode(), _digest(cookie).encode())
    ):
        raise JitError(
            400, "invalid_state", "the state is not one of this browser's sign-ins (used, expired or unknown)"
        )
    idp_error = request.query_params.get("error")
    if idp_error is not None:
        raise JitError(
            400, idp_error if _SAFE_CODE.match(idp_error) else "authorization_failed", "the issuer said no"
        )
    code = request.query_params.get("code")
    if not code:
        raise JitError(400, "invalid_request", "the callback has no code")
    endpoints = await _endpoints(engine, app)
    id_token = await exchange_code(
        endpoints.token,
        client_id=app.client_id,
        client_secret=app.client_secret,
        code=code,
        verifier=str(saved.get("verifier", "")),
        redirect_uri=_callback_uri(base, app),
        timeout=engine.config.http_timeout,
        issuer=app.issuer,
    )
    claims = await engine.verifier.verify(app, id_token)  # a refused token is a JitError with its reason
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(
        nonce.encode(), str(saved.get("nonce")).encode()
    ):
        raise JitError(401, "invalid_nonce", "the ID token's nonce is not this sign-in's")
    request_id = request.scope.get("state", {}).get("request_id")
    result = await engine.login(
        app.name, id_token, caller="oidc-flow", request_id=request_id, client_ip=client_address(request)
    )
    signed = await engine.db.run(_sign_result, engine, app, base, result.body, saved.get("app_nonce"))
    return {"result": signed}


def _sign_result(
    engine: JitEngine, app: Application, base: str, body: Mapping[str, Any], app_nonce: Any
) -> str:
    """The result the application verifies (docs/jit-provisioning.md, "Verifying the result")."""
    account, user = body.get("account", {}), body.get("user", {})
    iat = int(engine.clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": base,
        "aud": app.name,
        "sub": str(user.get("id", "")),
        "userName": str(user.get("userName", "")),
        "status": str(account.get("status", "")),
        "iat": iat,
        "exp": iat + RESULT_LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    if isinstance(app_nonce, str):
        claims["nonce"] = app_nonce
    return engine.signer.sign(claims, typ=RESULT_TYPE)


JWK_SET = "application/jwk-set+json"  # RFC 7517 §8.5
JWKS_CACHE = f"public, max-age={JWKS_MAX_AGE}"  # a new key is published PUBLISH_LEAD before it signs


@doc(
    "scimjit's public signing keys (JWK set): verify signed sign-in results with them",
    "JIT",
    {"200": resp("The JWK set: active keys and recently retired ones", {"type": "object"}, JWK_SET)},
    secure=False,
)
async def jwks(request: Request) -> Response:
    engine: JitEngine = request.app.state.services.engine
    keys = await engine.db.run(engine.signer.jwks)
    return Response(orjson.dumps(keys), media_type=JWK_SET, headers={"Cache-Control": JWKS_CACHE})


routes: list[BaseRoute] = [
    Route("/apps/{name}/login", login_start, methods=["GET"]),
    Route("/apps/{name}/callback", callback, methods=["GET"]),
    Route("/jwks.json", jwks, methods=["GET"]),
]
