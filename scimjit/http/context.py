"""Per-request helpers shared by the SCIM endpoints: base URL, storage context, projection, ETag headers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from scimjit.clock import to_micros
from scimjit.scim.projection import Projection, parse_projection
from scimjit.services import Services
from scimjit.store.resources import Context

SCIM_PREFIX = "/scim/v2"


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def base_url(request: Request) -> str:
    return _base_url(services(request), request)


def _base_url(svc: Services, request: Request) -> str:
    configured = svc.settings.base_url
    if configured:
        return configured.rstrip("/") + SCIM_PREFIX
    scheme = request.scope.get("scheme", "http")
    host = request.headers.get("host") or "localhost"
    return f"{scheme}://{host}{SCIM_PREFIX}"


_DEFAULT = Projection(frozenset(), frozenset())


def projection_from(request: Request, kind: str, params: dict[str, Any] | None = None) -> Projection:
    if params is None and not request.scope.get("query_string"):
        return _DEFAULT  # no query string, so no attributes / excludedAttributes (most requests IdPs send)
    svc = services(request)
    source = params if params is not None else request.query_params
    return parse_projection(
        svc.registry,
        svc.registry.resource_type(kind),
        source.get("attributes"),
        source.get("excludedAttributes"),
    )


def context(request: Request, projection: Projection) -> Context:
    """The storage context of this request (built on every SCIM request: the services looked up once)."""
    svc = services(request)
    settings = svc.settings
    state = request.scope.get("state", {})
    principal = state.get("principal")  # set by `auth.require`: its token name is the audit trail's actor
    return Context(
        db=svc.db,
        registry=svc.registry,
        listener=svc.listener,
        now_micros=to_micros(svc.clock.now()),
        base_url=_base_url(svc, request),
        projection=projection,
        actor=principal.name if principal is not None else None,
        request_id=state.get("request_id"),
        strict_attributes=settings.strict_attributes,
        patch_max_operations=settings.patch_max_operations,
    )


def etag(version: int) -> str:
    return f'W/"{version}"'
