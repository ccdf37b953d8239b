"""The ASGI application: the SCIM routes under /scim/v2, the JIT sub-application at /jit/v1, operations
endpoints, error rendering, and background work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from scimjit.clock import Clock
from scimjit.config import Settings
from scimjit.http import console
from scimjit.http.apidoc import JSON, doc, resp
from scimjit.http.jit import PREFIX as JIT_PREFIX
from scimjit.http.jit import jit_api
from scimjit.http.jit.signin import jwks
from scimjit.http.metrics_route import metrics
from scimjit.http.middleware import ObservabilityMiddleware
from scimjit.http.oauth import OAuthMiddleware, oauth_verifier
from scimjit.http.openapi import openapi
from scimjit.http.ratelimit import KnownTokens, RateLimiter
from scimjit.http.responses import (
    DATABASE_UNAVAILABLE,
    database_unavailable_handler,
    http_error_handler,
    scim_error_handler,
    unexpected_error_handler,
)
from scimjit.http.routing import IndexedRouter, flattened
from scimjit.http.scim import discovery, resources
from scimjit.http.scim.bulk import bulk
from scimjit.http.scim.search import root_search
from scimjit.http.ssf import PREFIX as SSF_PREFIX
from scimjit.http.ssf import configuration as ssf_configuration
from scimjit.http.ssf import ssf_api
from scimjit.scim.errors import ScimError
from scimjit.services import BackgroundTask, Services, compose
from scimjit.store.db import Database
from scimjit.store.migrate import is_current

log = logging.getLogger("scimjit")


@doc("Liveness: the process is up", "Operations", {"200": resp("ok", {"type": "object"}, JSON)}, secure=False)
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@doc(
    "Readiness: database reachable and migrations current",
    "Operations",
    {"200": resp("ready", {"type": "object"}, JSON), "503": resp("not ready", {"type": "object"}, JSON)},
    secure=False,
)
async def readyz(request: Request) -> Response:
    svc: Services = request.app.state.services
    try:
        current = await svc.db.run(is_current, svc.db)
    except Exception as exc:  # unreachable: not ready; the why goes to the log, not to the client
        log.warning("not ready: the database is unreachable (%s)", type(exc).__name__)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    if not current:
        log.warning("not ready: database migrations are pending (run `scimjit db upgrade`)")
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ready"})


def scim_routes() -> list[BaseRoute]:
    return [  # the router tries routes in order: Users and Groups, the hot paths, first
        *resources.endpoints("User"),
        *resources.endpoints("Group"),
        *discovery.routes,
        Route("/.search", root_search, methods=["POST"]),
        Route("/Bulk", bulk, methods=["POST"]),
    ]


def route_table() -> list[BaseRoute]:
    """Every route the app serves; openapi.py documents exactly these."""
    return [
        Mount("/scim/v2", routes=scim_routes()),  # served flattened (http/routing.py)
        Mount(JIT_PREFIX, app=jit_api()),  # its own error shape and exception handlers
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        *console.routes,  # pages for people (/console): not in /openapi.json
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),  # the same set as /jit/v1/jwks.json
        Mount(SSF_PREFIX, app=ssf_api()),  # Shared Signals stream management and poll (the JIT error shape)
        Route("/.well-known/ssf-configuration", ssf_configuration, methods=["GET"]),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    services: Services | None = None,
    background: list[BackgroundTask] | None = None,
) -> Starlette:
    """Build the app. `background` tasks (worker, sweeper) run for the app's lifetime."""
    svc = services or Services.build(settings or Settings.load(), db=db, clock=clock)
    tasks: list[BackgroundTask] = list(background or [])
    # OAuth access tokens (http/oauth.py): only when an authorization server is configured, so a deployment
    # with scimjit tokens alone has no extra middleware on its hot path
    oauth = oauth_verifier(svc) if svc.settings.authorization_servers else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        running = [asyncio.ensure_future(task(stop)) for task in tasks]
        try:
            yield
        finally:
            stop.set()
            for task in running:
                try:
                    await asyncio.wait_for(task, timeout=10)
                except Exception:  # a background task failing at shutdown must not block it
                    log.exception("background task did not stop cleanly")
            if oauth is not None:
                await oauth.aclose()

    app = Starlette(
        exception_handlers={
            ScimError: scim_error_handler,
            HTTPException: http_error_handler,
            **{kind: database_unavailable_handler for kind in DATABASE_UNAVAILABLE},  # 503, Retry-After
            Exception: unexpected_error_handler,
        },
        middleware=[
            Middleware(ObservabilityMiddleware, request_log=svc.settings.request_log),
            *([Middleware(OAuthMiddleware, verifier=oauth)] if oauth is not None else []),
        ],
    )
    # The route table as served, in place of the plain Router Starlette made (before the first request builds
    # the middleware stack around it): one indexed router, the SCIM routes in it without their mount
    # (http/routing.py), and the lifespan of the background tasks.
    app.router = IndexedRouter(flattened(route_table()), lifespan=lifespan)
    app.state.services = svc
    app.state.rate_limiter = RateLimiter(svc.settings.rate_limit_per_second, svc.settings.rate_limit_burst)
    app.state.client_limiter = RateLimiter(
        svc.settings.client_rate_limit_per_second, svc.settings.client_rate_limit_burst, subject="address"
    )
    app.state.known_tokens = KnownTokens()
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (each worker process builds its own app from the environment)."""
    from scimjit.logs import configure

    settings = Settings.load()
    configure(settings.log_level)
    # Everything is built now (scimjit.services.compose), so a bad [[applications]] table stops the start;
    # SCIM writes get the deprovisioning listener; the in-process outbox worker and sweeper run unless off.
    services = compose(settings)
    return create_app(services=services, background=list(services.background))
