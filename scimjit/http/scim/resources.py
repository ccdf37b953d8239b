"""/Users and /Groups: one set of handlers, parameterised by resource type."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scimjit.http.apidoc import (
    AUTH_ERRORS,
    PROJECTION_PARAMS,
    SCIM_JSON,
    SCIM_LIST_PARAMS,
    Json,
    Operation,
    describe,
    errors,
    path,
    ref,
    resp,
)
from scimjit.http.apidoc import body as request_body
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.context import context, etag, projection_from, services
from scimjit.http.listing import list_response
from scimjit.http.responses import scim_response
from scimjit.scim.projection import apply
from scimjit.store import resources as ops

READ, WRITE = ("scim:read", "scim:write"), ("scim:write",)


def _shaped(request: Request, kind: str, doc: dict[str, Any], projection: Any) -> dict[str, Any]:
    svc = services(request)
    return apply(svc.registry, svc.registry.resource_type(kind), doc, projection)


def _written(
    request: Request, kind: str, written: ops.Written, projection: Any, status: int = 200
) -> Response:
    headers = {"ETag": etag(written.version)}
    if status == 201:
        headers["Location"] = written.document["meta"]["location"]
    if status == 200 and (not written.complete or "return=minimal" in request.headers.get("prefer", "")):
        return Response(status_code=204, headers=headers)
    return scim_response(_shaped(request, kind, written.document, projection), status, headers)


def _names_attributes(request: Request) -> bool:
    """Whether the client chose the response's attributes; RFC 7644 §3.5.2 then requires 200 with them.

    Otherwise a group PATCH (one per membership change from Entra, Okta and AWS, none asking for the
    resource) answers 200 with the group only while it has at most `group_patch_response_max_members`
    members, else 204 with the new ETag: never the member list of a big group (docs/scim.md)."""
    params = request.query_params
    return "attributes" in params or "excludedAttributes" in params


PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
SEARCH_REQUEST: Json = {
    "type": "object",
    "properties": {
        "schemas": {"type": "array", "items": {"type": "string", "enum": [SEARCH_URN]}},
        "filter": {"type": "string"},
        "sortBy": {"type": "string"},
        "sortOrder": {"type": "string", "enum": ["ascending", "descending"]},
        "startIndex": {"type": "integer"},
        "count": {"type": "integer"},
        "attributes": {"type": "array", "items": {"type": "string"}},
        "excludedAttributes": {"type": "array", "items": {"type": "string"}},
    },
}
PATCH_OP: Json = {
    "type": "object",
    "properties": {
        "schemas": {"type": "array", "items": {"type": "string", "enum": [PATCH_URN]}},
        "Operations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "op": {
                        "type": "string",
                        "enum": ["add", "remove", "replace", "Add", "Remove", "Replace"],
                    },
                    "path": {"type": "string"},
                    "value": {},
                },
                "required": ["op"],
            },
        },
    },
    "required": ["schemas", "Operations"],
}
IF_MATCH: Json = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}}
ONE = path("id")


def _operations(kind: str) -> dict[str, Operation]:
    """The OpenAPI operations of one resource type, by handler; `created` links a new resource to the others
    (for a stateful fuzzer, and a reader)."""
    written: Json = {
        "description": f"The {kind}",
        "headers": {"ETag": {"schema": {"type": "string"}, "description": 'Version, e.g. W/"3"'}},
        "content": {SCIM_JSON: {"schema": ref(kind)}},
    }
    created = {
        **written,
        "description": "Created",
        "links": {
            f"{verb}{kind}": {"operationId": f"{verb}{kind}", "parameters": {"id": "$response.body#/id"}}
            for verb in ("get", "replace", "patch", "delete")
        },
    }
    listed = resp("ListResponse", ref("ListResponse"))
    update_errors = errors(400, 404, 409, 412, 413, 415, *AUTH_ERRORS)
    minimal = resp("Done (Prefer: return=minimal)")
    return {
        "list": Operation(
            f"List or filter {kind}s",
            "SCIM",
            {"200": listed, **errors(400, *AUTH_ERRORS)},
            params=SCIM_LIST_PARAMS,
            operation_id=f"list{kind}s",
        ),
        "create": Operation(
            f"Create a {kind}",
            "SCIM",
            {"201": created, **errors(400, 409, 413, 415, *AUTH_ERRORS)},
            params=PROJECTION_PARAMS,
            body=request_body(ref(f"{kind}Input")),
            operation_id=f"create{kind}",
        ),
        "search": Operation(
            f"Search {kind}s (POST form of the list)",
            "SCIM",
            {"200": listed, **errors(400, 413, 415, *AUTH_ERRORS)},
            body=request_body(ref("SearchRequest")),
            operation_id=f"search{kind}s",
            components={"SearchRequest": SEARCH_REQUEST},
        ),
        "get": Operation(
            f"Read a {kind}",
            "SCIM",
            {"200": written, "304": resp("Not modified (If-None-Match)"), **errors(400, 404, *AUTH_ERRORS)},
            params=[ONE, *PROJECTION_PARAMS],
            operation_id=f"get{kind}",
        ),
        "replace": Operation(
            f"Replace a {kind}",
            "SCIM",
            {"200": written, "204": minimal, **update_errors},
            params=[ONE, IF_MATCH, *PROJECTION_PARAMS],
            body=request_body(ref(f"{kind}Input")),
            operation_id=f"replace{kind}",
        ),
        "patch": Operation(
            f"Modify a {kind} (RFC 7644 §3.5.2)",
            "SCIM",
            {"200": written, "204": minimal, **update_errors},
            params=[ONE, IF_MATCH, *PROJECTION_PARAMS],
            body=request_body(ref("PatchOp")),
            operation_id=f"patch{kind}",
            components={"PatchOp": PATCH_OP},
        ),
        "delete": Operation(
            f"Delete a {kind}",
            "SCIM",
            {"204": resp("Deleted"), **errors(404, 412, *AUTH_ERRORS)},
            params=[ONE, IF_MATCH],
            operation_id=f"delete{kind}",
        ),
    }


def endpoints(kind: str) -> list[Route]:
    create_fn = ops.create_user if kind == ops.USER else ops.create_group
    replace_fn = ops.replace_user if kind == ops.USER else ops.replace_group
    patch_fn = ops.patch_user if kind == ops.USER else ops.patch_group
    delete_fn = ops.delete_user if kind == ops.USER else ops.delete_group
    endpoint = f"/{kind}s"

    async def get_one(request: Request) -> Response:
        require(request, *READ)
        projection = projection_from(request, kind)
        ctx = context(request, projection)
        if kind == ops.USER:  # the hottest read: awaited on the loop, not in a thread, on PostgreSQL
            doc, version = await ops.read_user_async(ctx, request.path_params["id"])
        else:
            doc, version = await ctx.db.run(ops.read_one, ctx, kind, request.path_params["id"])
        tag = etag(version)
        if request.headers.get("if-none-match") in (tag, tag[2:], "*"):
            return Response(status_code=304, headers={"ETag": tag})
        return scim_response(_shaped(request, kind, doc, projection), headers={"ETag": tag})

    async def list_(request: Request) -> Response:
        require(request, *READ)
        return await list_response(request, kind, dict(request.query_params))

    async def search(request: Request) -> Response:
        require(request, *READ)
        body = await read_json_object(request)
        return await list_response(request, kind, body)

    async def create(request: Request) -> Response:
        require(request, *WRITE)
        body = await read_json_object(request)
        projection = projection_from(request, kind)
        ctx = context(request, projection)
        written = await ops.run_write(ctx, create_fn, body)
        return _written(request, kind, written, projection, status=201)

    def update_endpoint(update_fn: Any, capped: bool = False) -> Any:
        """PUT and PATCH differ only in the store function they call, and in `capped` (group PATCH)."""

        async def update(request: Request) -> Response:
            require(request, *WRITE)
            body = await read_json_object(request)
            projection = projection_from(request, kind)
            ctx = context(request, projection)
            if capped and not _names_attributes(request):
                ctx = dataclasses.replace(
                    ctx, members_cap=services(request).settings.group_patch_response_max_members
                )
            written = await ops.run_write(
                ctx, update_fn, request.path_params["id"], body, request.headers.get("if-match")
            )
            return _written(request, kind, written, projection)

        return update

    replace, patch = update_endpoint(replace_fn), update_endpoint(patch_fn, capped=kind == ops.GROUP)

    async def delete(request: Request) -> Response:
        require(request, *WRITE)
        ctx = context(request, projection_from(request, kind, {}))
        await ctx.db.run(delete_fn, ctx, request.path_params["id"], request.headers.get("if-match"))
        return Response(status_code=204)

    described = _operations(kind)
    for name, handler in (
        ("list", list_),
        ("create", create),
        ("search", search),
        ("get", get_one),
        ("replace", replace),
        ("patch", patch),
        ("delete", delete),
    ):
        describe(handler, described[name])
    return [
        Route(endpoint, list_, methods=["GET"]),
        Route(endpoint, create, methods=["POST"]),
        Route(f"{endpoint}/.search", search, methods=["POST"]),
        Route(endpoint + "/{id}", get_one, methods=["GET"]),
        Route(endpoint + "/{id}", replace, methods=["PUT"]),
        Route(endpoint + "/{id}", patch, methods=["PATCH"]),
        Route(endpoint + "/{id}", delete, methods=["DELETE"]),
    ]
