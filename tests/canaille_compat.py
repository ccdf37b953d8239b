"""Lets Canaille 0.3.6's SCIM client import against the scim2-client this project installs.

What was found (December 2026): Canaille 0.3.6, the newest on PyPI and the one pytest-iam 0.3.0 runs, has a
SCIM client (`canaille/scim/client.py`) written for scim2-client 0.7.x: it imports `SCIMClientError` from
`scim2_client` and `SyncSCIMClient` from `scim2_client.engines.httpx`, and hands it an `httpx.Client`.
scim2-client renamed both in 0.8 (`SCIMClientException`; the engine is `engines.httpx2`, over the separate
`httpx2` package), and the dev tools need a recent one (scim2-cli 0.6 requires scim2-client >= 0.13.2,
scim2-tester 0.5 >= 0.11), so with `canaille[scim]` installed next to them `create_app` fails with
`ImportError: cannot import name 'SCIMClientError' from 'scim2_client'` as soon as ENABLE_CLIENT is on.

This module provides the two old names and nothing else: `SCIMClientError` is the new base exception, and
the old engine is the new one given an `httpx2.Client` with the same base URL and headers as the
`httpx.Client` Canaille built (its bearer token), and, as in 0.7, no automatic If-Match (see
`_set_if_match` below). Everything Canaille does with it (discovery, lookups by
externalId, POST, PUT, DELETE, over real HTTP) is Canaille's own code, unchanged. Delete this module when
Canaille's SCIM client follows scim2-client's new names.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def install() -> None:
    """Add the old names (idempotent; does nothing when scim2-client still has them)."""
    import scim2_client

    if hasattr(scim2_client, "SCIMClientError"):
        return
    import httpx2
    from scim2_client.engines import httpx2 as engine

    class SyncSCIMClient(engine.SyncSCIMClient):
        def __init__(self, client: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(
                httpx2.Client(base_url=str(client.base_url), headers=dict(client.headers)), *args, **kwargs
            )

        def _set_if_match(self, req: Any, resource: Any) -> None:
            """scim2-client 0.7 sent no If-Match. Newer ones send the resource's `meta.version`, and
            Canaille fills that with *its own* ETag of the user (canaille/scim/casting.py), so every PUT
            would be a conditional write on a version scimjit never issued: 412, correctly (RFC 7644
            §3.14). Kept as 0.7 did it, which is what Canaille's client was written for."""

    scim2_client.SCIMClientError = scim2_client.SCIMClientException  # type: ignore[attr-defined]
    module = types.ModuleType("scim2_client.engines.httpx")
    module.SyncSCIMClient = SyncSCIMClient  # type: ignore[attr-defined]
    sys.modules["scim2_client.engines.httpx"] = module
