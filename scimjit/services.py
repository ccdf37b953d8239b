"""The composition root: the one place that builds the process-wide objects, in dependency order, and the
typed object (`Services`) the HTTP layer, the CLI and the tests are handed.

    Settings
      → Database, clock, schema registry, token store          (always; what SCIM alone needs)
      → JIT engine: applications, connectors, OIDC verifier,
        outbox deliverer, login service                        (`services.engine`)
      → Deprovisioner: the SCIM writes' change listener        (`services.deprovisioner`, `services.listener`)
      → Access: grants, requests, sweeper, reconciler          (`services.access`)
      → background tasks: outbox worker, sweeper               (`services.background`)

`compose(settings)` is what `scimjit serve` runs (through `scimjit.http.app.app_from_env`): it builds every
step now, so a bad `[[applications]]` or `[jit]` table stops the start instead of failing the first login, and
SCIM writes deprovision. `Services.build(settings)` gives the same object with the JIT steps built on first
use: the CLI commands that only read SCIM data never build connectors, and a test can start a SCIM-only app.
Each step is built at most once per `Services` (a `cached_property`); nothing is swapped in afterwards.
`compose` builds them before the app serves a request, so no two requests race to build the first engine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from scimjit.access.service import Access, deprovisioner_for
from scimjit.access.sweeper import background_task as sweeper_task
from scimjit.clock import Clock, SystemClock
from scimjit.config import Settings
from scimjit.delivery.connectors.base import Connector
from scimjit.delivery.worker import background_task as worker_task
from scimjit.engine import JitEngine
from scimjit.provisioning.deprovision import Deprovisioner
from scimjit.provisioning.oidc import JsonFetcher
from scimjit.scim.schema import Registry, load_registry
from scimjit.store.db import Database
from scimjit.store.events import ChangeListener, NoListener
from scimjit.store.tokens import TokenStore

BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class EngineParts:
    """Replacements for the engine's outside world, for tests: connectors, the OIDC fetcher, the retry jitter."""

    connectors: Mapping[str, Connector] | None = None
    fetcher: JsonFetcher | None = None
    rng: random.Random | None = None


@dataclass(frozen=True, eq=False)
class Services:
    settings: Settings
    db: Database
    registry: Registry
    clock: Clock
    tokens: TokenStore
    # Whether SCIM writes run the deprovisioning listener. `compose` turns it on; off, writes only store.
    deprovision: bool = False
    parts: EngineParts = field(default_factory=EngineParts)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        db: Database | None = None,
        clock: Clock | None = None,
        deprovision: bool = False,
        parts: EngineParts | None = None,
    ) -> Services:
        """The SCIM core now, the JIT steps on first use (see the module docstring)."""
        clock = clock or SystemClock()
        db = db or Database(settings.database_url, statement_timeout=settings.statement_timeout)
        registry = load_registry(settings.schemas_dirs)
        tokens = TokenStore(db, clock, cache_seconds=settings.token_cache_seconds)
        return cls(
            settings=settings,
            db=db,
            registry=registry,
            clock=clock,
            tokens=tokens,
            deprovision=deprovision,
            parts=parts or EngineParts(),
        )

    @cached_property
    def engine(self) -> JitEngine:
        """Raises ConfigError if `[jit]` or `[[applications]]` is wrong."""
        p = self.parts
        return JitEngine(
            self.settings, self.db, self.clock, connectors=p.connectors, fetcher=p.fetcher, rng=p.rng
        )

    @cached_property
    def deprovisioner(self) -> Deprovisioner:
        """Raises ConfigError if the `[jit]` access settings or policies are wrong."""
        return deprovisioner_for(self.engine)

    @cached_property
    def access(self) -> Access:
        return Access(self.engine, self.deprovisioner)

    @cached_property
    def listener(self) -> ChangeListener:
        """What every SCIM write calls inside its transaction (scimjit.store.events)."""
        return self.deprovisioner if self.deprovision else NoListener()

    @cached_property
    def background(self) -> tuple[BackgroundTask, ...]:
        """For `create_app(background=...)`: the in-process outbox worker (unless `run_worker` is off, when
        `scimjit worker` processes deliver) and sweeper (unless `run_sweeper` is off)."""
        tasks: list[BackgroundTask] = []
        if self.settings.run_worker:
            tasks.append(worker_task(self.engine))
        if self.settings.run_sweeper:
            tasks.append(sweeper_task(self.access.sweeper, self.settings.sweep_interval))
        return tuple(tasks)


def compose(
    settings: Settings,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    parts: EngineParts | None = None,
) -> Services:
    """Everything `scimjit serve` runs, built now in dependency order; raises ConfigError on a bad config."""
    services = Services.build(settings, db=db, clock=clock, deprovision=True, parts=parts)
    _ = services.engine, services.deprovisioner, services.access, services.listener, services.background
    return services
