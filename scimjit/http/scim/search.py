"""POST /.search at the service root (RFC 7644 §3.4.3): Users then Groups, paged across both, in SQL."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scimjit.http.apidoc import AUTH_ERRORS, doc, errors, ref, resp
from scimjit.http.apidoc import body as request_body
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.context import context, services
from scimjit.http.listing import LIST_RESPONSE_URN, fetch_page, param_text, search_params
from scimjit.http.responses import scim_response
from scimjit.http.scim.resources import SEARCH_REQUEST
from scimjit.scim.errors import ScimError, invalid_value
from scimjit.scim.projection import apply, parse_projection
from scimjit.store import resources as ops


@doc(
    "Search Users and Groups together",
    "SCIM",
    {"200": resp("ListResponse", ref("ListResponse")), **errors(400, 413, 415, *AUTH_ERRORS)},
    body=request_body(ref("SearchRequest")),
    components={"SearchRequest": SEARCH_REQUEST},
)
async def root_search(request: Request) -> Response:
    require(request, "scim:read", "scim:write")
    body = await read_json_object(request)
    if body.get("cursor") is not None:
        raise invalid_value("cursor pagination is per resource type; use /Users/.search or /Groups/.search")
    if body.get("sortBy"):
        raise invalid_value("sortBy is not supported across resource types; search one type to sort")
    svc = services(request)
    params = search_params(request, body)
    start = max(params.start_index or 1, 1)
    count = params.count or 0
    resources: list[dict[str, Any]] = []
    total = 0
    errors: list[ScimError] = []
    skipped = 0  # matches of earlier types, for the startIndex of later ones
    for kind in (ops.USER, ops.GROUP):
        rt = svc.registry.resource_type(kind)
        projection = parse_projection(
            svc.registry,
            rt,
            param_text(body, "attributes"),
            param_text(body, "excludedAttributes"),
            lenient=True,
        )
        ctx = context(request, projection)
        remaining = count - len(resources)
        kind_start = max(start - skipped, 1)
        kind_params = params.__class__(
            **{**params.__dict__, "start_index": kind_start, "count": max(remaining, 0)}
        )
        try:
            page, docs = await svc.db.run(fetch_page, ctx, kind, kind_params)
        except ScimError as exc:  # the filter names attributes this type does not have: no matches here
            if exc.scim_type != "invalidFilter":
                raise
            errors.append(exc)
            continue
        resources += [apply(svc.registry, rt, d, projection) for d in docs]
        total += page.total
        skipped += page.total
    if len(errors) == 2:
        raise errors[0]
    return scim_response(
        {
            "schemas": [LIST_RESPONSE_URN],
            "totalResults": total,
            "itemsPerPage": len(resources),
            "startIndex": start,
            "Resources": resources,
        }
    )
