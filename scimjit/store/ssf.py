"""Owner of the Shared Signals tables: `ssf_streams` (a receiver's stream), `ssf_subjects` (the subjects it
asked for) and `ssf_poll` (SETs waiting for a poll receiver). SQL only: what a SET says and when one is due is
delivery/signals.py's business.

A stream belongs to the token that created it (`owner`, the token's name): every read and write here takes the
owner, so one receiver can neither see nor touch another's stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scimjit.store.tables import ssf_poll, ssf_streams, ssf_subjects

PUSH = "push"
POLL = "poll"
ENABLED, PAUSED, DISABLED = "enabled", "paused", "disabled"
STATUSES = (ENABLED, PAUSED, DISABLED)


@dataclass(frozen=True, slots=True)
class Stream:
    id: str
    owner: str
    method: str
    endpoint_url: str | None
    authorization_header: str | None
    events_requested: list[str]
    aud: str
    description: str | None
    status: str
    reason: str | None
    created_at: int
    updated_at: int


def _stream(row: Any) -> Stream:
    return Stream(
        row.id,
        row.owner,
        row.method,
        row.endpoint_url,
        row.authorization_header,
        list(row.events_requested or ()),
        row.aud,
        row.description,
        row.status,
        row.reason,
        row.created_at,
        row.updated_at,
    )


def insert(conn: sa.Connection, stream: Stream) -> None:
    conn.execute(ssf_streams.insert().values(**{f: getattr(stream, f) for f in Stream.__slots__}))


def get(conn: sa.Connection, stream_id: str, owner: str | None = None) -> Stream | None:
    """The stream, if it exists (and, given `owner`, belongs to it)."""
    stmt = sa.select(ssf_streams).where(ssf_streams.c.id == stream_id)
    if owner is not None:
        stmt = stmt.where(ssf_streams.c.owner == owner)
    row = conn.execute(stmt).first()
    return _stream(row) if row is not None else None


def of_owner(conn: sa.Connection, owner: str) -> list[Stream]:
    stmt = sa.select(ssf_streams).where(ssf_streams.c.owner == owner).order_by(ssf_streams.c.created_at)
    return [_stream(r) for r in conn.execute(stmt)]


def live(conn: sa.Connection) -> list[Stream]:
    """Streams that take new events: enabled, and paused ones (SSF: a paused stream holds its events)."""
    stmt = sa.select(ssf_streams).where(ssf_streams.c.status != DISABLED).order_by(ssf_streams.c.id)
    return [_stream(r) for r in conn.execute(stmt)]


def update(conn: sa.Connection, stream_id: str, owner: str, values: Mapping[str, Any]) -> bool:
    result = conn.execute(
        ssf_streams.update()
        .where(ssf_streams.c.id == stream_id, ssf_streams.c.owner == owner)
        .values(**dict(values))
    )
    return result.rowcount == 1


def delete(conn: sa.Connection, stream_id: str, owner: str) -> bool:
    """The stream, its subjects and its waiting SETs (pending pushes find no stream and are dropped)."""
    gone = conn.execute(
        ssf_streams.delete().where(ssf_streams.c.id == stream_id, ssf_streams.c.owner == owner)
    )
    if gone.rowcount != 1:
        return False
    conn.execute(ssf_subjects.delete().where(ssf_subjects.c.stream_id == stream_id))
    clear_queue(conn, stream_id)
    return True


# ------------------------------------------------------------------------------------------- subjects


def add_subject(
    conn: sa.Connection, stream_id: str, key: str, subject: Mapping[str, Any], now_us: int
) -> None:
    """Idempotent: adding a subject twice keeps one row."""
    exists = conn.execute(
        sa.select(sa.literal(1)).where(
            ssf_subjects.c.stream_id == stream_id, ssf_subjects.c.subject_key == key
        )
    ).first()
    if exists is None:
        conn.execute(
            ssf_subjects.insert().values(
                stream_id=stream_id, subject_key=key, subject=dict(subject), created_at=now_us
            )
        )


def remove_subject(conn: sa.Connection, stream_id: str, key: str) -> bool:
    result = conn.execute(
        ssf_subjects.delete().where(ssf_subjects.c.stream_id == stream_id, ssf_subjects.c.subject_key == key)
    )
    return result.rowcount > 0


def subjects_by_key(
    conn: sa.Connection, stream_ids: Sequence[str], keys: Sequence[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """(stream id, subject key) -> the subject identifier as the stream added it, for the streams of
    `stream_ids` that asked for one of `keys` and are not disabled (a query per 500 keys)."""
    if not stream_ids or not keys:
        return {}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(keys), 500):
        stmt = (
            sa.select(ssf_subjects.c.stream_id, ssf_subjects.c.subject_key, ssf_subjects.c.subject)
            .select_from(ssf_subjects.join(ssf_streams, ssf_streams.c.id == ssf_subjects.c.stream_id))
            .where(
                ssf_subjects.c.stream_id.in_(list(stream_ids)),
                ssf_subjects.c.subject_key.in_(list(keys[start : start + 500])),
                ssf_streams.c.status != DISABLED,  # fresh, whatever the caller's cached list says
            )
        )
        out.update(((sid, key), dict(subject)) for sid, key, subject in conn.execute(stmt))
    return out


# ------------------------------------------------------------------------------------------- poll queue


def queue_many(conn: sa.Connection, items: Sequence[tuple[str, Mapping[str, Any]]], now_us: int) -> None:
    """(stream id, SET claims) pairs waiting for their poll receiver, in the caller's transaction."""
    if items:
        conn.execute(
            ssf_poll.insert(),
            [
                {"stream_id": sid, "jti": claims["jti"], "claims": dict(claims), "created_at": now_us}
                for sid, claims in items
            ],
        )


def clear_queue(conn: sa.Connection, stream_id: str) -> None:
    """Drop a stream's waiting SETs (it was disabled)."""
    conn.execute(ssf_poll.delete().where(ssf_poll.c.stream_id == stream_id))


def acknowledge(conn: sa.Connection, stream_id: str, jtis: Sequence[str]) -> int:
    if not jtis:
        return 0
    result = conn.execute(
        ssf_poll.delete().where(ssf_poll.c.stream_id == stream_id, ssf_poll.c.jti.in_(list(jtis)))
    )
    return int(result.rowcount)


def waiting(conn: sa.Connection, stream_id: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` unacknowledged SETs' claims, oldest first (the same ones again until acknowledged)."""
    stmt = (
        sa.select(ssf_poll.c.claims)
        .where(ssf_poll.c.stream_id == stream_id)
        .order_by(ssf_poll.c.id)
        .limit(limit)
    )
    return [dict(c) for (c,) in conn.execute(stmt)]
