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
- `POST /requests/{id}/approve` and `/deny` `{"approver", "comment"?}` with an `admin` token only: the
  decision of a person who proved who they are to scimjit (docs/jit-access.md, "Trust model"). The
  `requests` scope files requests on behalf of users (a chat bot) but never decides them, and an ID token
  is no credential for deciding (one issued to any configured application would do, and could be replayed).
  The audit actor is `token:<name>`, the decision records `via: admin-token` and the approver named.
  People decide in the console, which calls `Access.decide(..., decided_via="console")`.

An ID token accepted to file a request is single-use: its `jti` is claimed in the `used_once` replay cache
with the request (`Access.create_request(once=...)`), so a replayed token is a 401 `token_replayed`.

Lists with SCIM filters (`GET /grants?filter=status eq "active"`, `GET /requests?filter=...`, scope `admin`)
are the admin views of admin.py, in the same /jit/v1. Users and groups may be named by id, or by
userName / displayName. Errors are `JitError`s, `{"error", "detail"}` (errors.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scimjit.access.service import Access, SingleUse
from scimjit.http.apidoc import AUTH_ERRORS, JSON, Json, body, doc, jit_errors, path, ref, resp
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.client import client_address
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
    "Decision": {
        "type": "object",
        "properties": {
            "approver": {
                **_TEXT,
                "description": "the person deciding (id or userName), for whom the admin acts",
            },
            "comment": _TEXT,
        },
        "required": ["approver"],
    },
}


def _bodies(*names: str) -> dict[str, Json]:
    return {name: BODIES[name] for name in names}


WHO = (
    "Either a token with the `requests` scope naming the `user`, or `application` + the user's own "
    "`id_token` (single-use: a replayed token is a 401 `token_replayed`)"
)
DECIDERS = (
    "With an `admin` token only, naming the `approver` it acts for (audited as `token:<name>`, "
    "`decidedVia: admin-token`). A `requests` token may file requests but never decide them (403 `forbidden`), "
    "and an ID token is not accepted here (403 `id_token_not_accepted`): people decide signed in to scimjit."
)


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


async def _requester(request: Request, body: dict[str, Any]) -> tuple[Any, str, SingleUse | None]:
    """Who files the request, the actor name for the audit trail, and (for an ID token) what makes it
    single-use: the `user` named by a token with the `requests` scope, or proven by their own ID token."""
    if "id_token" in body:
        charge_client(request)  # no scimjit token vouches for this caller: every request counts
        return await _access(request).user_from_id_token(body.get("application"), body.get("id_token"))
    principal = require(request, REQUESTS_SCOPE)
    return _named(body, "user", "or send `application` + `id_token`"), principal.name, None


def _named(body: dict[str, Any], field: str, hint: str = "") -> str:
    who = body.get(field)
    if not isinstance(who, str) or not who:
        raise JitError(
            400, "invalid_request", f"name the `{field}` (id or userName){' ' + hint if hint else ''}"
        )
    return who


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
    user, actor, once = await _requester(request, body)
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
        once=once,
        client_ip=client_address(request),  # the filer's address: the policy's network conditions
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
        f"{decision.capitalize()} a pending request for an approver (admin; never one's own)",
        "Access",
        {"200": REQUEST, **jit_errors(400, 401, 403, 404, 409, 413, 415, 429)},
        params=ONE,
        body=body(ref("Decision"), JSON),
        description=DECIDERS,
        components=_bodies("Decision"),
    )
    async def endpoint(request: Request) -> Response:
        body = await _body(request, optional=True)
        if "id_token" in body or "application" in body:
            charge_client(request)  # a caller without a scimjit token: every attempt counts
            raise JitError(
                403,
                "id_token_not_accepted",
                "an ID token is not a credential for deciding: approve in the console, or with an admin token",
            )
        principal = require(request, "admin")  # a `requests` token files, never decides: 403
        approver = _named(body, "approver")
        access = _access(request)
        doc = await access.db.run(
            access.decide,
            request.path_params["id"],
            approver=approver,
            decision=decision,
            comment=body.get("comment"),
            actor=f"token:{principal.name}",
            http_request_id=_request_id(request),
            decided_via="admin-token",
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
