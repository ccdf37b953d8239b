"""Shared fixtures: a migrated database per backend (SQLite always; PostgreSQL when SCIMJIT_TEST_DATABASE_URL is
set), emptied between tests, and a frozen clock.

Storage tests take the `db` fixture and so run once per backend. PostgreSQL runs get a schema of their own
(`search_path`), so concurrent runs never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scimjit.clock import FrozenClock
from scimjit.scim.schema import Registry, load_registry
from scimjit.store.db import Database, normalise_url
from scimjit.store.migrate import upgrade
from scimjit.store.tables import metadata

PG_URL = os.environ.get("SCIMJIT_TEST_DATABASE_URL")
BACKENDS = ["sqlite", "postgresql"]


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{normalise_url(base)}{sep}options=-csearch_path%3D{schema}"


def make_database(backend: str, tmp: Path) -> tuple[Database, str]:
    """A freshly migrated database; returns it with its URL (for servers started in other processes)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp}/scimjit-test.db"
    else:
        if not PG_URL:
            pytest.skip("SCIMJIT_TEST_DATABASE_URL not set")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(normalise_url(PG_URL))
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        admin.dispose()
        url = _pg_schema_url(PG_URL, schema)
    db = Database(url)
    upgrade(db)
    return db, url


def drop_database(backend: str, db: Database, url: str) -> None:
    db.dispose()
    if backend == "postgresql" and PG_URL:
        schema = url.rsplit("%3D", 1)[1]
        admin = sa.create_engine(normalise_url(PG_URL))
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


def empty_database(db: Database) -> None:
    names = [t.name for t in reversed(metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if db.is_sqlite:
            for name in names:
                conn.exec_driver_sql(f'DELETE FROM "{name}"')
        else:
            conn.exec_driver_sql(
                "TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " RESTART IDENTITY CASCADE"
            )


@pytest.fixture(scope="session", params=BACKENDS)
def _session_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    db, url = make_database(request.param, tmp_path_factory.mktemp(request.param))
    db.test_url = url  # type: ignore[attr-defined]
    yield db
    drop_database(request.param, db, url)


@pytest.fixture
def db(_session_db: Database) -> Iterator[Database]:
    """A migrated, empty database; parametrised over SQLite and PostgreSQL."""
    empty_database(_session_db)
    yield _session_db


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


class Server:
    """A running scimjit on a real socket, its services, and an admin-authenticated client."""

    def __init__(self, url: str, services, clock: FrozenClock, admin_token: str) -> None:
        import httpx

        self.url = url
        self.scim = f"{url}/scim/v2"
        self.services = services
        self.clock = clock
        self.admin_token = admin_token
        self.client = httpx.Client(
            base_url=self.scim, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
        )

    def token(self, name: str, *scopes: str, app: str | None = None) -> str:
        return self.services.tokens.create(name, list(scopes), application=app)


@pytest.fixture
def server(db: Database, clock: FrozenClock) -> Iterator[Server]:
    from scimjit.config import Settings
    from scimjit.http.app import create_app
    from scimjit.services import Services
    from tests.live_server import serve

    settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0)
    services = Services.build(settings, db=db, clock=clock)
    app = create_app(services=services)
    admin = services.tokens.create("test-admin", ["admin"])
    with serve(app) as url:
        srv = Server(url, services, clock, admin)
        yield srv
        srv.client.close()


@pytest.fixture(scope="session")
def iam_configuration(iam_configuration: dict) -> dict:
    """pytest-iam's Canaille with its SCIM client on (`[CANAILLE_SCIM] ENABLE_CLIENT`): it pushes users and
    groups to the `client_uri` of each trusted or consented client that has one (tests/e2e/test_canaille_scim.py).
    A client whose `client_uri` is on 127.0.0.1 is trusted (every user is pushed to it, as an IdP pushes to an
    assigned app); clients without a `client_uri` are never pushed to, so the other Canaille tests see no
    difference."""
    from tests import canaille_compat

    canaille_compat.install()  # Canaille 0.3.6's SCIM client and today's scim2-client: see that module
    oidc = {**iam_configuration["CANAILLE_OIDC"], "TRUSTED_DOMAINS": ["127.0.0.1"]}
    return {**iam_configuration, "CANAILLE_OIDC": oidc, "CANAILLE_SCIM": {"ENABLE_CLIENT": True}}
