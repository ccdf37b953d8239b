"""The web console at /console: server-rendered pages for requesters, approvers and admins.

Off (every path 404) unless `[console]` is configured. People sign in with OIDC (signin.py); the session is a
signed cookie and every form carries a CSRF token (session.py); pages are Jinja2 templates (render.py,
templates/) over the handlers here and the reads in pages.py. Decisions are made by the person signed in,
through `Access` (the same rules and audit as the API), with `console:<userName>` as the audit actor.

These are pages for people, not API operations: the routes say `include_in_schema=False` and /openapi.json
leaves them out.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from scimjit.config import ConsoleConfig
from scimjit.http.console import pages, session, signin
from scimjit.http.console.render import page, refusal
from scimjit.http.ratelimit import charge_client
from scimjit.jiterrors import JitError
from scimjit.scim.errors import ScimError
from scimjit.services import Services

log = logging.getLogger("scimjit.console")
PREFIX = "/console"

Handler = Callable[[Request, Services, ConsoleConfig, session.Session | None], Awaitable[Response]]


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def actor(s: session.Session) -> str:
    return f"console:{s.user_name}"


def handler(
    *, signed_in: bool = True, admin: bool = False
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a console page: 404 when the console is off, the sign-in page when signed out, admin pages for
    admins only, and every refusal (JitError, a bad SCIM filter, anything unexpected) as a page."""

    def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def endpoint(request: Request) -> Response:
            services: Services = request.app.state.services
            config = services.settings.console
            if config is None:
                return HTMLResponse("Not Found", status_code=404)
            current = session.current(request)
            if signed_in and current is None:
                if request.method == "GET":
                    return page(request, None, "signed_out.html", 401, next=request.url.path)
                return refusal(
                    request, None, 401, "signed_out", "Your session ended. Sign in again and retry."
                )
            if current is not None:
                request.state.console_admin = await services.db.run(
                    pages.is_admin, services, config, current.user_id
                )
                if admin and not request.state.console_admin:
                    return refusal(
                        request, current, 403, "not_admin", "These pages are for console administrators."
                    )
            try:
                return await fn(request, services, config, current)
            except JitError as exc:
                return refusal(request, current, exc.status, exc.reason, exc.detail)
            except ScimError as exc:
                return refusal(request, current, exc.status, exc.scim_type or "invalid_request", exc.detail)
            except Exception:
                log.exception("console page failed: %s %s", request.method, request.url.path)
                return refusal(request, current, 500, "server_error", "Something went wrong on our side.")

        return endpoint

    return wrap


def _session(s: session.Session | None) -> session.Session:
    assert s is not None  # handler(signed_in=True) checked it
    return s


# ---------------------------------------------------------------- sign-in


@handler(signed_in=False)
async def login(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    charge_client(request)  # anonymous: every sign-in start counts against the address
    target = request.query_params.get("next", "")
    if not target.startswith(PREFIX + "/") or target.startswith("//"):
        target = PREFIX + "/"  # only the console's own paths: no open redirect
    url, state = await signin.start(services, config, target)
    response = RedirectResponse(url, 302)
    response.set_cookie(
        signin.STATE_COOKIE,
        state,
        max_age=int(signin.STATE_LIFETIME),
        path=signin.STATE_PATH,
        secure=session.secure(request),
        httponly=True,
        samesite="lax",  # sent on the issuer's top-level redirect back, not on cross-site subrequests
    )
    return response


@handler(signed_in=False)
async def callback(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    charge_client(request)
    response: Response
    try:
        user, target = await signin.finish(services, config, request)
    except JitError as exc:
        log.info("console sign-in refused: %s", exc.reason)
        response = refusal(request, None, exc.status, exc.reason, exc.detail)
    else:
        response = RedirectResponse(target, 303)
        session.start(request, response, user.id, user.user_name, config.session_lifetime)
    response.delete_cookie(
        signin.STATE_COOKIE,
        path=signin.STATE_PATH,
        secure=session.secure(request),
        httponly=True,
        samesite="lax",
    )
    return response


@handler(signed_in=False)
async def logout(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    if s is not None:
        values = await pages.form(request, s)
        if isinstance(values, Response):
            return values
    response = page(request, None, "signed_out.html", 200, next=PREFIX + "/", goodbye=True)
    session.end(request, response)
    return response


# ---------------------------------------------------------------- requester


@handler()
async def home(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    me = _session(s)
    data = await services.db.run(pages.home_data, services, me, pages.page_number(request), config.page_size)
    return page(request, me, "home.html", **data)


@handler()
async def request_form(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    me = _session(s)
    group = request.query_params.get("group", "")
    policy = pages.policy_for_group(services.access, group)
    if policy is None:
        raise JitError(403, "not_requestable", f"{group!r} has no access policy: it cannot be requested")
    if not await services.db.run(pages.may_request, services, me, policy):
        # said before the form is filled in; filing is checked again by the policy, whatever the form says
        raise JitError(403, "not_eligible", f"only members of {', '.join(policy.eligible)} may request it")
    return page(
        request,
        me,
        "request.html",
        group=policy.group,
        policy=policy,
        durations=pages.durations(policy.max_duration),
        extend=request.query_params.get("extend", ""),
        starts=request.query_params.get("starts", ""),
    )


@handler()
async def request_create(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    me = _session(s)
    values = await pages.form(request, me)
    if isinstance(values, Response):
        return values
    access = services.access
    starts = values.get("starts_at_utc") or pages.from_iso_local(values.get("starts_at", ""))
    doc = await access.db.run(
        functools.partial(
            access.create_request,
            user=me.user_id,
            group=values.get("group", ""),
            duration=values.get("duration", ""),
            justification=values.get("justification", ""),
            starts_at=starts,
            requested_by=actor(me),
            http_request_id=_request_id(request),
        )
    )
    return pages.back(PREFIX + "/", "approved" if doc.get("status") == "approved" else "requested")


@handler()
async def request_cancel(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    me = _session(s)
    values = await pages.form(request, me)
    if isinstance(values, Response):
        return values
    access = services.access
    await access.db.run(
        functools.partial(
            access.cancel_request,
            request.path_params["id"],
            user_id=me.user_id,
            actor=actor(me),
            http_request_id=_request_id(request),
        )
    )
    return pages.back(PREFIX + "/", "cancelled")


# ---------------------------------------------------------------- approver


@handler()
async def approvals(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    me = _session(s)
    data = await services.db.run(pages.queue_data, services, me, pages.page_number(request), config.page_size)
    return page(request, me, "approvals.html", **data)


def decide(decision: str) -> Callable[[Request], Awaitable[Response]]:
    @handler()
    async def endpoint(
        request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
    ) -> Response:
        me = _session(s)
        values = await pages.form(request, me)
        if isinstance(values, Response):
            return values
        access = services.access
        await access.db.run(
            functools.partial(
                access.decide,
                request.path_params["id"],
                approver=me.user_id,  # the person signed in, never a name from the form
                decision=decision,
                comment=values.get("comment") or None,
                actor=actor(me),
                http_request_id=_request_id(request),
                decided_via="console",  # signed in with OIDC just now, by the console's own client
            )
        )
        return pages.back(PREFIX + "/approvals", "approved" if decision == "approve" else "denied")

    endpoint.__name__ = f"request_{decision}"
    return endpoint


# ---------------------------------------------------------------- admin


def _filter(request: Request) -> str:
    return request.query_params.get("filter", "").strip()


def directory(kind: str) -> Callable[[Request], Awaitable[Response]]:
    @handler(admin=True)
    async def endpoint(
        request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
    ) -> Response:
        where = _filter(request)
        data = await services.db.run(
            pages.directory_page, services, kind, where, pages.page_number(request), config.page_size
        )
        return page(request, s, "directory.html", kind=kind, filter=where, **data)

    endpoint.__name__ = f"admin_{kind.lower()}s"
    return endpoint


VIEW_PAGES: dict[str, dict[str, Any]] = {
    "accounts": {"title": "Accounts per application", "view": "accounts", "sort_by": "application"},
    "expiring": {
        "title": "Grants expiring soon",
        "view": "grants",
        "sort_by": "expiresAt",
        "fixed": 'status eq "active"',
    },
    "dead": {"title": "Dead letters", "view": "outbox", "fixed": 'status eq "dead"'},
    "audit": {"title": "Audit trail", "view": "audit", "descending": True},
}


def admin_view(name: str) -> Callable[[Request], Awaitable[Response]]:
    spec = VIEW_PAGES[name]

    @handler(admin=True)
    async def endpoint(
        request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
    ) -> Response:
        typed = _filter(request)
        where = " and ".join(f"({w})" for w in (spec.get("fixed"), typed) if w)
        data = await services.db.run(
            functools.partial(
                pages.view_data,
                services,
                spec["view"],
                where,
                pages.page_number(request),
                config.page_size,
                sort_by=spec.get("sort_by"),
                descending=spec.get("descending", False),
            )
        )
        return page(request, s, f"admin_{name}.html", title=spec["title"], name=name, filter=typed, **data)

    endpoint.__name__ = f"admin_{name}"
    return endpoint


@handler(admin=True)
async def dead_retry(
    request: Request, services: Services, config: ConsoleConfig, s: session.Session | None
) -> Response:
    values = await pages.form(request, _session(s))
    if isinstance(values, Response):
        return values
    engine = services.engine
    rows = await engine.db.run(functools.partial(engine.deliverer.retry, ids=[request.path_params["id"]]))
    if not rows:
        raise JitError(409, "not_dead", "only dead events can be retried (this one is not dead, or is gone)")
    return pages.back(PREFIX + "/admin/dead", "retried")


def _route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str = "GET") -> Route:
    return Route(PREFIX + path, endpoint, methods=[method], include_in_schema=False)


async def _root(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/", 307)


_CSS = (importlib.resources.files("scimjit.http.console") / "templates" / "console.css").read_bytes()


async def _css(request: Request) -> Response:
    if request.app.state.services.settings.console is None:
        return HTMLResponse("Not Found", status_code=404)
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


routes: list[BaseRoute] = [
    Route(PREFIX, _root, methods=["GET"], include_in_schema=False),
    _route("/", home),
    Route(PREFIX + "/console.css", _css, methods=["GET"], include_in_schema=False),
    _route("/login", login),
    _route("/callback", callback),
    _route("/logout", logout, "POST"),
    _route("/request", request_form),
    _route("/requests", request_create, "POST"),
    _route("/requests/{id}/cancel", request_cancel, "POST"),
    _route("/approvals", approvals),
    _route("/requests/{id}/approve", decide("approve"), "POST"),
    _route("/requests/{id}/deny", decide("deny"), "POST"),
    _route("/admin/users", directory("User")),
    _route("/admin/groups", directory("Group")),
    *(_route(f"/admin/{name}", admin_view(name)) for name in VIEW_PAGES),
    _route("/admin/dead/{id:int}/retry", dead_retry, "POST"),
]
