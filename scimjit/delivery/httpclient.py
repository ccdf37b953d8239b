"""One pooled `httpx.AsyncClient` per event loop, for discovery/JWKS fetches and connector calls.

An AsyncClient's connections belong to the loop that opened them. `scimjit serve` has one loop for its life,
but the CLI worker and tests may run several loops in turn; handing out a client per running loop keeps
pooling where it helps and avoids "attached to a different loop" failures where loops change.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from typing import Any

import httpx

# httpcore asks `import sniffio` on every request to tell asyncio from trio, and a failed import is not cached:
# without sniffio installed that is a filesystem search of sys.path, ~1 ms of CPU per connector call. A None
# entry in sys.modules makes the import fail at once (documented import-system behaviour); httpcore then
# assumes asyncio, which is what we run. Only done when sniffio is really absent.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


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
