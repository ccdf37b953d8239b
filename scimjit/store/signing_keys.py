"""Owner of `signing_keys`: scimjit's own asymmetric keys, which sign what scimjit hands to others (the result of
a browser sign-in today, Shared Signals SETs later) and whose public halves are published as a JWKS.

Keys are made elsewhere (`delivery/signing.py`); this module only stores them. Each key has a `generation`
(unique): the first key is generation 1, a rotation inserts the next one. Inserting with ON CONFLICT DO NOTHING
makes "create the first key" and "rotate" race-safe across processes: of two racing inserts for one
generation one wins, the other finds the winner's row, and every process signs with the newest active key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from scimjit.clock import to_micros
from scimjit.store.tables import signing_keys


@dataclass(frozen=True, slots=True)
class StoredKey:
    kid: str
    generation: int
    algorithm: str
    private_pem: str
    public_jwk: dict[str, Any]
    created_at: int
    retired_at: int | None  # when it stops (or stopped) signing; None: it has not been rotated out


def _stored(row: Any) -> StoredKey:
    return StoredKey(
        row.kid,
        row.generation,
        row.algorithm,
        row.private_pem,
        dict(row.public_jwk),
        row.created_at,
        row.retired_at,
    )


def signing(conn: sa.Connection, now: datetime, lead: float) -> StoredKey | None:
    """The key that signs at `now`: the newest one not retired that has been published for `lead` seconds
    (so every verifier's cached JWKS has it); when none has, the live key published longest (the very first
    key, or a key retiring after a rotation that had itself been made less than `lead` ago)."""
    now_us = to_micros(now)
    live = sa.select(signing_keys).where(
        sa.or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > now_us)
    )
    published_long = live.where(signing_keys.c.created_at <= now_us - int(lead * 1_000_000))
    row = conn.execute(published_long.order_by(signing_keys.c.generation.desc()).limit(1)).first()
    if row is None:
        row = conn.execute(live.order_by(signing_keys.c.generation).limit(1)).first()
    return _stored(row) if row is not None else None


def insert(conn: sa.Connection, key: StoredKey) -> bool:
    """Insert `key` unless its generation exists (another process won the race); True if this one went in."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    inserted = conn.execute(
        dialect_insert(signing_keys)
        .values(
            kid=key.kid,
            generation=key.generation,
            algorithm=key.algorithm,
            private_pem=key.private_pem,
            public_jwk=key.public_jwk,
            created_at=key.created_at,
            retired_at=None,
        )
        .on_conflict_do_nothing()
        .returning(signing_keys.c.kid)
    ).first()
    return inserted is not None


def next_generation(conn: sa.Connection) -> int:
    return (
        int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(signing_keys.c.generation), 0))).scalar_one())
        + 1
    )


def retire_older(conn: sa.Connection, generation: int, at: datetime) -> int:
    """Retire every key older than `generation` at `at` (after a rotation: when the new key takes over), or
    earlier if it was retiring later already (an immediate rotation overtakes a pending one); returns how
    many."""
    return (
        conn.execute(
            sa.update(signing_keys)
            .where(
                signing_keys.c.generation < generation,
                sa.or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > to_micros(at)),
            )
            .values(retired_at=to_micros(at))
        ).rowcount
        or 0
    )


def published(conn: sa.Connection, retired_since: datetime) -> list[StoredKey]:
    """Keys to publish: every active key, and those retired after `retired_since` (what they signed may still
    be verified), newest first."""
    rows = conn.execute(
        sa.select(signing_keys)
        .where(
            sa.or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > to_micros(retired_since))
        )
        .order_by(signing_keys.c.generation.desc())
    )
    return [_stored(r) for r in rows]


def every(conn: sa.Connection) -> list[StoredKey]:
    """Every key, newest first (for `scimjit keys list`)."""
    return [
        _stored(r) for r in conn.execute(sa.select(signing_keys).order_by(signing_keys.c.generation.desc()))
    ]
