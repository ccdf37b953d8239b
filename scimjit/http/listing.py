"""List and `.search` responses (RFC 7644 §3.4.2, §3.4.3; cursors per RFC 9865): everything runs in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response

from scimjit.http.context import context, projection_from, services
from scimjit.http.responses import LIST_RESPONSE_URN, scim_response
from scimjit.scim.errors import invalid_value
from scimjit.scim.projection import apply
from scimjit.store import resources as ops
from scimjit.store import users as user_rows
from scimjit.store.query import SearchParams, index_plan, search, user_name_lookup

PARAMS = (
    "filter",
    "sortBy",
    "sortOrder",
    "startIndex",
    "count",
    "cursor",
    "attributes",
    "excludedAttributes",
)
_CANONICAL = {p.lower(): p for p in PARAMS}  # parameter names are case-insensitive (RFC 7644 §3.10)


def _int(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise invalid_value(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_value(f"{name} must be an integer, got {value!r}") from None


def param_text(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, list):  # POST .search sends attributes as arrays
        return ",".join(str(v) for v in value)
    return str(value)


def search_params(request: Request, params: dict[str, Any]) -> SearchParams:
    settings = services(request).settings
    count = _int(params, "count")
    return SearchParams(
        filter=param_text(params, "filter"),
        sort_by=param_text(params, "sortBy"),
        sort_order=param_text(params, "sortOrder"),
        start_index=_int(params, "startIndex"),
        count=settings.default_page_size if count is None else count,
        cursor=param_text(params, "cursor"),
        max_page_size=settings.max_page_size,
        max_filter_length=settings.max_filter_length,
        max_filter_depth=settings.max_filter_depth,
        max_filter_terms=settings.filter_max_terms,
    )


def fetch_page(ctx: ops.Context, kind: str, params: SearchParams) -> tuple[Any, list[dict[str, Any]]]:
    """A page and its resources' documents (to project)."""
    page, docs = _page(ctx, kind, params, finished=False)
    return page, cast(list[dict[str, Any]], docs)  # not finished: documents only


def _page(
    ctx: ops.Context, kind: str, params: SearchParams, *, finished: bool
) -> tuple[Any, Sequence[orjson.Fragment | dict[str, Any]]]:
    """A page and its resources; `finished`: a resource may come as its final JSON (a default projection's
    page of users, spliced rather than decoded and encoded again: `store.users.encoded`)."""
    rt = ctx.registry.resource_type(kind)
    params, user_name_key = user_name_lookup(ctx.registry, rt, params)
    if user_name_key is not None:
        return ops.lookup_user(ctx, user_name_key)
    spliced = kind == ops.USER and finished and ctx.projection.is_default
    if kind == ops.USER:
        plan = index_plan(
            ctx.db.engine.dialect,
            ctx.registry,
            rt,
            params,
            data_as_text=spliced,
            columns=user_rows.RENDERED,
        )
        if plan is not None:
            with ctx.db.snapshot() as reader:
                page = plan.search(reader, params, ctx.now_micros)
                if spliced:
                    return page, ops.encode_users(reader, ctx, page.rows)
                return page, ops.render_users(reader, ctx, page.rows)
    with ctx.db.read() as conn:
        page = search(conn, ctx.registry, rt, params, ctx.now_micros, data_as_text=spliced)
        if spliced:
            return page, ops.encode_users(conn, ctx, list(page.rows))
        render = ops.render_users if kind == ops.USER else ops.render_groups
        return page, render(conn, ctx, list(page.rows))


async def _page_async(
    ctx: ops.Context, kind: str, params: SearchParams
) -> tuple[Any, Sequence[orjson.Fragment | dict[str, Any]]]:
    """`_page` (finished) from the event loop. A `userName eq` lookup, the IdPs' every-user question, is one
    statement awaited on the loop (`Database.fetch_async`: no thread hop on PostgreSQL); any other page
    runs in `Database.run`."""
    if kind == ops.USER:
        params, user_name_key = user_name_lookup(ctx.registry, ctx.registry.resource_type(kind), params)
        if user_name_key is not None:
            return await ops.lookup_user_async(ctx, user_name_key)
    return await ctx.db.run(_page, ctx, kind, params, finished=True)  # the filter parsed once: as given


async def list_response(request: Request, kind: str, params: dict[str, Any]) -> Response:
    canonical = {_CANONICAL[k.lower()]: v for k, v in params.items() if k.lower() in _CANONICAL}
    projection = projection_from(request, kind, {k: param_text(canonical, k) for k in canonical})
    ctx = context(request, projection)
    sp = search_params(request, canonical)
    page, docs = await _page_async(ctx, kind, sp)
    svc = services(request)
    rt = svc.registry.resource_type(kind)
    body: dict[str, Any] = {
        "schemas": [LIST_RESPONSE_URN],
        "totalResults": page.total,
        "itemsPerPage": len(docs),
        "Resources": [
            d if isinstance(d, orjson.Fragment) else apply(svc.registry, rt, d, projection) for d in docs
        ],
    }
    if page.start_index is not None:  # cursor pages have no index (RFC 9865)
        body["startIndex"] = page.start_index
    if page.next_cursor:
        body["nextCursor"] = page.next_cursor
    if page.previous_cursor:
        body["previousCursor"] = page.previous_cursor
    return scim_response(body)
