"""The JIT API under /jit/v1: one sub-application with its own routes and exception handlers.

Route modules, one per resource: `admin` (the filtered admin lists and `GET /apps`), `logins` (the login
hook), `signin` (the OIDC authorization code flow), `outbox` (events and retries), `access` (grants and
access requests), `schedules` (shifts from a scheduling system). `errors` holds the error shape and the
handlers.

The sub-application is a Router behind an ExceptionMiddleware, not a whole Starlette app: it renders what
the JIT API raises (JitError, the shared helpers' ScimError, ConfigError, HTTPException as the outer app
does) and lets everything else (lost database, unexpected errors) through to the outer app's handlers, and
`request.app` stays the outer app (services, rate limiters, token cache live on its state).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from scimjit.http.jit import access, admin, errors, logins, outbox, schedules, signin
from scimjit.http.responses import http_error_handler
from scimjit.http.routing import IndexedRouter

PREFIX = "/jit/v1"


class JitApi:
    """The ASGI sub-application mounted at /jit/v1; `routes` is its route table (walked by openapi.py)."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.router = IndexedRouter(routes)
        self.routes = self.router.routes
        self._app = ExceptionMiddleware(
            self.router, handlers={**errors.HANDLERS, HTTPException: http_error_handler}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def routes() -> list[BaseRoute]:
    # the admin lists come first, so GET /grants and GET /requests are theirs
    return [*admin.routes, *logins.routes, *outbox.routes, *signin.routes, *access.routes, *schedules.routes]


def jit_api() -> JitApi:
    return JitApi(routes())
