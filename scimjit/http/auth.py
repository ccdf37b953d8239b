"""Bearer-token authentication and scope checks, done per endpoint (cheap: the token store caches)."""

from __future__ import annotations

from starlette.requests import Request

from scimjit.http.ratelimit import KnownTokens, charge_client_failure, check_client
from scimjit.scim.errors import ScimError
from scimjit.store.tokens import Principal

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="scimjit"'}


def authenticate(request: Request) -> Principal | None:
    """The token's principal, or None. Requests without a valid token are charged to their client address
    (scimjit.http.ratelimit): while its bucket is empty they get 429 before any lookup, unless the token
    verified recently (so a valid token is never throttled by a flood from its address)."""
    header = request.headers.get("authorization")
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    known: KnownTokens | None = getattr(request.app.state, "known_tokens", None)
    key = KnownTokens.key(token) if token and known is not None else b""
    if not (known is not None and key in known):
        check_client(request)
    principal: Principal | None = None
    if header and scheme.lower() == "bearer" and token:
        principal = request.app.state.services.tokens.verify(token)
    if principal is None:
        charge_client_failure(request)
        if known is not None and key:
            known.discard(key)
    elif known is not None:
        known.add(key)
    return principal


def require(request: Request, *scopes: str) -> Principal:
    """The caller's principal if it holds one of `scopes` (admin holds all); 401 / 403 otherwise."""
    principal = authenticate(request)
    if principal is None:
        raise ScimError(
            401,
            "Authentication required: send a valid token as `Authorization: Bearer <token>`",
            headers={**CHALLENGE, "WWW-Authenticate": 'Bearer realm="scimjit", error="invalid_token"'}
            if request.headers.get("authorization")
            else CHALLENGE,
        )
    request.state.principal = principal
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.enforce(principal.name)  # 429 with Retry-After (scimjit.http.ratelimit)
    if scopes and not any(principal.has(s) for s in scopes):
        raise ScimError(403, f"This token lacks the required scope ({' or '.join(scopes)})")
    return principal


def require_discovery(request: Request) -> None:
    """Discovery answers any valid token; anonymously only when the setting allows it."""
    if request.app.state.services.settings.anonymous_discovery:
        return
    require(request)
