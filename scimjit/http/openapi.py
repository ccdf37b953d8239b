"""The OpenAPI 3.1 description of every endpoint, served at GET /openapi.json (no token needed).

The operations are written out here, by hand, rather than derived from the routes: a test compares this
document with the app's routes in both directions, so an endpoint added without a description (or a
description left behind by a removed endpoint) fails the build instead of silently going undocumented.
Resource bodies are generated from the schema registries (`schemas/*.json` for SCIM, `schemas/admin/` for
the admin views), so the document says what the server actually validates, and a fuzzer such as
schemathesis generates requests of the right shape.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scimjit.config import Settings
from scimjit.http.admin_routes import JsonResponse
from scimjit.http.context import services
from scimjit.scim.schema import Attribute, Registry, ResourceType
from scimjit.store.admin import VIEWS, admin_registry

SCIM_JSON = "application/scim+json"
JSON = "application/json"
LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SEARCH_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# ---------------------------------------------------------------- JSON Schema from the SCIM registry


def attribute_schema(attr: Attribute) -> dict[str, Any]:
    if attr.type == "complex":
        single: dict[str, Any] = {
            "type": "object",
            "properties": {sub.name: attribute_schema(sub) for sub in attr.sub_attributes.values()},
        }
    else:
        single = {
            "string": {"type": "string"},
            "reference": {"type": "string"},
            "binary": {"type": "string"},
            "boolean": {"type": "boolean"},
            "integer": {"type": "integer"},
            "decimal": {"type": "number"},
            "dateTime": {"type": "string", "format": "date-time"},
        }.get(attr.type, {})
        if attr.canonical_values:
            single = {**single, "examples": list(attr.canonical_values)}
    return {"type": "array", "items": single} if attr.multi_valued else single


def resource_schema(registry: Registry, rt: ResourceType, *, for_write: bool) -> dict[str, Any]:
    """A resource as JSON Schema: core attributes at the top, extensions under their URN. Read-only
    attributes are left out of request bodies; `required` attributes are required there."""
    core = registry.schema(rt.schema)
    assert core is not None
    urns = list(rt.schema_ids)
    props: dict[str, Any] = {
        "schemas": {
            "type": "array",
            "items": {"type": "string", "enum": urns},
            "minItems": 1,
            "uniqueItems": True,
            "contains": {"const": rt.schema},
        }
    }
    required = ["schemas"] if for_write else []
    if not for_write:
        props["id"] = {"type": "string"}
        props["meta"] = {"type": "object"}
    props["externalId"] = {"type": "string"}
    for attr in core.attributes.values():
        if for_write and (attr.mutability == "readOnly" or attr.name == "id"):
            continue
        if not for_write and attr.returned == "never":
            continue
        props[attr.name] = attribute_schema(attr)
        if for_write and attr.required:
            required.append(attr.name)
            if attr.type == "string":  # userName, displayName: blank is as good as missing
                props[attr.name] = {**props[attr.name], "minLength": 1, "pattern": "\\S"}
    for urn, _ in rt.extensions:
        ext = registry.schema(urn)
        if ext is not None:
            props[urn] = {
                "type": "object",
                "properties": {
                    a.name: attribute_schema(a)
                    for a in ext.attributes.values()
                    if not (for_write and a.mutability == "readOnly")
                },
            }
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def admin_record_schema(registry: Registry, rt: ResourceType) -> dict[str, Any]:
    core = registry.schema(rt.schema)
    assert core is not None
    return {
        "type": "object",
        "description": rt.description,
        "properties": {a.name: attribute_schema(a) for a in core.attributes.values()},
    }


# ---------------------------------------------------------------- building blocks


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


LIST_PARAMS = [
    _query("filter", {"type": "string"}, 'SCIM filter (RFC 7644 §3.4.2.2), e.g. `userName eq "bjensen"`'),
    _query("sortBy", {"type": "string"}, "Attribute to sort by"),
    _query("sortOrder", {"type": "string", "enum": ["ascending", "descending"]}, "Sort direction"),
    _query("startIndex", {"type": "integer"}, "1-based index of the first result"),
    _query("count", {"type": "integer"}, "Page size (at most `max_page_size`)"),
]
PROJECTION_PARAMS = [
    _query("attributes", {"type": "string"}, "Comma-separated attributes to return"),
    _query("excludedAttributes", {"type": "string"}, "Comma-separated attributes to leave out"),
]
SCIM_LIST_PARAMS = [
    *LIST_PARAMS,
    _query("cursor", {"type": "string"}, "Cursor paging (RFC 9865); empty for the first page"),
    *PROJECTION_PARAMS,
]


def _body(schema: dict[str, Any], media: str = SCIM_JSON) -> dict[str, Any]:
    return {
        "required": True,
        "content": {media: {"schema": schema}, **({JSON: {"schema": schema}} if media == SCIM_JSON else {})},
    }


def _resp(description: str, schema: dict[str, Any] | None = None, media: str = SCIM_JSON) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {media: {"schema": schema}}
    return out


def _errors(*codes: int, media: str = SCIM_JSON, schema: str = "Error") -> dict[str, Any]:
    text = {
        400: "Invalid request (scimType says why)",
        401: "No valid token",
        403: "The token lacks the scope",
        404: "Not found",
        409: "Conflict (uniqueness)",
        412: "ETag mismatch (If-Match)",
        413: "Body or Bulk request too large",
        415: "Unsupported content type",
        429: "Rate limit: retry after `Retry-After` seconds",
        501: "Not implemented",
        503: "Not ready / downstream unavailable",
    }
    return {str(c): _resp(text[c], ref(schema), media) for c in codes}


def _op(
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    secure: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    op["security"] = BEARER if secure else []
    return op


AUTH_ERRORS = (401, 403, 429)


def _scim_resource_paths(kind: str, endpoint: str) -> dict[str, dict[str, Any]]:
    one = _path("id")
    etag_header = {"ETag": {"schema": {"type": "string"}, "description": 'Version, e.g. W/"3"'}}
    written = {
        "description": f"The {kind}",
        "headers": etag_header,
        "content": {SCIM_JSON: {"schema": ref(kind)}},
    }
    if_match = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}}
    created = {
        **written,
        "description": "Created",
        "links": {  # lets a stateful fuzzer (and a reader) follow a created resource to its other operations
            f"{verb}{kind}": {"operationId": f"{verb}{kind}", "parameters": {"id": "$response.body#/id"}}
            for verb in ("get", "replace", "patch", "delete")
        },
    }
    ops = {
        endpoint: {"get": f"list{kind}s", "post": f"create{kind}"},
        f"{endpoint}/.search": {"post": f"search{kind}s"},
        f"{endpoint}/{{id}}": {
            "get": f"get{kind}",
            "put": f"replace{kind}",
            "patch": f"patch{kind}",
            "delete": f"delete{kind}",
        },
    }
    paths = {
        endpoint: {
            "get": _op(
                f"List or filter {kind}s",
                "SCIM",
                {"200": _resp("ListResponse", ref("ListResponse")), **_errors(400, *AUTH_ERRORS)},
                params=SCIM_LIST_PARAMS,
            ),
            "post": _op(
                f"Create a {kind}",
                "SCIM",
                {"201": created, **_errors(400, 409, 413, 415, *AUTH_ERRORS)},
                params=PROJECTION_PARAMS,
                body=_body(ref(f"{kind}Input")),
            ),
        },
        f"{endpoint}/.search": {
            "post": _op(
                f"Search {kind}s (POST form of the list)",
                "SCIM",
                {"200": _resp("ListResponse", ref("ListResponse")), **_errors(400, 413, 415, *AUTH_ERRORS)},
                body=_body(ref("SearchRequest")),
            )
        },
        f"{endpoint}/{{id}}": {
            "get": _op(
                f"Read a {kind}",
                "SCIM",
                {
                    "200": written,
                    "304": _resp("Not modified (If-None-Match)"),
                    **_errors(400, 404, *AUTH_ERRORS),
                },
                params=[one, *PROJECTION_PARAMS],
            ),
            "put": _op(
                f"Replace a {kind}",
                "SCIM",
                {
                    "200": written,
                    "204": _resp("Done (Prefer: return=minimal)"),
                    **_errors(400, 404, 409, 412, 413, 415, *AUTH_ERRORS),
                },
                params=[one, if_match, *PROJECTION_PARAMS],
                body=_body(ref(f"{kind}Input")),
            ),
            "patch": _op(
                f"Modify a {kind} (RFC 7644 §3.5.2)",
                "SCIM",
                {
                    "200": written,
                    "204": _resp("Done (Prefer: return=minimal)"),
                    **_errors(400, 404, 409, 412, 413, 415, *AUTH_ERRORS),
                },
                params=[one, if_match, *PROJECTION_PARAMS],
                body=_body(ref("PatchOp")),
            ),
            "delete": _op(
                f"Delete a {kind}",
                "SCIM",
                {"204": _resp("Deleted"), **_errors(404, 412, *AUTH_ERRORS)},
                params=[one, if_match],
            ),
        },
    }
    for path, by_method in ops.items():
        for method, operation_id in by_method.items():
            paths[path][method]["operationId"] = operation_id
    return paths


def _operation_ids(paths: dict[str, dict[str, Any]]) -> None:
    """Every operation gets an id; those not named by hand get `<method><Path words>`."""
    for path, by_method in paths.items():
        words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w and w not in ("scim", "v2", "jit", "v1")]
        for method, op in by_method.items():
            op.setdefault("operationId", method + "".join(w[:1].upper() + w[1:] for w in words))


def _paths(settings: Settings) -> dict[str, dict[str, Any]]:
    discovery_secure = not settings.anonymous_discovery
    s = "/scim/v2"
    paths: dict[str, dict[str, Any]] = {
        "/healthz": {
            "get": _op(
                "Liveness: the process is up",
                "Operations",
                {"200": _resp("ok", {"type": "object"}, JSON)},
                secure=False,
            )
        },
        "/readyz": {
            "get": _op(
                "Readiness: database reachable and migrations current",
                "Operations",
                {
                    "200": _resp("ready", {"type": "object"}, JSON),
                    "503": _resp("not ready", {"type": "object"}, JSON),
                },
                secure=False,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                "Operations",
                {
                    "200": _resp("Prometheus text format", {"type": "string"}, "text/plain"),
                    **(_errors(401, 403, 429) if settings.metrics_token_required else {}),
                },
                secure=settings.metrics_token_required,
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                "Operations",
                {"200": _resp("OpenAPI 3.1", {"type": "object"}, JSON)},
                secure=False,
            )
        },
        f"{s}/ServiceProviderConfig": {
            "get": _op(
                "Service provider configuration",
                "SCIM discovery",
                {"200": _resp("config", {"type": "object"}), **_errors(*AUTH_ERRORS)},
                secure=discovery_secure,
            )
        },
        f"{s}/ResourceTypes": {
            "get": _op(
                "Resource types",
                "SCIM discovery",
                {"200": _resp("ListResponse", ref("ListResponse")), **_errors(400, *AUTH_ERRORS)},
                secure=discovery_secure,
            )
        },
        f"{s}/ResourceTypes/{{name}}": {
            "get": _op(
                "One resource type",
                "SCIM discovery",
                {"200": _resp("ResourceType", {"type": "object"}), **_errors(404, *AUTH_ERRORS)},
                params=[_path("name")],
                secure=discovery_secure,
            )
        },
        f"{s}/Schemas": {
            "get": _op(
                "Schemas",
                "SCIM discovery",
                {"200": _resp("ListResponse", ref("ListResponse")), **_errors(400, *AUTH_ERRORS)},
                secure=discovery_secure,
            )
        },
        f"{s}/Schemas/{{id}}": {
            "get": _op(
                "One schema",
                "SCIM discovery",
                {"200": _resp("Schema", {"type": "object"}), **_errors(404, *AUTH_ERRORS)},
                params=[_path("id")],
                secure=discovery_secure,
            )
        },
        f"{s}/Me": {
            method: _op("/Me is not supported (501)", "SCIM", _errors(501, *AUTH_ERRORS))
            for method in ("get", "post", "put", "patch", "delete")
        },
        **_scim_resource_paths("User", f"{s}/Users"),
        **_scim_resource_paths("Group", f"{s}/Groups"),
        f"{s}/.search": {
            "post": _op(
                "Search Users and Groups together",
                "SCIM",
                {"200": _resp("ListResponse", ref("ListResponse")), **_errors(400, 413, 415, *AUTH_ERRORS)},
                body=_body(ref("SearchRequest")),
            )
        },
        f"{s}/Bulk": {
            "post": _op(
                "Bulk operations (RFC 7644 §3.7)",
                "SCIM",
                {"200": _resp("BulkResponse", ref("BulkResponse")), **_errors(400, 413, 415, *AUTH_ERRORS)},
                body=_body(ref("BulkRequest")),
            )
        },
    }
    paths.update(_jit_paths())
    _operation_ids(paths)
    return paths


def _jit_paths() -> dict[str, dict[str, Any]]:
    j = "/jit/v1"
    jerr = {"media": JSON, "schema": "JitError"}
    admin_list_params = [
        *LIST_PARAMS,
        _query("application", {"type": "string"}, "Shorthand for `application eq ...`"),
        _query("status", {"type": "string"}, "Shorthand for `status eq ...`"),
        _query("user", {"type": "string"}, "Shorthand for `userId eq ...`"),
        _query("limit", {"type": "integer"}, "Same as count"),
        _query("after", {"type": "integer"}, "Only records with a larger id (keyset paging)"),
    ]
    paths: dict[str, dict[str, Any]] = {}
    for name, view in VIEWS.items():
        params = list(admin_list_params)
        if name == "audit":
            params += [
                _query("action", {"type": "string"}, "Shorthand for `action eq ...`"),
                _query(
                    "format",
                    {"type": "string", "enum": ["json", "jsonl"]},
                    "jsonl: export every match as JSON lines",
                ),
            ]
        responses = {
            "200": _resp(f"ListResponse of {view.resource_type}", ref(f"{view.resource_type}List"), JSON)
        }
        if name == "audit":
            responses["200"]["content"]["application/x-ndjson"] = {"schema": {"type": "string"}}
        paths[f"{j}/{name}"] = {
            "get": _op(
                f"List {view.resource_type} records (admin)",
                "Admin",
                {**responses, **_errors(400, *AUTH_ERRORS)},
                params=params,
            )
        }
    paths[f"{j}/logins"] = {
        "post": _op(
            "Login hook: verify an ID token, link or create the user's account, return roles",
            "JIT",
            {
                "200": _resp("Allowed: account, user and roles", {"type": "object"}, JSON),
                "202": _resp("Allowed; the account is still being created", {"type": "object"}, JSON),
                **_errors(400, 401, 403, 404, 413, 415, 429, 503, **jerr),
            },
            body=_body(ref("LoginRequest"), JSON),
        )
    }
    paths[f"{j}/apps"] = {
        "get": _op(
            "Configured applications (admin)",
            "JIT",
            {"200": _resp("applications", {"type": "object"}, JSON), **_errors(401, 403, 429, **jerr)},
        )
    }
    app_name = _path("name")
    flow_errors = _errors(404, **jerr)
    paths[f"{j}/apps/{{name}}/login"] = {
        "get": _op(
            "Start the OIDC authorization code flow (PKCE) for an application that lets scimjit sign users in",
            "JIT",
            {"302": _resp("To the issuer's authorization endpoint (sets the sign-in cookie)"), **flow_errors},
            params=[app_name],
            secure=False,
        )
    }
    paths[f"{j}/apps/{{name}}/callback"] = {
        "get": _op(
            "Finish the sign-in: exchange the code, verify the ID token, run the login hook",
            "JIT",
            {"302": _resp("To redirect_after_login with ?status=&user= or ?error="), **flow_errors},
            params=[
                app_name,
                _query("code", {"type": "string"}, "The authorization code"),
                _query("state", {"type": "string"}, "Must match the sign-in cookie"),
            ],
            secure=False,
        )
    }
    event_id = _path("id", {"type": "integer"})
    paths[f"{j}/outbox/retry"] = {
        "post": _op(
            "Re-arm dead outbox events (admin)",
            "JIT",
            {
                "200": _resp("retried ids", {"type": "object"}, JSON),
                **_errors(400, 401, 403, 413, 415, 429, **jerr),
            },
            body=_body(ref("RetryRequest"), JSON),
        )
    }
    paths[f"{j}/outbox/{{id}}"] = {
        "get": _op(
            "One outbox event (admin)",
            "JIT",
            {"200": _resp("event", {"type": "object"}, JSON), **_errors(401, 403, 404, 429, **jerr)},
            params=[event_id],
        )
    }
    paths[f"{j}/outbox/{{id}}/retry"] = {
        "post": _op(
            "Re-arm one dead outbox event (admin)",
            "JIT",
            {
                "200": _resp("retried ids", {"type": "object"}, JSON),
                "409": _resp("not dead", ref("JitError"), JSON),
                **_errors(401, 403, 429, **jerr),
            },
            params=[event_id],
        )
    }
    for path, ops in _access_paths(j, jerr).items():  # POST /grants joins the admin view's GET /grants
        paths.setdefault(path, {}).update(ops)
    return paths


def _access_paths(j: str, jerr: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Grants and access requests (scimjit.http.access_routes); their lists are the admin views above."""
    one = [_path("id")]
    grant = _resp("The grant", ref("Grant"), JSON)
    request = _resp("The access request", ref("AccessRequest"), JSON)
    who = "Either a token with the `requests` scope naming the user, or `application` + the user's `id_token`"
    return {
        f"{j}/grants": {
            "post": _op(
                "Grant a user a group for a while (admin)",
                "Access",
                {"201": grant, **_errors(400, 404, 409, 413, 415, *AUTH_ERRORS, **jerr)},
                body=_body(ref("GrantInput"), JSON),
            )
        },
        f"{j}/grants/{{id}}": {
            "get": _op(
                "One grant (admin)",
                "Access",
                {"200": grant, **_errors(404, *AUTH_ERRORS, **jerr)},
                params=one,
            )
        },
        f"{j}/grants/{{id}}/extend": {
            "post": _op(
                "Move a grant's end: `expiresAt`, or `duration` added to the current end (admin)",
                "Access",
                {"200": grant, **_errors(400, 404, 409, 413, 415, *AUTH_ERRORS, **jerr)},
                params=one,
                body=_body(ref("GrantExtension"), JSON),
            )
        },
        f"{j}/grants/{{id}}/revoke": {
            "post": _op(
                "End a grant now (admin)",
                "Access",
                {"200": grant, **_errors(400, 404, 409, 413, 415, *AUTH_ERRORS, **jerr)},
                params=one,
                body={**_body(ref("GrantRevocation"), JSON), "required": False},
            )
        },
        f"{j}/requests": {
            "post": _op(
                "Request a group for a while, with a justification",
                "Access",
                {"201": request, **_errors(400, 401, 403, 404, 409, 413, 415, 429, **jerr)},
                body=_body(ref("AccessRequestInput"), JSON),
                description=who,
            )
        },
        f"{j}/requests/{{id}}": {
            "get": _op(
                "One access request (scope `requests`)",
                "Access",
                {"200": request, **_errors(404, *AUTH_ERRORS, **jerr)},
                params=one,
            )
        },
        **{
            f"{j}/requests/{{id}}/{decision}": {
                "post": _op(
                    f"{decision.capitalize()} a pending request as an approver (never one's own)",
                    "Access",
                    {"200": request, **_errors(400, 401, 403, 404, 409, 413, 415, 429, **jerr)},
                    params=one,
                    body=_body(ref("Decision"), JSON),
                    description=who.replace("the user", "the approver"),
                )
            }
            for decision in ("approve", "deny")
        },
    }


def _access_components() -> dict[str, Any]:
    text, when = {"type": "string"}, {"type": "string", "format": "date-time"}
    duration = {"type": ["string", "number"], "description": 'e.g. "8h", "90m", or seconds'}
    oidc = {"application": text, "id_token": text}
    return {
        "GrantInput": {
            "type": "object",
            "properties": {
                "user": {**text, "description": "user id or userName"},
                "group": {**text, "description": "group id or displayName"},
                "duration": duration,
                "expiresAt": when,
                "startsAt": when,
                "justification": text,
            },
            "required": ["user", "group"],
        },
        "GrantExtension": {"type": "object", "properties": {"duration": duration, "expiresAt": when}},
        "GrantRevocation": {"type": "object", "properties": {"reason": text}},
        "AccessRequestInput": {
            "type": "object",
            "properties": {
                "user": text,
                "group": text,
                "duration": duration,
                "startsAt": when,
                "justification": text,
                **oidc,
            },
            "required": ["group", "duration", "justification"],
        },
        "Decision": {"type": "object", "properties": {"approver": text, "comment": text, **oidc}},
    }


def _components(registry: Registry) -> dict[str, Any]:
    admin = admin_registry()
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {
                "schemas": {"type": "array", "items": {"type": "string"}},
                "status": {"type": "string"},
                "scimType": {"type": "string"},
                "detail": {"type": "string"},
            },
            "required": ["schemas", "status"],
        },
        "JitError": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
            "required": ["error"],
        },
        "ListResponse": {
            "type": "object",
            "properties": {
                "schemas": {"type": "array", "items": {"type": "string"}},
                "totalResults": {"type": "integer"},
                "startIndex": {"type": "integer"},
                "itemsPerPage": {"type": "integer"},
                "Resources": {"type": "array", "items": {"type": "object"}},
                "nextCursor": {"type": "string"},
                "previousCursor": {"type": "string"},
            },
            "required": ["schemas", "totalResults"],
        },
        "SearchRequest": {
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
        },
        "PatchOp": {
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
        },
        "BulkRequest": {
            "type": "object",
            "properties": {
                "schemas": {"type": "array", "items": {"type": "string", "enum": [BULK_REQUEST_URN]}},
                "failOnErrors": {"type": "integer", "minimum": 1},
                "Operations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "method": {"type": "string", "enum": ["POST", "PUT", "PATCH", "DELETE"]},
                            "bulkId": {"type": "string"},
                            "version": {"type": "string"},
                            "path": {"type": "string"},
                            "data": {"type": "object"},
                        },
                        "required": ["method", "path"],
                    },
                },
            },
            "required": ["schemas", "Operations"],
        },
        "BulkResponse": {
            "type": "object",
            "properties": {
                "schemas": {"type": "array", "items": {"type": "string"}},
                "Operations": {"type": "array", "items": {"type": "object"}},
            },
        },
        "LoginRequest": {
            "type": "object",
            "properties": {"application": {"type": "string"}, "id_token": {"type": "string"}},
            "required": ["application", "id_token"],
        },
        **_access_components(),
        "RetryRequest": {
            "type": "object",
            "properties": {
                "allDead": {"type": "boolean"},
                "ids": {"type": "array", "items": {"type": "integer"}},
            },
        },
    }
    for kind in ("User", "Group"):
        rt = registry.resource_type(kind)
        schemas[kind] = resource_schema(registry, rt, for_write=False)
        schemas[f"{kind}Input"] = resource_schema(registry, rt, for_write=True)
    for view in VIEWS.values():
        rt = admin.resource_type(view.resource_type)
        schemas[view.resource_type] = admin_record_schema(admin, rt)
        schemas[f"{view.resource_type}List"] = {
            "type": "object",
            "properties": {
                "schemas": {"type": "array", "items": {"type": "string"}},
                "totalResults": {"type": "integer"},
                "startIndex": {"type": "integer"},
                "itemsPerPage": {"type": "integer"},
                "Resources": {"type": "array", "items": ref(view.resource_type)},
            },
            "required": ["totalResults", "startIndex", "itemsPerPage", "Resources"],
        }
    return {
        "schemas": schemas,
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "A scimjit token: sjt_<id>_<secret>",
            }
        },
    }


def build(settings: Settings, registry: Registry, server_url: str = "/") -> dict[str, Any]:
    try:
        version = importlib.metadata.version("scimjit")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "0.0.0"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "scimjit",
            "version": version,
            "description": "SCIM 2.0 server with just-in-time provisioning and time-bound access",
        },
        "servers": [{"url": server_url}],
        "paths": _paths(settings),
        "components": _components(registry),
    }


async def openapi(request: Request) -> Response:
    svc = services(request)
    cached = getattr(request.app.state, "openapi", None)
    if cached is None:
        cached = request.app.state.openapi = build(svc.settings, svc.registry)
    return JsonResponse(cached)
