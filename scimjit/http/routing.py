"""A Starlette Router that tries only the routes a request could match in full.

Starlette's `Router` tries its routes in order, a regular expression and a scope dictionary each, until one
matches path and method; the SCIM table puts eleven routes before `PATCH /Groups/{id}`, the JIT API a dozen
admin lists before `POST /logins`. `IndexedRouter` indexes each plain `Route` by what a request's path alone
decides: its first segment (when that is literal), its number of segments (when no `{...:path}` parameter
spans several) and its methods. A request tries, in the table's order, the routes that agree with it and
every route the index cannot describe (a Mount, a route whose first segment is a parameter): the first full
match is the one Starlette's loop finds, since every route skipped could at best have matched partially.
Anything else (no full match: 405, 404 and the trailing-slash redirect; lifespan; websockets) runs
Starlette's own loop, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.convertors import PathConvertor
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send

# (route, its number of path segments or None for any, its methods or None for any)
_Entry = tuple[BaseRoute, int | None, frozenset[str] | None]


class IndexedRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes=routes, **kwargs)
        self._index()

    def _index(self) -> None:
        """(Re)build the index of `self.routes`; done again when the table changes length (a test appends a
        route to a running app's router)."""
        self._indexed = (self.routes, len(self.routes))
        entries = [_entry(route) for route in self.routes]
        firsts = {first for _, first in entries if first is not None}
        # per literal first segment: its routes and the unindexed ones, in table order (keys come from the
        # table only, never from requests, so the index stays the size of the table)
        self._by_first: dict[str, list[_Entry]] = {
            name: [entry for entry, first in entries if first in (name, None)] for name in firsts
        }
        self._unindexed: list[_Entry] = [entry for entry, first in entries if first is None]

    def full_match(self, scope: Scope) -> tuple[BaseRoute | None, Scope]:
        """The first route (in table order) that matches this HTTP request's path and method, with its child
        scope; (None, {}) when none does."""
        if self._indexed[0] is not self.routes or self._indexed[1] != len(self.routes):
            self._index()
        path = get_route_path(scope)
        if not path.startswith("/"):
            return None, {}
        parts = path.split("/")
        segments = len(parts) - 1
        method = scope["method"]
        for route, count, methods in self._by_first.get(parts[1], self._unindexed):
            if (count is None or count == segments) and (methods is None or method in methods):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    return route, child_scope
        return None, {}

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route, child_scope = self.full_match(scope)
            if route is not None:
                if "router" not in scope:
                    scope["router"] = self
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)


def _entry(route: BaseRoute) -> tuple[_Entry, str | None]:
    """The route's index entry and its literal first segment (None: the index cannot say, try it always)."""
    if type(route) is not Route:  # a Mount, a Host, a websocket route, a subclass with its own matching
        return (route, None, None), None
    segments = route.path.split("/")[1:]
    first: str | None = segments[0] if segments and "{" not in segments[0] else None
    spans = any(isinstance(c, PathConvertor) for c in route.param_convertors.values())
    count = None if spans else len(segments)
    methods = frozenset(route.methods) if route.methods else None
    return (route, count, methods), first


def flattened(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The table as served: a Mount of plain routes (the SCIM API's `/scim/v2`) becomes its routes, each with
    the mount's prefix in its path, so a SCIM request passes one router and no mount (the Mount's regular
    expression, child scope and second router were a tenth of a `GET /Users/{id}`'s own time). Paths, methods,
    names, endpoints and schema visibility are the routes' own, so routing, the route templates of logs and
    metrics, and /openapi.json read the same. Mounts of whole applications (the JIT API, Shared Signals, with
    their own error handling) stay mounts."""
    out: list[BaseRoute] = []
    for route in routes:
        inner = getattr(route, "app", None) if type(route) is Mount else None
        if isinstance(inner, Router) and all(type(r) is Route for r in inner.routes):
            prefix = route.path  # type: ignore[attr-defined]
            out += [
                Route(
                    prefix + r.path,
                    r.endpoint,
                    methods=sorted(r.methods) if r.methods else None,
                    name=r.name,
                    include_in_schema=r.include_in_schema,
                )
                for r in inner.routes
                if isinstance(r, Route)
            ]
        else:
            out.append(route)
    return out
