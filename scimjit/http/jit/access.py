"""Just-in-time access over HTTP: grants and access requests, in the JIT sub-application under /jit/v1.

Grants (scope `admin`):
- `POST /grants` `{"user", "group", "duration" | "expiresAt", "startsAt"?, "justification"?}` -> 201 grant
- `GET /grants/{id}`; `POST /grants/{id}/extend` `{"duration" | "expiresAt"}`; `POST /grants/{id}/revoke`
  `{"reason"?}`

Requests:
- `POST /requests` `{"group", "duration", "justification", "startsAt"?}` plus who asks: `"user"` (id or
  userName) with a token holding the `requests` scope (an integration acting for the user), or
  `"application"` + `"id_token"` (the user's own OIDC ID token for that application; no scimjit token needed)
- `GET /requests/{id}` (scope `requests`)
- `POST /requests/{id}/approve` and `/deny` `{"comment"?}` plus the approver, the same two ways (`"approver"`
  with a `requests` token, or `"application"` + `"id_token"`)

Lists with SCIM filters (`GET /grants?filter=status eq "active"`, `GET /requests?filter=...`, scope `admin`)
are the admin views of admin.py, in the same /jit/v1. Users and groups may be named by id, or by
userName / displayName. Errors are `JitError`s, `{"error", "detail"}` (errors.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scimjit.access.service import Access
from scimjit.http.apidoc import AUTH_ERRORS, JSON, Json, body, doc, jit_errors, path, ref, resp
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.jit.errors import Endpoint, json_response
from scimjit.http.ratelimit import charge_client
from scimjit.jiterrors import JitError

MAX_BODY = 64 * 1024
REQUESTS_SCOPE = "requests"
ONE = [path("id")]
GRANT = resp("The grant", ref("Grant"), JSON)
REQUEST = resp("The access request", ref("AccessRequest"), JSON)
_TEXT, _WHEN = {"type": "string"}, {"type": "string", "format": "date-time"}
_DURATION = {"type": ["string", "number"], "description": 'e.g. "8h", "90m", or seconds'}
_OIDC = {"application": _TEXT, "id_token": _TEXT}
BODIES: dict[str, Json] = {
    "GrantInput": {
        "type": "object",
        "properties": {
            "user": {**_TEXT, "description": "user id or userName"},
            "group": {**_TEXT, "description": "group id or displayName"},
            "duration": _DURATION,
            "expiresAt": _WHEN,
            "startsAt": _WHEN,
            "justification": _TEXT,
        },
        "required": ["user", "group"],
    },
    "GrantExtension": {"type": "object", "properties": {"duration": _DURATION, "expiresAt": _WHEN}},
    "GrantRevocation": {"type": "object", "properties": {"reason": _TEXT}},
    "AccessRequestInput": {
        "type": "object",
        "properties": {
            "user": _TEXT,
            "group": _TEXT,
            "duration": _DURATION,
            "startsAt": _WHEN,
            "justification": _TEXT,
            **_OIDC,
        },
        "required": ["group", "duration", "justification"],
    },
    "Decision": {"type": "object", "properties": {"approver": _TEXT, "comment": _TEXT, **_OIDC}},
}


def _bodies(*names: str) -> dict[str, Json]:
    return {name: BODIES[name] for name in names}


WHO = "Either a token with the `requests` scope naming the user, or `application` + the user's `id_token`"


def _access(request: Request) -> Access:
    return request.app.state.services.access


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


async def _body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    if (
        optional
        and not request.headers.get("content-length", "").strip("0")
        and "chunked" not in (request.headers.get("transfer-encoding", ""))
    ):
        return {}
    return await read_json_object(request, MAX_BODY)


async def _who(request: Request, body: dict[str, Any], field: str) -> tuple[Any, str]:
    """The user acting (requester or approver) and the actor name for the audit trail: named in `field`
    by a token with the `requests` scope, or proven by the user's own ID token."""
    if "id_token" in body:
        charge_client(request)  # no scimjit token vouches for this caller: every request counts
        return await _access(request).user_from_id_token(body.get("application"), body.get("id_token"))
    principal = require(request, REQUESTS_SCOPE)
    who = body.get(field)
    if not isinstance(who, str) or not who:
        raise JitError(
            400, "invalid_request", f"name the `{field}` (id or userName), or send `application` + `id_token`"
        )
    return who, principal.name


# ---------------------------------------------------------------- grants


@doc(
    "Grant a user a group for a while (admin)",
    "Access",
    {"201": GRANT, **jit_errors(400, 404, 409, 413, 415, *AUTH_ERRORS)},
    body=body(ref("GrantInput"), JSON),
    components=_bodies("GrantInput"),
)
async def grant_create(request: Request) -> Response:
    principal = require(request, "admin")
    body = await _body(request)
    access = _access(request)
    doc = await access.db.run(
        access.create_grant,
        user=body.get("user"),
        group=body.get("group"),
        duration=body.get("duration"),
        expires_at=body.get("expiresAt"),
        starts_at=body.get("startsAt"),
        justification=body.get("justification"),
        actor=principal.name,
        http_request_id=_request_id(request),
    )
    return json_response(doc, 201, {"Location": f"{request.url.path.rstrip('/')}/{doc['id']}"})


@doc("One grant (admin)", "Access", {"200": GRANT, **jit_errors(404, *AUTH_ERRORS)}, params=ONE)
async def grant_get(request: Request) -> Response:
    require(request, "admin")
    access = _access(request)
    return json_response(await access.db.run(access.get_grant, request.path_params["id"]))


@doc(
    "Move a grant's end: `expiresAt`, or `duration` added to the current end (admin)",
    "Access",
    {"200": GRANT, **jit_errors(400, 404, 409, 413, 415, *AUTH_ERRORS)},
    params=ONE,
    body=body(ref("GrantExtension"), JSON),
    components=_bodies("GrantExtension"),
)
async def grant_extend(request: Request) -> Response:
    principal = require(request, "admin")
    body = await _body(request)
    access = _access(request)
    doc = await access.db.run(
        access.extend_grant,
        request.path_params["id"],
        duration=body.get("duration"),
        expires_at=body.get("expiresAt"),
        actor=principal.name,
        http_request_id=_request_id(request),
    )
    return json_response(doc)


@doc(
    "End a grant now (admin)",
    "Access",
    {"200": GRANT, **jit_errors(400, 404, 409, 413, 415, *AUTH_ERRORS)},
    params=ONE,
    body=body(ref("GrantRevocation"), JSON, required=False),
    components=_bodies("GrantRevocation"),
)
async def grant_revoke(request: Request) -> Response:
    principal = require(request, "admin")
    body = await _body(request, optional=True)
    access = _access(request)
    doc = await access.db.run(
        access.revoke_grant,
        request.path_params["id"],
        actor=principal.name,
        reason=body.get("reason"),
        http_request_id=_request_id(request),
    )
    return json_response(doc)


# ---------------------------------------------------------------- requests


@doc(
    "Request a group for a while, with a justification",
    "Access",
    {"201": REQUEST, **jit_errors(400, 401, 403, 404, 409, 413, 415, 429)},
    body=body(ref("AccessRequestInput"), JSON),
    description=WHO,
    components=_bodies("AccessRequestInput"),
)
async def request_create(request: Request) -> Response:
    body = await _body(request)
    user, actor = await _who(request, body, "user")
    access = _access(request)
    doc = await access.db.run(
        access.create_request,
        user=user,
        group=body.get("group"),
        duration=body.get("duration"),
        justification=body.get("justification"),
        starts_at=body.get("startsAt"),
        requested_by=actor,
        http_request_id=_request_id(request),
    )
    return json_response(doc, 201, {"Location": f"{request.url.path.rstrip('/')}/{doc['id']}"})


@doc(
    "One access request (scope `requests`)",
    "Access",
    {"200": REQUEST, **jit_errors(404, *AUTH_ERRORS)},
    params=ONE,
)
async def request_get(request: Request) -> Response:
    require(request, REQUESTS_SCOPE)
    access = _access(request)
    return json_response(await access.db.run(access.get_request, request.path_params["id"]))


def _decide(decision: str) -> Endpoint:
    @doc(
        f"{decision.capitalize()} a pending request as an approver (never one's own)",
        "Access",
        {"200": REQUEST, **jit_errors(400, 401, 403, 404, 409, 413, 415, 429)},
        params=ONE,
        body=body(ref("Decision"), JSON),
        description=WHO.replace("the user", "the approver"),
        components=_bodies("Decision"),
    )
    async def endpoint(request: Request) -> Response:
        body = await _body(request, optional=True)
        approver, actor = await _who(request, body, "approver")
        access = _access(request)
        doc = await access.db.run(
            access.decide,
            request.path_params["id"],
            approver=approver,
            decision=decision,
            comment=body.get("comment"),
            actor=actor,
            http_request_id=_request_id(request),
        )
        return json_response(doc)

    return endpoint


routes: list[BaseRoute] = [
    Route("/grants", grant_create, methods=["POST"]),
    Route("/grants/{id}", grant_get, methods=["GET"]),
    Route("/grants/{id}/extend", grant_extend, methods=["POST"]),
    Route("/grants/{id}/revoke", grant_revoke, methods=["POST"]),
    Route("/requests", request_create, methods=["POST"]),
    Route("/requests/{id}", request_get, methods=["GET"]),
    Route("/requests/{id}/approve", _decide("approve"), methods=["POST"]),
    Route("/requests/{id}/deny", _decide("deny"), methods=["POST"]),
]
