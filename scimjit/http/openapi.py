"""The OpenAPI 3.1 description of every endpoint, served at GET /openapi.json (no token needed).

The paths come from the route table: each handler carries its operation (summary, parameters, request body,
responses, whether it needs a token; see apidoc.py), declared next to it, and a route without one fails the
build instead of going undocumented. The shared component schemas are here. Resource bodies are generated from the schema registries (`schemas/*.json` for SCIM, `schemas/admin/` for
the admin views), so the document says what the server actually validates, and a fuzzer such as
schemathesis generates requests of the right shape.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from scimjit.config import Settings
from scimjit.http.apidoc import JSON as JSON_MEDIA
from scimjit.http.apidoc import doc, operation_of, ref, resp
from scimjit.http.context import services
from scimjit.http.jit.admin import JsonResponse
from scimjit.scim.schema import Attribute, Registry, ResourceType
from scimjit.store.admin import VIEWS, admin_registry

METHODS = ("get", "post", "put", "patch", "delete")
_CONVERTER = re.compile(r"\{(\w+):\w+\}")
LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"

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


# ---------------------------------------------------------------- paths from the route table


def _operation_ids(paths: dict[str, dict[str, Any]]) -> None:
    """Every operation gets an id; those not named by their handler get `<method><Path words>`."""
    for path, by_method in paths.items():
        words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w and w not in ("scim", "v2", "jit", "v1")]
        for method, op in by_method.items():
            op.setdefault("operationId", method + "".join(w[:1].upper() + w[1:] for w in words))


def _endpoints(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path template, method, endpoint) of every route, mounts included; `{id:int}` is spelled `{id}`."""
    for route in routes:
        if isinstance(route, Mount):
            yield from _endpoints(route.routes, prefix + route.path)
        elif isinstance(route, Route) and route.include_in_schema:  # console pages say False
            template = _CONVERTER.sub(r"{\1}", prefix + route.path)
            for method in sorted(route.methods or ()):
                if method.lower() in METHODS:
                    yield template, method.lower(), route.endpoint


def paths(
    settings: Settings, routes: Sequence[BaseRoute]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The `paths` object, one operation per route and method from the metadata next to each handler, and
    the component schemas those operations declare for their own bodies."""
    out: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for template, method, endpoint in _endpoints(routes):
        operation = operation_of(endpoint)
        if operation is None:
            raise LookupError(f"{method.upper()} {template} has no OpenAPI description (see http/apidoc.py)")
        out.setdefault(template, {})[method] = operation.render(settings)
        for name, schema in operation.components.items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"two handlers declare different schemas named {name!r}")
    _operation_ids(out)
    return out, schemas


def _components(registry: Registry, declared: dict[str, Any]) -> dict[str, Any]:
    """The shared schemas (errors, list responses, the registries' resources) and the handlers' own."""
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
    }
    schemas.update(declared)
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
                "description": "A scimjit token: sjt_<id>_<secret>; or an OAuth 2.0 access token of a configured"
                " authorization server ([[authorization_servers]]: RFC 9068 JWT or, by introspection, opaque)",
            }
        },
    }


def build(
    settings: Settings, registry: Registry, server_url: str = "/", routes: Sequence[BaseRoute] | None = None
) -> dict[str, Any]:
    """The document for the app's route table (`routes`; by default the one create_app serves)."""
    if routes is None:
        from scimjit.http.app import route_table  # app.py serves this module: import it late

        routes = route_table()
    try:
        version = importlib.metadata.version("scimjit")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "0.0.0"
    described, declared = paths(settings, routes)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "scimjit",
            "version": version,
            "description": "SCIM 2.0 server with just-in-time provisioning and time-bound access",
        },
        "servers": [{"url": server_url}],
        "paths": described,
        "components": _components(registry, declared),
    }


@doc(
    "This document", "Operations", {"200": resp("OpenAPI 3.1", {"type": "object"}, JSON_MEDIA)}, secure=False
)
async def openapi(request: Request) -> Response:
    svc = services(request)
    cached = getattr(request.app.state, "openapi", None)
    if cached is None:
        cached = request.app.state.openapi = build(svc.settings, svc.registry, routes=request.app.routes)
    return JsonResponse(cached)
