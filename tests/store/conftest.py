"""Fixtures the store tests share: the shipped schemas plus `tests.seed.TEST_SCHEMA`, and the filter tests'
five users and four groups on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scimjit.scim.schema import Registry
from scimjit.store.db import Database
from tests.seed import types_registry


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return types_registry(tmp_path_factory.mktemp("schemas"))


@pytest.fixture
def seeded(db: Database, reg: Registry) -> Database:
    from tests.store.test_filter_sql import seed

    return seed(db, reg)


@pytest.fixture
def pg(db: Database) -> Iterator[Database]:
    """A second handle on the PostgreSQL test database with small pools (pool_size 2), for the pool tests."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's connection pools")
    handle = Database(db.test_url, pool_size=2)  # type: ignore[attr-defined]
    yield handle
    handle.dispose()


def terminate_backend(admin: Database, pid: int) -> None:
    """End PostgreSQL backend `pid`, as a server restart or a firewall would drop its connection."""
    with admin.engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()
