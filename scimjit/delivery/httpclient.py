"""One pooled `httpx.AsyncClient` per event loop, for discovery/JWKS fetches and connector calls.

An AsyncClient's connections belong to the loop that opened them. `scimjit serve` has one loop for its life,
but the CLI worker and tests may run several loops in turn; handing out a client per running loop keeps
pooling where it helps and avoids "attached to a different loop" failures where loops change.
"""

from __future__ import annotations

import asyncio
import importlib.util
import select
import ssl
import sys
from typing import Any

import httpcore
import httpx

# httpcore asks `import sniffio` on every request to tell asyncio from trio, and a failed import is not cached:
# without sniffio installed that is a filesystem search of sys.path, ~1 ms of CPU per connector call. A None
# entry in sys.modules makes the import fail at once (documented import-system behaviour); httpcore then
# assumes asyncio, which is what we run. Only done when sniffio is really absent.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's AnyIO stream, with the one probe its pool makes of every idle connection on every request
    made cheap.

    Before each request and after each response, httpcore's pool asks each of its idle connections whether
    the server has closed it (`get_extra_info("is_readable")`). The AnyIO stream answers by building AnyIO's
    whole attribute table for the socket (a `getpeername` call and a dozen entries) before polling it. With
    the worker's 64 deliveries at once to one receiver, that was 53% of the event loop's time in a mass
    expiry (`make bench` X3, issue 13). The socket is the same for the connection's life: it is looked up
    once, and the probe is the poll alone, as httpcore's own."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._stream.get_extra_info(info)


def _readable(sock: Any) -> bool:
    """Whether a read would not block: data, or the end of the stream (how httpcore probes an idle socket)."""
    fd = sock.fileno() if sock is not None else -1
    if fd == -1:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Backend(httpcore.AsyncNetworkBackend):
    """httpcore's AnyIO backend, its streams wrapped in `_Stream`."""

    def __init__(self) -> None:
        self._anyio = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._anyio.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._anyio.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)
        return _Stream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._anyio.sleep(seconds)


def transport() -> httpx.AsyncHTTPTransport:
    """httpx's transport with `_Backend` under its connection pool. httpx takes no network backend, so it is
    set on the pool it made (`AsyncConnectionPool(network_backend=…)` is httpcore's public parameter; the
    attribute it is kept in is checked by tests/delivery/test_httpclient.py)."""
    made = httpx.AsyncHTTPTransport()
    pool = made._pool
    if type(pool) is httpcore.AsyncConnectionPool and hasattr(pool, "_network_backend"):
        pool._network_backend = _Backend()
    return made


class LoopClient:
    def __init__(self, timeout: float, **kwargs: Any) -> None:
        self._timeout = timeout
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            # The old client's loop is gone or another loop owns it: drop it, its sockets die with that loop.
            self._client = httpx.AsyncClient(
                timeout=self._timeout, follow_redirects=False, transport=transport(), **self._kwargs
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()
