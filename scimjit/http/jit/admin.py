"""Admin read APIs under /jit/v1: audit trail, accounts, grants, access requests and the outbox.

Each answers SCIM list parameters (`filter`, `sortBy`, `sortOrder`, `startIndex`, `count`; names
case-insensitive) with a SCIM-style ListResponse whose records use camelCase names. Shorthands for the
common questions are ANDed with the filter: `application=`, `status=`, `user=` (the user id), `action=`
(audit), and `limit=` / `after=` (keyset paging on `id`). `GET /jit/v1/audit`
also exports: `?format=jsonl` streams every matching record as one JSON object per line, in order.
All of them need the `admin` scope: the audit trail says who may reach what. Their errors are SCIM error
documents (`scimType` names the bad parameter). `GET /apps` lists the configured applications.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from scimjit.http.apidoc import (
    AUTH_ERRORS,
    JSON,
    LIST_PARAMS,
    Operation,
    describe,
    doc,
    errors,
    jit_errors,
    query,
    ref,
    resp,
)
from scimjit.http.auth import require
from scimjit.http.context import services
from scimjit.http.jit.errors import json_response, scim_errors
from scimjit.http.responses import LIST_RESPONSE_URN
from scimjit.scim.errors import invalid_value
from scimjit.store import admin

ADMIN = "admin"
PARAMS = ("filter", "sortBy", "sortOrder", "startIndex", "count", "format", "limit", "after")
SHORTHANDS = {"application": "application", "status": "status", "user": "userId", "action": "action"}
_CANONICAL = {p.lower(): p for p in (*PARAMS, *SHORTHANDS)}


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _params(request: Request) -> dict[str, str]:
    return {_CANONICAL[k.lower()]: v for k, v in request.query_params.items() if k.lower() in _CANONICAL}


def _int(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise invalid_value(f"{name} must be an integer, got {value!r}") from None


def _filter(params: dict[str, str], attributes: frozenset[str]) -> str | None:
    """The `filter` parameter ANDed with the shorthands this view has (values quoted as JSON strings)."""
    terms = [f"({params['filter']})"] if params.get("filter") else []
    for param, attribute in SHORTHANDS.items():
        if param in params and attribute in attributes:
            terms.append(f"{attribute} eq {orjson.dumps(params[param]).decode()}")
    after = _int(params, "after")
    if after is not None:
        terms.append(f"id gt {after}")
    return " and ".join(terms) or None


LIST_VIEW_PARAMS = [
    *LIST_PARAMS,
    query("application", {"type": "string"}, "Shorthand for `application eq ...`"),
    query("status", {"type": "string"}, "Shorthand for `status eq ...`"),
    query("user", {"type": "string"}, "Shorthand for `userId eq ...`"),
    query("limit", {"type": "integer"}, "Same as count"),
    query("after", {"type": "integer"}, "Only records with a larger id (keyset paging)"),
]
AUDIT_PARAMS = [
    query("action", {"type": "string"}, "Shorthand for `action eq ...`"),
    query("format", {"type": "string", "enum": ["json", "jsonl"]}, "jsonl: export every match as JSON lines"),
]


def _operation(name: str, view: admin.View) -> Operation:
    listed = resp(f"ListResponse of {view.resource_type}", ref(f"{view.resource_type}List"), JSON)
    if name == "audit":
        listed["content"]["application/x-ndjson"] = {"schema": {"type": "string"}}
    return Operation(
        f"List {view.resource_type} records (admin)",
        "Admin",
        {"200": listed, **errors(400, *AUTH_ERRORS)},
        params=[*LIST_VIEW_PARAMS, *(AUDIT_PARAMS if name == "audit" else ())],
    )


def listing(name: str) -> Route:
    view = admin.VIEWS[name]
    attributes = admin.attribute_names(view)

    @scim_errors
    async def endpoint(request: Request) -> Response:
        require(request, ADMIN)
        svc = services(request)
        settings = svc.settings
        params = _params(request)
        fmt = params.get("format", "json").lower()
        if fmt not in ("json", "jsonl"):
            raise invalid_value(f"format must be json or jsonl, got {params['format']!r}")
        if fmt == "jsonl":
            records = admin.stream(
                svc.db,
                view,
                filter=_filter(params, attributes),
                max_filter_length=settings.max_filter_length,
                max_filter_depth=settings.max_filter_depth,
                max_filter_terms=settings.filter_max_terms,
            )
            return StreamingResponse(_lines(records), media_type="application/x-ndjson")
        count = _int(params, "count")
        if count is None:
            count = _int(params, "limit")
        where = _filter(params, attributes)

        def fetch() -> admin.Page:
            with svc.db.read() as conn:
                return admin.query(
                    conn,
                    view,
                    filter=where,
                    sort_by=params.get("sortBy"),
                    sort_order=params.get("sortOrder"),
                    start_index=_int(params, "startIndex"),
                    count=min(settings.default_page_size if count is None else count, settings.max_page_size),
                    max_filter_length=settings.max_filter_length,
                    max_filter_depth=settings.max_filter_depth,
                    max_filter_terms=settings.filter_max_terms,
                )

        page = await svc.db.run(fetch)
        return JsonResponse(
            {
                "schemas": [LIST_RESPONSE_URN],
                "totalResults": page.total,
                "startIndex": page.start_index,
                "itemsPerPage": len(page.resources),
                "Resources": page.resources,
            }
        )

    endpoint.__name__ = f"list_{name}"
    endpoint.__doc__ = f"List {view.resource_type} records with SCIM filters, sorting and paging."
    describe(endpoint, _operation(name, view))
    return Route(f"/{name}", endpoint, methods=["GET"], name=f"admin_{name}")


def _lines(records: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for record in records:
        yield orjson.dumps(record) + b"\n"


@doc(
    "Configured applications (admin)",
    "JIT",
    {"200": resp("applications", {"type": "object"}, JSON), **jit_errors(401, 403, 429)},
)
async def apps_list(request: Request) -> Response:
    require(request, ADMIN)
    engine = services(request).engine
    return json_response({"applications": [a.summary() for a in engine.apps.values()]})


@doc(
    "Configured access policies, with their conditions and grant windows (admin)",
    "Access",
    {"200": resp("policies", {"type": "object"}, JSON), **jit_errors(401, 403, 429)},
)
async def policies_list(request: Request) -> Response:
    require(request, ADMIN)
    return json_response({"policies": [p.summary() for p in services(request).settings.jit.policies]})


routes: list[BaseRoute] = [
    *(listing(name) for name in admin.VIEWS),
    Route("/apps", apps_list, methods=["GET"]),
    Route("/policies", policies_list, methods=["GET"]),
]
