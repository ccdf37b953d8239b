"""Bearer-token authentication and scope checks, done per endpoint (cheap: the token store caches)."""

from __future__ import annotations

from starlette.requests import Request

from scimjit.scim.errors import ScimError
from scimjit.store.tokens import Principal

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="scimjit"'}


def authenticate(request: Request) -> Principal | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    principal: Principal | None = request.app.state.services.tokens.verify(token.strip())
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
