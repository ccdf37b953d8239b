"""The client's address, the one answer every route uses: the per-address rate limit, the sign-in flow's
login conditions and the console's.

It is the socket peer as uvicorn reports it. Behind trusted proxies uvicorn has already replaced it with the
client named by their `X-Forwarded-For` (`scimjit serve --forwarded-allow-ips`, or `$FORWARDED_ALLOW_IPS`;
default `127.0.0.1,::1`), so this function never reads a forwarding header itself: a header from anybody
else is ignored, and a client cannot choose its own address (docs/operations.md, "Behind a proxy").
"""

from __future__ import annotations

from starlette.requests import Request


def client_address(request: Request) -> str:
    """The client's IP address (after uvicorn's trusted-proxy rewrite), or `"unknown"` without a peer."""
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"
