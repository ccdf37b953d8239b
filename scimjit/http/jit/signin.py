"""The OIDC authorization code flow run by scimjit, for applications that let scimjit do the sign-in.

- `GET /jit/v1/apps/{name}/login`: makes a state, a nonce and a PKCE verifier (S256), keeps them in a signed,
  HttpOnly, SameSite=Lax cookie that lives ten minutes, and redirects to the issuer's authorization endpoint.
- `GET /jit/v1/apps/{name}/callback`: checks the state against the cookie, exchanges the code at the token
  endpoint (client_secret_basic + the PKCE verifier), verifies the ID token (the login hook's verifier, plus the
  nonce), runs the login service, and redirects to the application's `redirect_after_login` with
  `?status=created|existing|pending&user=<SCIM id>`, or `?error=<reason code>`.

The cookie is signed with HMAC-SHA256 under the `session_secret` setting; without one, each process draws a
random key (a sign-in started on one process then fails on another: multi-process deployments must set it).
Applications without `redirect_after_login` answer `404 flow_not_configured`. A sign-in that fails after the
redirect to the issuer goes back to the application as `?error=<reason>`: the `JitError`'s reason code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from scimjit.config import ConfigError
from scimjit.engine import JitEngine
from scimjit.entitlement.apps import Application, check_url
from scimjit.http.apidoc import doc, jit_errors, path, query, resp
from scimjit.http.client import client_address
from scimjit.http.jit.errors import error
from scimjit.http.ratelimit import charge_client
from scimjit.jiterrors import JitError
from scimjit.provisioning.oidc import issuer_id

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.oidc_flow")

COOKIE_PREFIX = "scimjit_oidc_"
COOKIE_MAX_AGE = 600  # seconds a sign-in may take at the issuer
_PROCESS_KEY = secrets.token_bytes(32)  # used when `session_secret` is not set
_SAFE_CODE = re.compile(r"^[a-z_]{1,64}$")


@dataclass(frozen=True, slots=True)
class _Endpoints:
    authorization: str
    token: str
    fetched_at: float


_discovery: dict[str, _Endpoints] = {}


async def _endpoints(engine: JitEngine, app: Application) -> _Endpoints:
    """The issuer's authorization and token endpoints, from its discovery document (fetched with the
    verifier's fetcher; kept as long as the verifier keeps a JWKS)."""
    key = issuer_id(app.issuer)
    now = time.monotonic()
    cached = _discovery.get(key)
    if cached is not None and now - cached.fetched_at < engine.config.jwks_max_age:
        return cached
    try:
        doc = await engine.verifier.fetcher.get_json(key + "/.well-known/openid-configuration")
        if not isinstance(doc, Mapping) or issuer_id(str(doc.get("issuer", ""))) != key:
            raise ValueError("the discovery document names another issuer")
        auth, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
        if not isinstance(auth, str) or not isinstance(token, str):
            raise ValueError("the discovery document lacks authorization_endpoint or token_endpoint")
        found = _Endpoints(check_url(auth, "authorization_endpoint"), check_url(token, "token_endpoint"), now)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        log.warning("cannot read the discovery document of %s: %s", app.issuer, exc)
        raise JitError(503, "issuer_unavailable", "the issuer cannot be reached now") from None
    _discovery[key] = found
    return found


# --- the signed cookie ---------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(request: Request) -> bytes:
    secret: str = request.app.state.services.settings.session_secret
    return secret.encode() if secret else _PROCESS_KEY


def sign(key: bytes, payload: dict[str, Any]) -> str:
    body = _b64(orjson.dumps(payload))
    mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def unsign(key: bytes, value: str) -> dict[str, Any] | None:
    """The payload of a cookie signed with `key` and not expired, else None."""
    body, _, mac = value.partition(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        payload = orjson.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("exp"), int)
        or payload["exp"] < time.time()
    ):
        return None
    return payload


def _cookie_name(app: Application) -> str:
    return COOKIE_PREFIX + hashlib.sha256(app.name.encode()).hexdigest()[:16]


# --- endpoints ----------------------------------------------------------------------------------------------


def _base(request: Request) -> str:
    configured: str = request.app.state.services.settings.base_url
    if configured:
        return configured.rstrip("/")
    scheme = request.scope.get("scheme", "http")
    host = request.headers.get("host") or "localhost"
    return f"{scheme}://{host}"


def _app(request: Request) -> tuple[JitEngine, Application] | Response:
    engine: JitEngine = request.app.state.services.engine
    name = request.path_params["name"]
    app = engine.apps.get(name)
    if app is None:
        return error(404, "unknown_application", f"no application named {name!r} is configured")
    if not app.redirect_after_login:
        return error(
            404, "flow_not_configured", f"{name!r} has no redirect_after_login: it signs users in itself"
        )
    return engine, app


def _back_to_app(app: Application, **params: str) -> str:
    assert app.redirect_after_login is not None
    parts = urlsplit(app.redirect_after_login)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


FLOW_ERRORS = jit_errors(404)
APP_NAME = path("name")


@doc(
    "Start the OIDC authorization code flow (PKCE) for an application that lets scimjit sign users in",
    "JIT",
    {"302": resp("To the issuer's authorization endpoint (sets the sign-in cookie)"), **FLOW_ERRORS},
    params=[APP_NAME],
    secure=False,
)
async def login_start(request: Request) -> Response:
    charge_client(request)  # anonymous: every request counts against its address
    found = _app(request)
    if isinstance(found, Response):
        return found
    engine, app = found
    try:
        endpoints = await _endpoints(engine, app)
    except JitError as exc:
        return RedirectResponse(_back_to_app(app, error=exc.reason), 302)
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    base = _base(request)
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": f"{base}/jit/v1/apps/{app.name}/callback",
        "scope": " ".join(app.scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    sep = "&" if urlsplit(endpoints.authorization).query else "?"
    response = RedirectResponse(f"{endpoints.authorization}{sep}{urlencode(params)}", 302)
    payload = {
        "app": app.name,
        "state": state,
        "nonce": nonce,
        "verifier": verifier,
        "exp": int(time.time()) + COOKIE_MAX_AGE,
    }
    response.set_cookie(
        _cookie_name(app),
        sign(_key(request), payload),
        max_age=COOKIE_MAX_AGE,
        path=f"/jit/v1/apps/{app.name}",
        secure=base.startswith("https://"),
        httponly=True,
        samesite="lax",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@doc(
    "Finish the sign-in: exchange the code, verify the ID token, run the login hook",
    "JIT",
    {"302": resp("To redirect_after_login with ?status=&user= or ?error="), **FLOW_ERRORS},
    params=[
        APP_NAME,
        query("code", {"type": "string"}, "The authorization code"),
        query("state", {"type": "string"}, "Must match the sign-in cookie"),
    ],
    secure=False,
)
async def callback(request: Request) -> Response:
    charge_client(request)  # anonymous, and it exchanges a code and verifies an ID token
    found = _app(request)
    if isinstance(found, Response):
        return found
    engine, app = found
    try:
        params = await _finish(request, engine, app)
    except JitError as exc:  # the state, the issuer, the token or the login said no
        log.info("sign-in refused: application=%s reason=%s", app.name, exc.reason)
        params = {"error": exc.reason}
    except ConfigError:
        raise
    except Exception:  # never a stack trace to the browser; the log has it
        log.exception("sign-in failed: application=%s", app.name)
        params = {"error": "server_error"}
    response = RedirectResponse(_back_to_app(app, **params), 302)
    response.delete_cookie(_cookie_name(app), path=f"/jit/v1/apps/{app.name}", httponly=True, samesite="lax")
    response.headers["Cache-Control"] = "no-store"
    return response


async def _finish(request: Request, engine: JitEngine, app: Application) -> dict[str, str]:
    cookie = request.cookies.get(_cookie_name(app))
    saved = unsign(_key(request), cookie) if cookie else None
    state = request.query_params.get("state", "")
    if (
        saved is None
        or saved.get("app") != app.name
        or not isinstance(saved.get("state"), str)
        or not hmac.compare_digest(saved["state"].encode(), state.encode())
    ):
        raise JitError(
            400, "invalid_state", "the state does not match this browser's sign-in (or it expired)"
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
    id_token = await _exchange(engine, app, endpoints, code, saved, _base(request))
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
    account = result.body.get("account", {})
    user = result.body.get("user", {})
    return {"status": str(account.get("status", "")), "user": str(user.get("id", ""))}


async def _exchange(
    engine: JitEngine, app: Application, endpoints: _Endpoints, code: str, saved: dict[str, Any], base: str
) -> str:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": f"{base}/jit/v1/apps/{app.name}/callback",
        "code_verifier": str(saved.get("verifier", "")),
    }
    auth = httpx.Auth()  # the base class sends the request unchanged
    if app.client_secret is not None:
        auth = httpx.BasicAuth(app.client_id, app.client_secret)  # client_secret_basic
    else:
        data["client_id"] = app.client_id  # a public client: PKCE alone
    try:
        async with httpx.AsyncClient(timeout=engine.config.http_timeout, follow_redirects=False) as client:
            response = await client.post(
                endpoints.token, data=data, auth=auth, headers={"Accept": "application/json"}
            )
    except httpx.HTTPError as exc:
        log.warning("token endpoint of %s unreachable: %s", app.issuer, type(exc).__name__)
        raise JitError(503, "issuer_unavailable", "the token endpoint cannot be reached now") from None
    if response.status_code != 200:
        log.info("code exchange refused by %s: HTTP %s", app.issuer, response.status_code)
        raise JitError(502, "code_exchange_failed", f"the token endpoint answered {response.status_code}")
    try:
        tokens = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise JitError(502, "code_exchange_failed", "the token endpoint did not answer JSON") from None
    id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
    if not isinstance(id_token, str):
        raise JitError(502, "code_exchange_failed", "the token endpoint returned no id_token")
    return id_token


routes: list[BaseRoute] = [
    Route("/apps/{name}/login", login_start, methods=["GET"]),
    Route("/apps/{name}/callback", callback, methods=["GET"]),
]
