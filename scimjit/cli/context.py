"""What a command builds before it runs: the services, the JIT engine, time-bound access, or just the database.

One place, so every command reads the same configuration (`Settings.load()`: the file named by SCIMJIT_CONFIG
and the SCIMJIT_* variables) the same way. The imports are lazy: `scimjit --help` and a mistyped command must
answer at once, without loading SQLAlchemy, the connectors or the HTTP stack.
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING

from scimjit.config import Settings

if TYPE_CHECKING:
    from scimjit.access.service import Access
    from scimjit.engine import JitEngine
    from scimjit.services import Services
    from scimjit.store.db import Database


def services() -> Services:
    """Stores, registry and listener, as the HTTP app has them (tokens, users/groups queries)."""
    from scimjit.services import Services

    return Services.build(Settings.load())


def database(settings: Settings | None = None) -> Database:
    from scimjit.store.db import Database

    settings = settings or Settings.load()
    return Database(settings.database_url, statement_timeout=settings.statement_timeout)


def engine() -> JitEngine:
    """The JIT engine (applications, connectors, outbox) for worker, reconcile and the access commands,
    built by the composition root (scimjit.services) like the server's."""
    return services().engine


def access() -> Access:
    """Time-bound access (grants, requests, sweeper) on top of the engine, with the one deprovisioner."""
    return services().access


def login_name() -> str | None:
    """The operator's login name for the audit trail's `cli:<name>` actor; None where there is none
    (some containers run as a uid without a passwd entry)."""
    try:
        return getpass.getuser()
    except Exception:
        return None
