"""Fixtures the store tests share: the shipped schemas plus `tests.seed.TEST_SCHEMA`, and the filter tests'
five users and four groups on it."""

from __future__ import annotations

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
