"""Discovery endpoints (RFC 7644 §4): generated from the schema registry and the settings, never hand-kept."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scimjit.config import Settings
from scimjit.http.apidoc import AUTH_ERRORS, doc, errors, path, ref, resp
from scimjit.http.auth import require_discovery
from scimjit.http.context import base_url, services
from scimjit.http.responses import LIST_RESPONSE_URN, scim_response
from scimjit.scim.errors import ScimError, not_found

SPC_URN = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
# Limits RFC 7643 §5 has no field for (`patch_max_operations`) are not advertised here: an extension object in
# this document fails strict clients (scim2-models rejects any key of ServiceProviderConfig it does not define,
# so scim2-tester stops at discovery). They are documented (docs/scim.md) and named in each refusal.


def _anonymous_unless_configured(settings: Settings) -> bool:
    """Discovery needs a token unless `anonymous_discovery` is on."""
    return not settings.anonymous_discovery


LISTED = resp("ListResponse", ref("ListResponse"))


def _list(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE_URN],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": 1,
        "Resources": resources,
    }


def _no_filter(request: Request) -> None:
    if "filter" in request.query_params:
        raise ScimError(403, "Filtering is not supported on discovery endpoints")


@doc(
    "Service provider configuration",
    "SCIM discovery",
    {"200": resp("config", {"type": "object"}), **errors(*AUTH_ERRORS)},
    secure=_anonymous_unless_configured,
)
async def service_provider_config(request: Request) -> Response:
    require_discovery(request)
    s = services(request).settings
    return scim_response(
        {
            "schemas": [SPC_URN],
            "documentationUri": "https://github.com/scimjit/scimjit/blob/main/docs/scim.md",
            "patch": {"supported": True},
            "bulk": {
                "supported": True,
                "maxOperations": s.max_bulk_operations,
                "maxPayloadSize": s.max_bulk_payload_bytes,
            },
            "filter": {"supported": True, "maxResults": s.max_page_size},
            "changePassword": {"supported": True},
            "sort": {"supported": True},
            "etag": {"supported": True},
            "pagination": {
                "cursor": True,
                "index": True,
                "defaultPaginationMethod": "index",
                "defaultPageSize": s.default_page_size,
                "maxPageSize": s.max_page_size,
            },
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": "Tokens made with `scimjit token create`, sent as `Authorization: Bearer`",
                    "primary": True,
                }
            ],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": f"{base_url(request)}/ServiceProviderConfig",
            },
        }
    )


@doc(
    "Resource types",
    "SCIM discovery",
    {"200": LISTED, **errors(400, *AUTH_ERRORS)},
    secure=_anonymous_unless_configured,
)
async def resource_types(request: Request) -> Response:
    require_discovery(request)
    _no_filter(request)
    registry = services(request).registry
    return scim_response(_list([rt.document(base_url(request)) for rt in registry.resource_types.values()]))


@doc(
    "One resource type",
    "SCIM discovery",
    {"200": resp("ResourceType", {"type": "object"}), **errors(404, *AUTH_ERRORS)},
    params=[path("name")],
    secure=_anonymous_unless_configured,
)
async def resource_type(request: Request) -> Response:
    require_discovery(request)
    registry = services(request).registry
    rt = registry.resource_types.get(request.path_params["name"])
    if rt is None:
        raise not_found(f"ResourceType {request.path_params['name']} not found")
    return scim_response(rt.document(base_url(request)))


@doc(
    "Schemas",
    "SCIM discovery",
    {"200": LISTED, **errors(400, *AUTH_ERRORS)},
    secure=_anonymous_unless_configured,
)
async def schemas(request: Request) -> Response:
    require_discovery(request)
    _no_filter(request)
    return scim_response(_list(services(request).registry.schema_documents(base_url(request))))


@doc(
    "One schema",
    "SCIM discovery",
    {"200": resp("Schema", {"type": "object"}), **errors(404, *AUTH_ERRORS)},
    params=[path("id")],
    secure=_anonymous_unless_configured,
)
async def schema(request: Request) -> Response:
    require_discovery(request)
    wanted = request.path_params["id"].lower()
    for document in services(request).registry.schema_documents(base_url(request)):
        if document["id"].lower() == wanted:
            return scim_response(document)
    raise not_found(f"Schema {request.path_params['id']} not found")


@doc("/Me is not supported (501)", "SCIM", errors(501, *AUTH_ERRORS))
async def me(request: Request) -> Response:
    raise ScimError(501, "/Me is not supported: scimjit authenticates applications, not end users")


routes = [
    Route("/ServiceProviderConfig", service_provider_config, methods=["GET"]),
    Route("/ResourceTypes", resource_types, methods=["GET"]),
    Route("/ResourceTypes/{name}", resource_type, methods=["GET"]),
    Route("/Schemas", schemas, methods=["GET"]),
    Route("/Schemas/{id}", schema, methods=["GET"]),
    Route("/Me", me, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
