"""Owner of `used_once`: a replay cache for values that may be accepted once (an ID token's `jti`, a SAML
assertion id, the `jti` of a signed sign-in result), and the list of console sessions signed out before their
end (their random id, purpose "console_session": `is_claimed` is what refuses a copied cookie after sign-out).

`claim` inserts the value's hash; the primary key makes a second claim fail, so a replay is refused even when
the two requests race on different processes. A row is kept until `expires_at`, the moment the value would be
refused anyway (its token's `exp` plus the allowed clock skew), so the table holds only what can still be
replayed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from scimjit.clock import to_micros
from scimjit.store.tables import used_once


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def claim(conn: sa.Connection, purpose: str, value: str, expires_at: datetime, now: datetime) -> bool:
    """True the first time `value` is claimed for `purpose` (until `expires_at`), False for any replay.

    Runs inside the caller's write transaction, so the claim commits with the action it guards (or not at
    all). An expired row for the same value is replaced: the value has been refusable on other grounds since.
    """
    key = _hash(value)
    conn.execute(
        sa.delete(used_once).where(
            used_once.c.purpose == purpose,
            used_once.c.value_hash == key,
            used_once.c.expires_at <= to_micros(now),
        )
    )
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    inserted = conn.execute(
        insert(used_once)
        .values(purpose=purpose, value_hash=key, expires_at=to_micros(expires_at))
        .on_conflict_do_nothing()
        .returning(used_once.c.value_hash)  # rowcount is not reliable here on every driver; RETURNING is
    ).first()
    return inserted is not None


def is_claimed(conn: sa.Connection, purpose: str, value: str, now: datetime) -> bool:
    """Whether `value` is claimed for `purpose` and the claim still holds: one primary-key lookup."""
    found = conn.execute(
        sa.select(used_once.c.expires_at).where(
            used_once.c.purpose == purpose,
            used_once.c.value_hash == _hash(value),
            used_once.c.expires_at > to_micros(now),
        )
    ).first()
    return found is not None


def purge_expired(conn: sa.Connection, now: datetime, limit: int = 1000) -> int:
    """Delete up to `limit` rows whose values can no longer be replayed; returns how many."""
    doomed = (
        sa.select(used_once.c.purpose, used_once.c.value_hash)
        .where(used_once.c.expires_at <= to_micros(now))
        .limit(limit)
    )
    return (
        conn.execute(
            sa.delete(used_once).where(sa.tuple_(used_once.c.purpose, used_once.c.value_hash).in_(doomed))
        ).rowcount
        or 0
    )
