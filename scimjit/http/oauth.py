"""OAuth 2.0 access tokens from configured authorization servers (`[[authorization_servers]]`), as an
alternative to scimjit's own `sjt_` tokens for SCIM clients.

Two kinds, told apart by their shape:

- **JWT access tokens (RFC 9068)**: three base64url parts whose header says `typ: at+jwt`. The server is
  chosen by the (unverified) `iss`, the signature is checked with that issuer's JWKS through the ID-token
  verifier's key cache (scimjit.provisioning.oidc: one JWKS machinery, with its rotation and refetch
  limits), then `typ`, `iss`, `aud`, `exp`, `nbf`, `iat` with the `[jit] clock_skew`. Allowed algorithms
  only: never `none` nor HMAC.
- **Opaque tokens (RFC 7662)**: POSTed to each server's introspection endpoint with its client credentials
  (HTTP Basic) until one answers `active: true`. Answers, positive and negative, are cached for
  `introspection_cache` (a positive one never past the token's `exp`), keyed by the token's SHA-256. An
  endpoint that cannot be reached is a 503 with Retry-After, not a 401 (the token may be fine), and is not
  asked again for `FAILURE_BACKOFF` seconds, so a burst of requests does not hammer it.

The token's `scope` (and `scp`) values and its `client_id` are mapped to scimjit scopes by the server's
`scopes` and `clients` tables; `clients` applies only to a token the client holds for itself (no `sub`, or
`sub` equal to `client_id`), never to one a user obtained through that client. A verified token that maps to
none is a 403 that says so. The principal is
named `oauth:<issuer host>:<client_id or sub>`, which keys its rate-limit bucket and the audit trail.

Why here and async: verifying may need the network (JWKS, introspection), and `require` is synchronous in
every handler. `OAuthMiddleware` therefore runs the check once per request, before the route, only for a
bearer token that is not a scimjit token, and leaves its outcome in the request state for `require`
(scimjit.http.auth). `sjt_` tokens never reach this module: their path stays as cheap as before.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
from authlib.deprecate import AuthlibDeprecationWarning
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from scimjit.clock import Clock
from scimjit.config import AuthorizationServerConfig, JitSettings, check_url
from scimjit.delivery.httpclient import LoopClient
from scimjit.http.ratelimit import KnownTokens, client_address
from scimjit.jiterrors import JitError
from scimjit.provisioning.oidc import MAX_TOKEN_BYTES, HttpJsonFetcher, OidcVerifier, issuer_id
from scimjit.scim.errors import ScimError
from scimjit.store.tokens import PREFIX, Principal

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebToken
    from authlib.jose.errors import BadSignatureError, JoseError

if TYPE_CHECKING:
    from scimjit.services import Services

log = logging.getLogger("scimjit.oauth")

AT_JWT_TYPES = frozenset({"at+jwt", "application/at+jwt"})
FAILURE_BACKOFF = 5.0  # seconds an unreachable introspection endpoint is not asked again
MAX_CACHED = 10_000  # introspection answers kept (LRU): bounded memory whatever the token spray
STATE_KEY = "oauth_outcome"  # request.state attribute OAuthMiddleware sets for scimjit.http.auth


def invalid_token(detail: str) -> ScimError:
    """401 with the RFC 6750 challenge: the token does not verify (or is not active)."""
    return ScimError(
        401,
        f"The access token is not valid: {detail}",
        headers={"WWW-Authenticate": 'Bearer realm="scimjit", error="invalid_token"'},
    )


def unavailable(detail: str) -> ScimError:
    return ScimError(503, detail, headers={"Retry-After": str(math.ceil(FAILURE_BACKOFF))})


@dataclass
class _Server:
    config: AuthorizationServerConfig
    endpoint: str = ""  # introspection endpoint, configured or discovered
    down_until: float = float("-inf")

    @property
    def host(self) -> str:
        return urlsplit(self.config.issuer).netloc

    def grants(self, token_scopes: list[str], client_id: str | None) -> frozenset[str]:
        granted: set[str] = set()
        for scope in token_scopes:
            granted.update(self.config.scopes.get(scope, ()))
        if client_id is not None:
            granted.update(self.config.clients.get(client_id, ()))
        return frozenset(granted)


class OAuthVerifier:
    """Turns an OAuth access token into a Principal, or raises the ScimError to answer (401, 403, 503)."""

    def __init__(
        self,
        servers: tuple[AuthorizationServerConfig, ...],
        settings: JitSettings,
        clock: Clock,
        *,
        keys: OidcVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.servers = [_Server(s, s.introspection_endpoint) for s in servers]
        self._by_issuer = {issuer_id(s.config.issuer): s for s in self.servers}
        self.keys = keys or OidcVerifier(settings, clock)
        self._http = LoopClient(settings.http_timeout)
        self._fetcher = HttpJsonFetcher(settings.http_timeout)
        self._cache: OrderedDict[bytes, tuple[float, Principal | ScimError]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[Principal | ScimError]] = {}
        self._jwt: dict[str, JsonWebToken] = {}  # one decoder per algorithm, each accepting only that one
        self.introspections = 0  # requests sent to introspection endpoints (for tests and metrics)

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise invalid_token("the token is too long")
        header = _jwt_header(token)
        if header is not None and header.get("typ") in AT_JWT_TYPES:
            return await self._verify_jwt(token, header)
        if header is not None:
            raise invalid_token("a JWT access token must have the header typ at+jwt (RFC 9068)")
        return await self._introspect(token)

    # --- JWT access tokens (RFC 9068) --------------------------------------------------------------------

    async def _verify_jwt(self, token: str, header: Mapping[str, Any]) -> Principal:
        issuer = _unverified_issuer(token)
        server = self._by_issuer.get(issuer_id(issuer)) if issuer else None
        if server is None:
            raise invalid_token(f"the issuer {issuer!r} is not a configured authorization server")
        config = server.config
        if config.audience is None:
            raise invalid_token(f"JWT access tokens of {config.issuer} are not accepted (no `audience` set)")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.algorithms:
            raise invalid_token(f"alg {alg!r} is not accepted; accepted: {', '.join(config.algorithms)}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise invalid_token("kid must be a string")
        try:
            key = await self.keys.signing_key(config.issuer, alg, kid)
        except JitError as exc:
            if exc.status == 503:
                raise unavailable("The authorization server's keys cannot be fetched now") from None
            raise invalid_token(exc.detail) from None
        try:
            jwt = self._jwt.get(alg) or self._jwt.setdefault(alg, JsonWebToken([alg]))
            claims = dict(jwt.decode(token, key))
        except BadSignatureError:
            raise invalid_token("the signature does not verify with the issuer's key") from None
        except (JoseError, ValueError, TypeError) as exc:
            raise invalid_token(f"the token cannot be decoded ({type(exc).__name__})") from None
        now = self.clock.now().timestamp()
        skew = self.settings.clock_skew
        if not isinstance(claims.get("iss"), str) or issuer_id(claims["iss"]) != issuer_id(config.issuer):
            raise invalid_token("iss is not the authorization server's issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if config.audience not in audiences:
            raise invalid_token(f"aud {aud!r} does not include {config.audience!r}")
        exp = _number(claims.get("exp"))
        if exp is None:
            raise invalid_token("exp is missing")
        if exp <= now - skew:
            raise invalid_token("the token has expired")
        for name in ("nbf", "iat"):
            value = _number(claims.get(name))
            if claims.get(name) is not None and value is None:
                raise invalid_token(f"{name} is not a number")
            if value is not None and value > now + skew:
                raise invalid_token(f"the token is not valid yet ({name}); check clocks")
        client_id = claims.get("client_id")
        return self._principal(server, claims, client_id if isinstance(client_id, str) else None)

    # --- opaque tokens (RFC 7662) ------------------------------------------------------------------------

    async def _introspect(self, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).digest()
        now = self.clock.now().timestamp()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return _outcome(cached[1])
        # concurrent requests with one new token share one introspection (a burst asks once)
        pending = self._inflight.get(key)
        if pending is None or pending.done():
            pending = self._inflight[key] = asyncio.ensure_future(self._lookup(token, key, now))
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return _outcome(await asyncio.shield(pending))

    async def _lookup(self, token: str, key: bytes, now: float) -> Principal | ScimError:
        """Ask the servers that introspect, in order, until one says the token is active; cache the answer."""
        servers = [s for s in self.servers if s.config.client_id]
        if not servers:
            return invalid_token("not a scimjit token, and no authorization server introspects opaque tokens")
        failure: ScimError | None = None
        for server in servers:
            if server.down_until > now:
                failure = unavailable(f"The introspection endpoint of {server.host} is unavailable")
                continue
            try:
                answer = await self._ask(server, token)
            except OSError as exc:
                log.warning("token introspection at %s failed: %s", server.host, exc)
                server.down_until = now + FAILURE_BACKOFF
                failure = unavailable(f"The introspection endpoint of {server.host} is unavailable")
                continue
            if answer.get("active") is not True:
                continue
            outcome, until = self._introspected(server, answer, now)
            self._remember(key, min(until, now + server.config.introspection_cache), outcome)
            return outcome
        if failure is not None:  # not known to be inactive everywhere: the token may be good
            return failure
        refusal = invalid_token("the token is not active")
        self._remember(key, now + min(s.config.introspection_cache for s in servers), refusal)
        return refusal

    def _introspected(
        self, server: _Server, answer: Mapping[str, Any], now: float
    ) -> tuple[Principal | ScimError, float]:
        """An active answer's outcome and until when it may be cached (never past `exp`)."""
        config = server.config
        exp = _number(answer.get("exp"))
        iss = answer.get("iss")
        aud = answer.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
        if exp is not None and exp <= now:
            return invalid_token("the token has expired"), now + config.introspection_cache
        if iss is not None and (not isinstance(iss, str) or issuer_id(iss) != config.issuer):
            return invalid_token("the introspection answer names another issuer"), float("inf")
        if config.audience is not None and audiences is not None and config.audience not in audiences:
            return invalid_token(f"aud does not include {config.audience!r}"), float("inf")
        client_id = answer.get("client_id")
        try:
            principal: Principal | ScimError = self._principal(
                server, answer, client_id if isinstance(client_id, str) else None
            )
        except ScimError as exc:
            principal = exc
        return principal, exp if exp is not None else float("inf")

    async def _ask(self, server: _Server, token: str) -> Mapping[str, Any]:
        """POST the token to the server's introspection endpoint; OSError when it cannot answer."""
        if not server.endpoint:
            server.endpoint = await self._discover(server.config.issuer)
        self.introspections += 1
        try:
            response = await self._http.get().post(
                server.endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=(server.config.client_id, server.config.client_secret),
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise OSError(f"POST {server.endpoint}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise OSError(f"POST {server.endpoint}: HTTP {response.status_code}")
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise OSError(f"POST {server.endpoint}: not JSON") from None
        if not isinstance(answer, dict):
            raise OSError(f"POST {server.endpoint}: not a JSON object")
        return answer

    async def _discover(self, issuer: str) -> str:
        """The introspection endpoint from the issuer's metadata (RFC 8414, then OIDC discovery)."""
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
            try:
                doc = await self._fetcher.get_json(issuer + path)
            except OSError:
                continue
            if isinstance(doc, Mapping) and isinstance(doc.get("introspection_endpoint"), str):
                if issuer_id(str(doc.get("issuer", ""))) != issuer:
                    raise OSError(f"the metadata of {issuer} names another issuer")
                try:
                    return check_url(doc["introspection_endpoint"], "introspection_endpoint")
                except ValueError as exc:
                    raise OSError(str(exc)) from None
        raise OSError(f"no introspection_endpoint in the metadata of {issuer}")

    def _remember(self, key: bytes, until: float, outcome: Principal | ScimError) -> None:
        self._cache[key] = (until, outcome)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)

    # --- mapping -----------------------------------------------------------------------------------------

    def _principal(self, server: _Server, claims: Mapping[str, Any], client_id: str | None) -> Principal:
        scope = claims.get("scope")
        scp = claims.get("scp")
        token_scopes = scope.split() if isinstance(scope, str) else []
        if isinstance(scp, list):
            token_scopes += [s for s in scp if isinstance(s, str)]
        sub = claims.get("sub")
        sub = sub if isinstance(sub, str) else None
        # `clients` grants only to a token of the client itself (no user: client credentials, or Canaille's
        # provisioning token); a token a user got through that client (code flow) gets `scopes` grants only,
        # else any user who signs in to the application could provision
        for_itself = client_id is not None and (sub is None or sub == client_id)
        granted = server.grants(token_scopes, client_id if for_itself else None)
        who = client_id or sub or "unknown"
        if not granted:
            raise ScimError(
                403,
                f"This access token of {server.host} (client {client_id or '-'}, scope "
                f"{' '.join(token_scopes) or '-'}) maps to no scimjit scope; see [[authorization_servers]] "
                "`scopes` and `clients`",
            )
        return Principal(name=f"oauth:{server.host}:{who}", scopes=granted)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._fetcher.aclose()
        closer = getattr(self.keys.fetcher, "aclose", None)
        if closer is not None:
            await closer()


def _outcome(outcome: Principal | ScimError) -> Principal:
    if isinstance(outcome, ScimError):
        raise outcome
    return outcome


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _b64json(segment: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        return None


def _jwt_header(token: str) -> dict[str, Any] | None:
    """The JOSE header when `token` looks like a compact JWS, else None (an opaque token)."""
    if token.count(".") != 2:
        return None
    header = _b64json(token.split(".", 1)[0])
    return header if isinstance(header, dict) and "alg" in header else None


def _unverified_issuer(token: str) -> str | None:
    """`iss` read before the signature is checked: only to choose whose keys check it."""
    claims = _b64json(token.split(".")[1])
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None


def oauth_verifier(services: Services) -> OAuthVerifier:
    """The verifier of an app's `[[authorization_servers]]` (one per app: its JWKS and answer caches)."""
    settings = services.settings
    return OAuthVerifier(settings.authorization_servers, settings.jit, services.clock)


class OAuthMiddleware:
    """Runs OAuthVerifier once per HTTP request that carries a bearer token which is not a scimjit token,
    and stores the Principal or the ScimError in `request.state` (STATE_KEY) for scimjit.http.auth.

    A request from an address whose failure bucket is empty is not verified (no network work for a flood;
    `authenticate` answers it 429), unless the token verified recently (KnownTokens)."""

    def __init__(self, app: ASGIApp, verifier: OAuthVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            token = _bearer(scope)
            if token and not token.startswith(PREFIX):
                request = Request(scope)
                known = getattr(request.app.state, "known_tokens", None)
                limiter = getattr(request.app.state, "client_limiter", None)
                throttled = limiter is not None and limiter.peek(client_address(request)) > 0
                if not throttled or (known is not None and KnownTokens.key(token) in known):
                    outcome: Principal | ScimError
                    try:
                        outcome = await self.verifier.verify(token)
                    except ScimError as exc:
                        outcome = exc
                    scope.setdefault("state", {})[STATE_KEY] = outcome
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""
