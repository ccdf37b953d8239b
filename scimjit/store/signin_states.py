"""Owner of `signin_states`: the server-side half of a browser sign-in (OIDC authorization code flow).

Why server-side: a state kept only in a signed cookie can be replayed (the same cookie and `state` finish any
number of sign-ins), and a PKCE verifier inside a cookie leaves the server. Here the browser carries only the
random `state`; the row holds the verifier, the nonce and whatever the flow needs to finish, and `take` deletes
it as it reads it, so exactly one callback can ever use a state — also across processes and racing requests.
Only sha256(state) is stored, so a database read does not hand out live states.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.store.tables import signin_states


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def put(conn: sa.Connection, state: str, purpose: str, payload: dict[str, Any], expires_at: datetime) -> None:
    """Remember a sign-in that was just started; `state` is the random value sent to the issuer."""
    conn.execute(
        signin_states.insert().values(
            state_hash=_hash(state), purpose=purpose, payload=payload, expires_at=to_micros(expires_at)
        )
    )


def take(conn: sa.Connection, state: str, purpose: str, now: datetime) -> dict[str, Any] | None:
    """The payload of a live state started for `purpose`, deleting it: a second call (or a racing one) gets None.

    An expired state is deleted and refused too. DELETE ... RETURNING makes the read and the delete one step
    on both SQLite and PostgreSQL, so two callbacks with one state cannot both succeed.
    """
    row = conn.execute(
        sa.delete(signin_states)
        .where(signin_states.c.state_hash == _hash(state), signin_states.c.purpose == purpose)
        .returning(signin_states.c.payload, signin_states.c.expires_at)
    ).first()
    if row is None or row.expires_at <= to_micros(now):
        return None
    payload: dict[str, Any] = row.payload
    return payload


def purge_expired(conn: sa.Connection, now: datetime, limit: int = 1000) -> int:
    """Delete up to `limit` states that can no longer be used (abandoned sign-ins); returns how many."""
    doomed = (
        sa.select(signin_states.c.state_hash).where(signin_states.c.expires_at <= to_micros(now)).limit(limit)
    )
    return conn.execute(sa.delete(signin_states).where(signin_states.c.state_hash.in_(doomed))).rowcount or 0
