"""Bearer-token authentication and scope checks, done per endpoint (cheap: the token store caches).

scimjit's own `sjt_` tokens are checked here, synchronously, against the token store. Any other bearer token is
an OAuth access token of a configured authorization server: it was already checked, asynchronously and once
per request, by scimjit.http.oauth.OAuthMiddleware, which left its outcome (a Principal, or the ScimError to
answer) in the request state; `authenticate` only reads it.
"""

from __future__ import annotations

from starlette.requests import Request

from scimjit.http.oauth import STATE_KEY
from scimjit.http.ratelimit import KnownTokens, charge_client_failure, check_client
from scimjit.scim.errors import ScimError
from scimjit.store.tokens import PREFIX, Principal

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
        if token.startswith(PREFIX):
            principal = request.app.state.services.tokens.verify(token, digest=key or None)
        else:
            principal = _oauth(request)
    if principal is None:
        charge_client_failure(request)
        if known is not None and key:
            known.discard(key)
    elif known is not None:
        known.add(key)
    return principal


def _oauth(request: Request) -> Principal | None:
    """The OAuth middleware's outcome: its Principal, None for a token that does not verify (401, charged
    to the address like a wrong scimjit token), or its 403 / 503 raised as is (the token is not at fault
    for an unreachable introspection endpoint, and a verified but unmapped token is not a failed login)."""
    outcome = getattr(request.state, STATE_KEY, None)
    if isinstance(outcome, ScimError):
        if outcome.status == 401:
            return None
        raise outcome
    return outcome if isinstance(outcome, Principal) else None


def require(request: Request, *scopes: str) -> Principal:
    """The caller's principal if it holds one of `scopes` (admin holds all); 401 / 403 otherwise."""
    principal = authenticate(request)
    if principal is None:
        refusal = getattr(request.state, STATE_KEY, None)
        if isinstance(refusal, ScimError):
            raise refusal  # the access token's own reason (expired, wrong audience, not active, ...)
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
