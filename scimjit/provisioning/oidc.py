"""ID token verification: OIDC discovery, a JWKS cache per issuer, and the checks an ID token must pass.

Signatures are verified by authlib (`authlib.jose`); everything around it is explicit here because each
check maps to a reason code the calling application sees (`expired`, `wrong_audience`, ...):

- the header's `alg` must be in the application's allowlist, which only ever holds asymmetric algorithms
  (no `none`, no HMAC: an HMAC "verified" with a public key is forgeable by anyone who has that key);
- the key is found by `kid` in the issuer's JWKS, and must suit the algorithm (`kty`, its own `alg`, `use`);
- an unknown `kid` refetches the JWKS (key rotation), but at most once per `jwks_min_refresh`, so a stream
  of forged tokens with random kids cannot turn scimjit into a traffic amplifier against the issuer;
- `iss`, `aud` (and `azp` when there are several audiences, OIDC Core §3.1.3.7), `exp`, `nbf`, `iat`, with
  `clock_skew` seconds of leeway, against the injectable clock;
- the lifetime is bounded by `max_token_age`: a token issued longer ago, or valid (`exp - iat`) for longer, is
  refused even when the issuer signed it (a leaked or mis-minted token must not work for years);
- an issuer that cannot be reached is not asked again for `issuer_retry_after` seconds: a failed discovery or
  JWKS fetch is remembered like a successful one, so a stream of logins while the issuer is down costs it one
  request per period, and callers get `503 issuer_unavailable` with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson
from authlib.deprecate import AuthlibDeprecationWarning

from scimjit.clock import Clock
from scimjit.config import ConfigError, JitSettings
from scimjit.delivery.httpclient import LoopClient
from scimjit.entitlement.apps import Application, check_url
from scimjit.jiterrors import JitError

with warnings.catch_warnings():
    # authlib 1.x marks authlib.jose deprecated in favour of joserfc; it is still the supported API until 2.0.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebToken, Key
    from authlib.jose.errors import BadSignatureError, JoseError

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.oidc")

KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
MAX_TOKEN_BYTES = 16 * 1024


class JsonFetcher(Protocol):
    async def get_json(self, url: str) -> Any: ...


class HttpJsonFetcher:
    """GETs JSON documents over a pooled client; any transport or HTTP failure becomes an OSError."""

    def __init__(self, timeout: float) -> None:
        self._client = LoopClient(timeout)

    async def get_json(self, url: str) -> Any:
        try:
            response = await self._client.get().get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OSError(f"GET {url}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise OSError(f"GET {url}: HTTP {response.status_code}")
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise OSError(f"GET {url}: not JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass
class _IssuerKeys:
    jwks_uri: str | None = None
    keys: list[Key] = field(default_factory=list)
    # (alg, kid) -> the key `_find` chose among `keys`, emptied with each new set: every login looked through
    # the set, each key's JWK parameters rebuilt (authlib's `Key.tokens`), for the same answer. Only keys found
    # are kept, so a token's made-up kid adds nothing; bounded all the same.
    chosen: dict[tuple[str, str | None], Key] = field(default_factory=dict)
    fetched_at: float = float("-inf")  # last successful fetch (clock seconds)
    attempted_at: float = float("-inf")  # last fetch attempt, successful or not
    failed_at: float | None = None  # last failed fetch, until one succeeds (the backoff counts from it)
    discovery: Mapping[str, Any] | None = None  # the issuer's discovery document, as last fetched
    inflight: asyncio.Task[None] | None = None


def issuer_id(url: str) -> str:
    """Issuers compare without a trailing slash (`https://idp/` and `https://idp` are one issuer)."""
    return url.rstrip("/")


class OidcVerifier:
    def __init__(self, settings: JitSettings, clock: Clock, fetcher: JsonFetcher | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.fetcher: JsonFetcher = fetcher or HttpJsonFetcher(settings.http_timeout)
        self._issuers: dict[str, _IssuerKeys] = {}
        self._jwt: dict[str, JsonWebToken] = {}

    async def verify(self, app: Application, token: str) -> dict[str, Any]:
        """The verified claims of `token` for `app`, or JitError (401; 503 when the issuer cannot be reached)."""
        if not app.issuer:
            raise JitError(
                400, "oidc_not_configured", f"{app.name!r} has no OIDC issuer: send a saml_response"
            )
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in app.algorithms:
            raise JitError(
                401,
                "unsupported_algorithm",
                f"alg {alg!r} is not accepted; accepted: {', '.join(app.algorithms)}",
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JitError(401, "invalid_token", "kid must be a string")
        key = await self._key(app.issuer, alg, kid)
        jwt = self._jwt.get(alg)
        if jwt is None:
            jwt = self._jwt[alg] = JsonWebToken([alg])
        try:
            claims = dict(jwt.decode(token, key))
        except BadSignatureError:
            raise JitError(
                401, "invalid_signature", "the signature does not verify with the issuer's key"
            ) from None
        except (JoseError, ValueError, TypeError) as exc:
            raise JitError(
                401, "invalid_token", f"the token cannot be decoded ({type(exc).__name__})"
            ) from None
        self._check_claims(app, claims)
        return claims

    def _check_claims(self, app: Application, claims: Mapping[str, Any]) -> None:
        now = self.clock.now().timestamp()
        skew = self.settings.clock_skew if app.clock_skew is None else app.clock_skew
        iss = claims.get("iss")
        if not isinstance(iss, str) or issuer_id(iss) != issuer_id(app.issuer):
            raise JitError(401, "wrong_issuer", f"iss {iss!r} is not this application's issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(a in app.audience for a in audiences if isinstance(a, str)):
            raise JitError(401, "wrong_audience", f"aud {aud!r} does not include {', '.join(app.audience)}")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp not in app.audience:
            raise JitError(401, "wrong_audience", f"azp {azp!r} is not one of {', '.join(app.audience)}")
        exp = _number(claims, "exp")
        iat = _number(claims, "iat")
        nbf = _number(claims, "nbf") if claims.get("nbf") is not None else None
        if exp <= now - skew:
            raise JitError(401, "expired", "the token has expired")
        if nbf is not None and nbf > now + skew:
            raise JitError(401, "not_yet_valid", "the token is not valid yet (nbf)")
        if iat > now + skew:
            raise JitError(401, "not_yet_valid", "the token was issued in the future (iat); check clocks")
        max_age = self.settings.max_token_age
        if iat < now - max_age - skew:
            raise JitError(401, "too_old", f"the token was issued more than {max_age:g}s ago (iat)")
        if exp - iat > max_age:
            raise JitError(401, "lifetime_too_long", f"the token is valid for more than {max_age:g}s")

    async def discovery(self, issuer: str) -> Mapping[str, Any]:
        """The issuer's discovery document (the code flow reads its endpoints), cached with the keys and under
        the same failure backoff. JitError 503 `issuer_unavailable` when it cannot be had."""
        state = self._issuers.setdefault(issuer_id(issuer), _IssuerKeys())
        if (
            state.discovery is None
            or self.clock.now().timestamp() - state.fetched_at >= self.settings.jwks_max_age
        ):
            await self._refresh(issuer, state, must=state.discovery is None)
        assert state.discovery is not None  # _refresh raised otherwise
        return state.discovery

    # --- keys -------------------------------------------------------------------------------------------

    async def signing_key(self, issuer: str, alg: str, kid: str | None) -> Key:
        """The issuer's public key for a token signed with `alg` and `kid`, from the cached JWKS (rotation
        and refetch limits as above): shared with the RFC 9068 access-token check (scimjit.http.oauth), so
        there is one JWKS machinery. JitError 401 `unknown_key`, or 503 `issuer_unavailable`."""
        return await self._key(issuer, alg, kid)

    async def _key(self, issuer: str, alg: str, kid: str | None) -> Key:
        state = self._issuers.setdefault(issuer_id(issuer), _IssuerKeys())
        now = self.clock.now().timestamp()
        if now - state.fetched_at >= self.settings.jwks_max_age:
            await self._refresh(issuer, state, must=not state.keys)
        key = state.chosen.get((alg, kid))
        if key is None:
            key = _find(state.keys, alg, kid)
            if key is not None and len(state.chosen) < 64:
                state.chosen[(alg, kid)] = key
        if key is None and now - state.attempted_at >= self.settings.jwks_min_refresh:
            await self._refresh(issuer, state, must=not state.keys)  # rotation: the issuer may have a new key
            key = _find(state.keys, alg, kid)
        if key is None:
            raise JitError(401, "unknown_key", f"no key of the issuer matches kid {kid!r} and alg {alg}")
        return key

    async def _refresh(self, issuer: str, state: _IssuerKeys, *, must: bool) -> None:
        """Fetch discovery (first time) and the JWKS; concurrent callers share one fetch. Keeps the old keys if
        the issuer is unreachable, unless there are none (`must`), which is a 503 for the caller. Within
        `issuer_retry_after` of a failed fetch nothing is fetched: the failure is the cached answer."""
        now = self.clock.now().timestamp()
        if state.failed_at is not None and now - state.failed_at < self.settings.issuer_retry_after:
            if must or not state.keys:
                raise self._unavailable(state, now)
            return
        if (
            state.inflight is None
            or state.inflight.done()
            or state.inflight.get_loop() is not asyncio.get_running_loop()
        ):
            state.inflight = asyncio.ensure_future(self._fetch(issuer, state))
        try:
            await asyncio.shield(state.inflight)
        except (OSError, ValueError, ConfigError) as exc:
            if state.failed_at is None or state.failed_at < state.attempted_at:
                state.failed_at = state.attempted_at
                log.warning("cannot refresh the keys of issuer %s: %s", issuer, exc)
            if must or not state.keys:
                raise self._unavailable(state, self.clock.now().timestamp()) from None

    def _unavailable(self, state: _IssuerKeys, now: float) -> JitError:
        assert state.failed_at is not None
        wait = max(1, math.ceil(state.failed_at + self.settings.issuer_retry_after - now))
        return JitError(503, "issuer_unavailable", "the issuer cannot be reached now", retry_after=wait)

    async def _fetch(self, issuer: str, state: _IssuerKeys) -> None:
        state.attempted_at = self.clock.now().timestamp()
        if (
            state.jwks_uri is None
            or self.clock.now().timestamp() - state.fetched_at >= self.settings.jwks_max_age
        ):
            doc = await self.fetcher.get_json(issuer_id(issuer) + "/.well-known/openid-configuration")
            if not isinstance(doc, Mapping) or issuer_id(str(doc.get("issuer", ""))) != issuer_id(issuer):
                raise ValueError(
                    f"discovery document of {issuer} names another issuer ({doc.get('issuer')!r})"
                )
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError(f"discovery document of {issuer} has no jwks_uri")
            state.jwks_uri = check_url(jwks_uri, "jwks_uri")
            state.discovery = doc
        jwks = await self.fetcher.get_json(state.jwks_uri)
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise ValueError(f"{state.jwks_uri} is not a JWK set")
        keys: list[Key] = []
        for raw in jwks["keys"]:
            try:
                keys.append(JsonWebKey.import_key(raw))
            except Exception as exc:  # one odd key (unknown kty, encryption key) must not hide the others
                log.info("ignoring a key of %s: %s", issuer, type(exc).__name__)
        state.keys, state.chosen = keys, {}
        state.fetched_at = self.clock.now().timestamp()
        state.failed_at = None
        log.info("fetched %d key(s) of issuer %s", len(keys), issuer)


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise JitError(401, "invalid_token", f"{name} is {'missing' if value is None else 'not a number'}")
    return float(value)


def _header(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise JitError(401, "invalid_token", "an ID token is a compact JWS: three base64url parts")
    segment = token.split(".", 1)[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        raise JitError(401, "invalid_token", "the token header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise JitError(401, "invalid_token", "the token header is not a JSON object")
    return header


def _find(keys: list[Key], alg: str, kid: str | None) -> Key | None:
    """The key for this token: by kid when given, else the only suitable key; it must suit `alg`."""
    kty = KTY_FOR_ALG.get(alg[:2])
    suitable = [
        k
        for k in keys
        if k.tokens.get("kty") == kty
        and k.tokens.get("alg", alg) == alg
        and k.tokens.get("use", "sig") == "sig"
        and (kid is None or k.kid == kid)
    ]
    if kid is None and len(suitable) != 1:
        return None
    return suitable[0] if suitable else None


async def exchange_code(
    token_endpoint: str,
    *,
    client_id: str,
    client_secret: str | None,
    code: str,
    verifier: str,
    redirect_uri: str,
    timeout: float,
    issuer: str,
) -> str:
    """The ID token for an authorization code (OIDC code flow with PKCE), from the issuer's token endpoint.

    One implementation for every browser sign-in scimjit runs (the applications' and the console's):
    `client_secret_basic` when there is a secret, else a public client proving the code with PKCE alone;
    redirects are not followed. Refusals are JitErrors the flows turn into their own answers: 503
    `issuer_unavailable` (unreachable), 502 `code_exchange_failed` (refused, not JSON, no id_token)."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    auth = httpx.Auth()  # the base class sends the request unchanged
    if client_secret is not None:
        auth = httpx.BasicAuth(client_id, client_secret)  # client_secret_basic
    else:
        data["client_id"] = client_id  # a public client: PKCE alone
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.post(
                token_endpoint, data=data, auth=auth, headers={"Accept": "application/json"}
            )
    except httpx.HTTPError as exc:
        log.warning("token endpoint of %s unreachable: %s", issuer, type(exc).__name__)
        raise JitError(503, "issuer_unavailable", "the token endpoint cannot be reached now") from None
    if response.status_code != 200:
        log.info("code exchange refused by %s: HTTP %s", issuer, response.status_code)
        raise JitError(502, "code_exchange_failed", f"the token endpoint answered {response.status_code}")
    try:
        tokens = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise JitError(502, "code_exchange_failed", "the token endpoint did not answer JSON") from None
    id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
    if not isinstance(id_token, str):
        raise JitError(502, "code_exchange_failed", "the token endpoint returned no id_token")
    return id_token
