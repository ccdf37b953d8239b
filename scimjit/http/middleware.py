"""Request id, request log line and HTTP metrics, as one pure ASGI middleware.

Pure ASGI rather than Starlette's `BaseHTTPMiddleware`: that one runs the endpoint in a separate task and
streams the body through memory channels, which costs more than a whole `GET /Users/{id}`. Here the cost is a
clock read, a header appended to the response start, two metric updates and one log line (written by
`logs.info_fields`, straight to the JSON handler's stream when nothing else would see it).

- **Request id**: a sane incoming `X-Request-Id` (a proxy's or the client's) is kept, otherwise one is made;
  it is returned as `X-Request-Id`, put in `scope["state"]["request_id"]` (so `request.state.request_id` in
  handlers, and the audit trail records it) and on the log line. It is a `store.audit.RequestId`, which
  remembers who chose it: the audit trail marks a client-chosen one (`details.requestIdFrom`).
- **Log**: one JSON line per request on the `scimjit.access` logger: method, path (never the query string,
  which may hold filter values), route template, status, duration, request id, token name and client address.
  Never a header value or a body.
- **Metrics**: `scimjit_http_requests_total{method,route,status}` and
  `scimjit_http_request_duration_seconds{method,route}`. The route label is the template
  (`/scim/v2/Users/{id}`), never the raw path, so the number of series stays bounded; requests that match no
  route count as `unmatched`.
- **Unhandled errors** become a SCIM 500 here (logged with the request id and trace), so even that response
  carries `X-Request-Id`.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scimjit.logs import info_fields
from scimjit.metrics import HTTP_DURATION, HTTP_REQUESTS
from scimjit.redact import mask
from scimjit.store.audit import RequestId

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,64}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ERROR_BODY = orjson.dumps(
    {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "500",
        "detail": "Internal server error",
    }
)

access_log = logging.getLogger("scimjit.access")
error_log = logging.getLogger("scimjit.http")


def request_id_from(scope: Scope) -> RequestId:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return RequestId(value.decode("ascii"), "client") if _SANE_ID.fullmatch(value) else _new_id()
    return _new_id()


# Request ids must be unique, not secret: 96 bits from a generator seeded from the OS once per process
# (and again in a forked child, which would otherwise repeat its parent's ids) cost a tenth of a getrandom
# system call per request.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def _new_id() -> RequestId:
    return RequestId(f"{_ids.getrandbits(96):024x}", "server")


def route_template(scope: Scope, root_path: str) -> str:
    """The matched route's path template, with the prefixes of the mounts it sits in."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    return f"{scope.get('root_path', '')[len(root_path) :]}{path}"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, request_log: bool = True) -> None:
        self.app = app
        self.request_log = request_log
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        root_path = scope.get("root_path", "")
        request_id = request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_log.exception(
                "unhandled error on %s %s", scope["method"], scope["path"], extra={"request_id": request_id}
            )
            if started:
                raise
            status = 500
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/scim+json"),
                        (b"content-length", str(len(_ERROR_BODY)).encode()),
                        header,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _ERROR_BODY})
        finally:
            elapsed = time.perf_counter() - start
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = route_template(scope, root_path)
            self._observe(method, route, status, elapsed)
            if self.request_log:
                principal = state.get("principal")
                client = scope.get("client")
                name = getattr(principal, "name", None)
                info_fields(  # masked here, what a client or a proxy header could put in: the rest is ours
                    access_log,
                    "request",
                    {
                        "request_id": mask(request_id) if request_id.chosen_by == "client" else request_id,
                        "method": method,
                        "path": mask(scope["path"]),
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "token": mask(name) if name is not None else None,
                        "client": mask(client[0]) if client and client[0] is not None else None,
                    },
                    clean=False,
                )

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        """Update the two HTTP metrics; the labelled children are cached (labels() validates each call)."""
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = (
                HTTP_REQUESTS.labels(method=method, route=route, status=str(status)),
                HTTP_DURATION.labels(method=method, route=route),
            )
            if len(self._series) < 10_000:
                self._series[key] = series
        series[0].inc()
        series[1].observe(elapsed)
