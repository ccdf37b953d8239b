"""user_name_ci holds the PRECIS key of the userName (RFC 8265), no longer str.lower

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 01:10:00

No schema change: the rows written before this revision hold `userName.lower()` in `users.user_name_ci`, and
uniqueness, `userName eq` and the login match now look up `scim.identifiers.identifier_key(userName)`. This
recomputes the column in batches of primary keys. A row whose userName PRECIS refuses (U+212A KELVIN SIGN),
or whose key another user already holds ("kate" and fullwidth "kate"), keeps its old value and is logged by
id, for an operator to rename: nothing is deleted, and the migration does not fail on it. Such a user cannot
be found by `userName eq` until renamed, and a PUT keeping the name is refused with 400 invalidValue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from scimjit.scim.identifiers import DisallowedIdentifier, identifier_key

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 1000
log = logging.getLogger("scimjit.migrate")

_users = sa.table(
    "users",
    sa.column("pk", sa.Integer),
    sa.column("id", sa.String),
    sa.column("user_name", sa.String),
    sa.column("user_name_ci", sa.String),
)


def recompute(conn: sa.Connection, key: Callable[[str], str]) -> list[tuple[str, str]]:
    """Set `user_name_ci = key(user_name)` on every row it changes; (id, why) of each row left as it was."""
    kept: list[tuple[str, str]] = []
    after = -1
    while True:
        rows = conn.execute(
            sa.select(_users.c.pk, _users.c.id, _users.c.user_name, _users.c.user_name_ci)
            .where(_users.c.pk > after)
            .order_by(_users.c.pk)
            .limit(BATCH)
        ).all()
        if not rows:
            return kept
        after = rows[-1].pk
        for row in rows:
            try:
                new = key(row.user_name)
            except DisallowedIdentifier as exc:
                kept.append((row.id, exc.detail))
                continue
            if new == row.user_name_ci:
                continue
            taken = conn.execute(
                sa.select(_users.c.id).where(_users.c.user_name_ci == new, _users.c.pk != row.pk)
            ).first()
            if taken is not None:
                kept.append((row.id, f"its userName has the key {new!r} of user {taken.id}"))
                continue
            conn.execute(_users.update().where(_users.c.pk == row.pk).values(user_name_ci=new))


def upgrade() -> None:
    for user_id, why in recompute(op.get_bind(), identifier_key):
        log.warning("user %s keeps its old user_name_ci: %s; rename it", user_id, why)


def downgrade() -> None:
    for user_id, why in recompute(op.get_bind(), str.lower):
        log.warning("user %s keeps its user_name_ci: %s", user_id, why)
