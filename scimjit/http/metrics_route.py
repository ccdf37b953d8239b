"""GET /metrics in the Prometheus text format.

Behind a token with the `metrics` (or `admin`) scope by default: the series name the configured applications
and show their traffic, logins and failures, which is reconnaissance for anyone who can reach the port.
`metrics_token_required = false` opens it for a scraper on a network that is already closed; see
docs/configuration.md.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from scimjit.clock import to_micros
from scimjit.config import Settings
from scimjit.http.apidoc import doc, errors, resp
from scimjit.http.auth import require
from scimjit.http.context import services
from scimjit.metrics import OutboxCollector, exposition


def _responses(settings: Settings) -> dict[str, object]:
    return {
        "200": resp("Prometheus text format", {"type": "string"}, "text/plain"),
        **(errors(401, 403, 429) if settings.metrics_token_required else {}),
    }


def _secure(settings: Settings) -> bool:
    return settings.metrics_token_required


@doc("Prometheus metrics", "Operations", _responses, secure=_secure)
async def metrics(request: Request) -> Response:
    svc = services(request)
    if svc.settings.metrics_token_required:
        require(request, "metrics")
    collector = OutboxCollector(svc.db, lambda: to_micros(svc.clock.now()))
    body = await svc.db.run(exposition, [collector])
    return Response(body, media_type=CONTENT_TYPE_LATEST)
