"""The process-wide objects every request needs, built once at start and handed around explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scimjit.clock import Clock, SystemClock
from scimjit.config import Settings
from scimjit.scim.schema import Registry, load_registry
from scimjit.store.db import Database
from scimjit.store.events import ChangeListener, NoListener
from scimjit.store.tokens import TokenStore


@dataclass
class Services:
    settings: Settings
    db: Database
    registry: Registry
    clock: Clock
    tokens: TokenStore
    listener: ChangeListener = field(default_factory=NoListener)
    jit: Any = None  # the JIT engine (scimjit.jit), attached when applications are configured

    @classmethod
    def build(cls, settings: Settings, *, db: Database | None = None, clock: Clock | None = None) -> Services:
        clock = clock or SystemClock()
        db = db or Database(settings.database_url)
        registry = load_registry(settings.schemas_dirs)
        tokens = TokenStore(db, clock, cache_seconds=settings.token_cache_seconds)
        return cls(settings=settings, db=db, registry=registry, clock=clock, tokens=tokens)
