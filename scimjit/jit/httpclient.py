"""One pooled `httpx.AsyncClient` per event loop, for discovery/JWKS fetches and connector calls.

An AsyncClient's connections belong to the loop that opened them. `scimjit serve` has one loop for its life,
but the CLI worker and tests may run several loops in turn; handing out a client per running loop keeps
pooling where it helps and avoids "attached to a different loop" failures where loops change.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


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
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, **self._kwargs)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()
