"""Rows for storage tests, written the way the write path spreads documents (`store.promoted`), without going
through the resource layer: tests of filters, sorting and paging need many rows and exact timestamps."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.scim.schema import EXTENDS_KEY, JIT_GROUP_URN, Registry, load_registry
from scimjit.store.promoted import group_columns, user_columns, user_value_rows
from scimjit.store.tables import groups, memberships, user_values, users

CREATED = datetime(2024, 1, 1, tzinfo=UTC)


def insert_user(
    conn: sa.Connection,
    registry: Registry,
    doc: Mapping[str, Any],
    *,
    created: datetime = CREATED,
    modified: datetime | None = None,
    version: int = 1,
    user_id: str | None = None,
) -> Any:
    """Insert a User document with its promoted columns and `user_values` rows; returns the row (pk, id)."""
    rt = registry.resource_type("User")
    row = conn.execute(
        users.insert()
        .values(
            id=user_id or str(uuid.uuid4()),
            data=dict(doc),
            version=version,
            created=to_micros(created),
            last_modified=to_micros(modified or created),
            **user_columns(doc),
        )
        .returning(users.c.pk, users.c.id)
    ).one()
    values = user_value_rows(registry, rt, doc)
    if values:
        conn.execute(user_values.insert(), [{"user_pk": row.pk, **v} for v in values])
    return row


def insert_group(
    conn: sa.Connection,
    doc: Mapping[str, Any],
    *,
    created: datetime = CREATED,
    version: int = 1,
    group_id: str | None = None,
) -> Any:
    """Insert a Group document (members go in with `add_member`); returns the row (pk, id)."""
    return conn.execute(
        groups.insert()
        .values(
            id=group_id or str(uuid.uuid4()),
            data=dict(doc),
            version=version,
            created=to_micros(created),
            last_modified=to_micros(created),
            **group_columns(doc, JIT_GROUP_URN),
        )
        .returning(groups.c.pk, groups.c.id)
    ).one()


def add_member(
    conn: sa.Connection,
    group_pk: int,
    member_id: str,
    *,
    member_type: str = "User",
    source: str = "scim",
    expires: datetime | None = None,
    added: datetime = CREATED,
) -> None:
    conn.execute(
        memberships.insert().values(
            group_pk=group_pk,
            member_id=member_id,
            member_type=member_type,
            source=source,
            added_at=to_micros(added),
            expires_at=to_micros(expires) if expires else None,
        )
    )


TEST_URN = "urn:scimjit:test:params:scim:schemas:extension:types:2.0:User"
TEST_SCHEMA: dict[str, Any] = {
    "id": TEST_URN,
    "name": "TestTypes",
    "description": "One attribute of every SCIM type, for filter and sort tests",
    EXTENDS_KEY: ["User"],
    "attributes": [
        {"name": "level", "type": "integer"},
        {"name": "score", "type": "decimal"},
        {"name": "hired", "type": "dateTime"},
        {"name": "vip", "type": "boolean"},
        {"name": "badge", "type": "binary", "caseExact": True},
        {"name": "nick", "type": "string", "caseExact": True},
        {"name": "tags", "type": "string", "multiValued": True},
        {"name": "pet", "type": "complex", "subAttributes": [{"name": "name", "type": "string"}]},
        {
            "name": "devices",
            "type": "complex",
            "multiValued": True,
            "subAttributes": [
                {"name": "value", "type": "string"},
                {"name": "type", "type": "string"},
                {"name": "serial", "type": "string", "caseExact": True},
                {"name": "primary", "type": "boolean"},
            ],
        },
    ],
}


def types_registry(directory: Path) -> Registry:
    """The shipped schemas plus `TEST_SCHEMA` extending User (written into `directory`)."""
    (directory / "test-types.json").write_bytes(orjson.dumps(TEST_SCHEMA))
    return load_registry([directory])
