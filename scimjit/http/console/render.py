"""Rendering console pages: one Jinja2 environment (autoescaped) over the package's templates, and the
refusal page every "no" ends on (a title people understand, the detail, a way back; never a traceback)."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from scimjit.http.console.session import Session, csrf_token

# Refusal reason codes (JitError.reason) as page titles.
TITLES = {
    "not_eligible": "You cannot request this group",
    "not_requestable": "This group cannot be requested",
    "too_long": "That is longer than this group allows",
    "not_pending": "This request was already decided",
    "already_decided": "You have already decided this request",
    "self_approval": "You cannot decide your own request",
    "not_an_approver": "You are not an approver for this group",
    "not_your_request": "This is not your request",
    "signed_out": "You are signed out",
    "csrf": "This form has expired",
    "not_admin": "Administrators only",
    "invalid_request": "Something in the form is missing or wrong",
    "invalidFilter": "The filter is not valid",
    "invalid_state": "This sign-in expired",
    "unknown_user": "You are not in the directory",
    "inactive_user": "Your account is not active",
    "issuer_unavailable": "Sign-in is unavailable right now",
    "not_found": "Not found",
}


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("scimjit.http.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def page(
    request: Request, session: Session | None, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    values = {
        "session": session,
        "csrf": csrf_token(request, session) if session else "",
        "is_admin": getattr(request.state, "console_admin", False),
        "note": request.query_params.get("note", ""),
        **context,
    }
    html = environment().get_template(template).render(values)
    response = HTMLResponse(html, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def refusal(request: Request, session: Session | None, status: int, reason: str, detail: str) -> HTMLResponse:
    title = TITLES.get(reason, "That did not work")
    return page(request, session, "refusal.html", status, title=title, reason=reason, detail=detail)
