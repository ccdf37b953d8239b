"""`http.routing.IndexedRouter` picks the route Starlette's own loop picks, for every route of the real
tables and for the shapes its index cannot describe; what matches no route in full is Starlette's answer."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount, Route, Router

from scimjit.http.app import route_table, scim_routes
from scimjit.http.jit import routes as jit_routes
from scimjit.http.openapi import _endpoints
from scimjit.http.routing import IndexedRouter, flattened

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }


def _starlette_full_match(routes: list[BaseRoute], scope: dict[str, Any]) -> BaseRoute | None:
    """What `Router.app` hands the request to when some route matches it in full."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


def _paths(routes: list[BaseRoute]) -> set[str]:
    """Every route's path with its parameters filled, with a trailing slash, one segment more and less."""
    out = {"/", "", "/nothing", "/nothing/at/all", "//", "/Users/a/b/c"}
    for route in routes:
        path = getattr(route, "path", "/")
        filled = path.replace("{id}", "x1").replace("{name}", "n1")
        for start in range(len(filled)):
            if filled[start] == "{":
                end = filled.index("}", start)
                filled = filled[:start] + "p1" + filled[end + 1 :]
                break
        filled = filled.replace("{", "").replace("}", "")
        out |= {filled, filled + "/", filled + "/extra", filled.rsplit("/", 1)[0] or "/"}
    return out


def _endpoint(_request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


SYNTHETIC: list[BaseRoute] = [  # what the index cannot describe, between routes it can
    Route("/Users", _endpoint, methods=["GET"]),
    Route("/{kind}/first", _endpoint, methods=["GET"]),  # a parameter as the first segment
    Route("/files/{rest:path}", _endpoint, methods=["GET"]),  # a parameter that spans segments
    Mount("/Users", routes=[Route("/{id}", _endpoint, methods=["DELETE"])]),  # a mount: any depth
    Route("/Users/{id}", _endpoint, methods=["GET", "DELETE"]),
    Route("/any", PlainTextResponse("any")),  # an ASGI app as endpoint: every method
    Route("/", _endpoint, methods=["GET"]),
]


@pytest.mark.parametrize(
    "table",
    [scim_routes, jit_routes, lambda: flattened(route_table()), lambda: SYNTHETIC],
    ids=["scim", "jit", "served", "unindexed shapes"],
)
def test_the_index_picks_the_route_starlette_picks(table):
    routes = table()
    indexed = IndexedRouter(routes)
    checked = 0
    for method, path in itertools.product(METHODS, sorted(_paths(routes) | {"/files/a/b/c", "/x/first"})):
        scope = _scope(method, path)
        expected = _starlette_full_match(indexed.routes, scope)
        found, child_scope = indexed.full_match(scope)
        assert found is expected, (method, path)
        if expected is not None:
            assert child_scope == expected.matches(scope)[1]
            checked += 1
    assert checked > len(routes)  # the comparison covered real matches, not only misses


def test_the_shapes_the_index_cannot_describe_still_match():
    indexed = IndexedRouter(SYNTHETIC)
    mount = SYNTHETIC[3]
    # a mount matches whatever the method (its own router answers 405), so it shadows the route after it
    assert indexed.full_match(_scope("DELETE", "/Users/u1"))[0] is mount
    assert indexed.full_match(_scope("GET", "/Users/u1"))[0] is mount
    assert indexed.full_match(_scope("GET", "/Users"))[0] is SYNTHETIC[0]
    assert indexed.full_match(_scope("GET", "/files/a/b/c"))[0] is SYNTHETIC[2]
    assert indexed.full_match(_scope("GET", "/Groups/first"))[0] is SYNTHETIC[1]
    assert indexed.full_match(_scope("PATCH", "/any"))[0] is SYNTHETIC[5]
    assert indexed.full_match(_scope("PUT", "/Users")) == (None, {})


def _call(app: Any, method: str, path: str) -> tuple[int, dict[str, str]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope(method, path) | {"scheme": "http", "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    return sent[0]["status"], headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/Users"),
        ("PUT", "/Users"),
        ("GET", "/Users/"),
        ("GET", "/nowhere"),
        ("POST", "/any"),
        ("GET", "/"),
    ],
)
def test_the_answer_is_starlette_s_for_matches_405_404_and_redirects(method, path):
    assert _call(IndexedRouter(SYNTHETIC), method, path) == _call(Router(SYNTHETIC), method, path)


def test_the_served_table_is_the_declared_one_with_the_scim_routes_out_of_their_mount():
    declared = route_table()
    served = flattened(declared)
    assert [r for r in served if isinstance(r, Mount) and r.path == "/scim/v2"] == []
    assert any(isinstance(r, Mount) and r.path == "/jit/v1" for r in served)  # whole applications stay
    assert sorted(_endpoints(served), key=repr) == sorted(_endpoints(declared), key=repr)
    by_path = {(r.path, tuple(sorted(r.methods or ()))): r for r in served if isinstance(r, Route)}
    users = by_path[("/scim/v2/Users/{id}", ("GET", "HEAD"))]
    assert users.name == "get_one" and users.include_in_schema


def test_a_route_added_to_a_running_router_is_indexed():
    router = IndexedRouter([Route("/a", _endpoint)])
    router.routes.insert(0, Route("/a", _endpoint, name="first"))
    found, _ = router.full_match(_scope("GET", "/a"))
    assert found is router.routes[0]
