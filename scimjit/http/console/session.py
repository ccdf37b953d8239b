"""The console's session: a signed, HttpOnly, SameSite=Lax cookie (Secure when `base_url` is https), and the
CSRF token every form carries.

Why a signed cookie and not a table: a session holds only who signed in (SCIM user id, userName, admin or not
is looked up live on every page) and when it ends, so there is nothing to look up per request. The cookie is
signed with `itsdangerous` (HMAC-SHA256 under `server.session_secret`, a random key per process when that is
unset) and carries its own end (`session_lifetime`), checked against the injectable clock.

CSRF: each session has a random `sid`; a form's token is HMAC(key, "csrf:" + sid), so it is bound to the
session, cannot be made without the key, and changes with every sign-in. Every POST checks it in constant
time before anything else happens (`check_csrf`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "scimjit_console"
PATH = "/console"
_PROCESS_KEY = secrets.token_hex(32)  # used when `session_secret` is not set (one process only)


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    user_name: str
    sid: str  # random per sign-in: binds the CSRF token
    expires: float  # epoch seconds


def _secret(request: Request) -> str:
    secret: str = request.app.state.services.settings.session_secret
    return secret or _PROCESS_KEY


def _serializer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(_secret(request), salt="scimjit.console.session")


def secure(request: Request) -> bool:
    """Secure cookies when the public URL is https (the redirect_uri comes from `base_url` too)."""
    base: str = request.app.state.services.settings.base_url
    return base.startswith("https://")


def current(request: Request) -> Session | None:
    """The live session of this request, or None (no cookie, bad signature, or ended)."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data: Any = _serializer(request).loads(raw)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    try:
        session = Session(str(data["uid"]), str(data["name"]), str(data["sid"]), float(data["exp"]))
    except (KeyError, TypeError, ValueError):
        return None
    if session.expires <= request.app.state.services.clock.now().timestamp():
        return None
    return session


def start(request: Request, response: Response, user_id: str, user_name: str, lifetime: float) -> None:
    """Set the session cookie of a person who just signed in."""
    expires = request.app.state.services.clock.now().timestamp() + lifetime
    payload = {"uid": user_id, "name": user_name, "sid": secrets.token_urlsafe(16), "exp": expires}
    response.set_cookie(
        COOKIE,
        _serializer(request).dumps(payload),
        max_age=int(lifetime),
        path=PATH,
        secure=secure(request),
        httponly=True,
        samesite="lax",
    )


def end(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, secure=secure(request), httponly=True, samesite="lax")


def csrf_token(request: Request, session: Session) -> str:
    key = hashlib.sha256(("csrf:" + _secret(request)).encode()).digest()
    return hmac.new(key, ("csrf:" + session.sid).encode(), hashlib.sha256).hexdigest()


def check_csrf(request: Request, session: Session, sent: Any) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), csrf_token(request, session).encode())
