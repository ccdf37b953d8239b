"""The transactional outbox: events are rows written in the transaction that causes them, delivered later.

Queue mechanics only (what a connector call means is delivery.py's business):

- `enqueue` inside the caller's write transaction, so an event exists if and only if its cause committed;
- `claim_due` leases due events to one worker, the longest due first: a claimed row carries `claimed_by` /
  `claimed_until`, so a worker that dies mid-delivery only delays its events by the lease, never loses them.
  Only the *head* of each ordering key (application + user) is claimable: an event waits while an earlier
  event of its key is still pending, which is what keeps one user's create / update / disable in order. On
  PostgreSQL the claim uses `FOR UPDATE SKIP LOCKED`, so any number of workers claim side by side without
  blocking each other or claiming the same row; on SQLite the write transaction (BEGIN IMMEDIATE)
  serialises claims;
- `complete` / `fail`: done, or back to pending with exponential backoff and jitter, or `dead` after
  `max_attempts` (or at once for permanent errors). Dead events stay visible and `retry` re-arms them.

An event's `event_id` is its idempotency key: it never changes, whichever worker delivers it, however often.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from scimjit.clock import format_micros, from_micros, isoformat, to_micros
from scimjit.store.db import execute
from scimjit.store.prepared import Prepared
from scimjit.store.tables import Row, outbox


class OutboxStatus(StrEnum):
    """An event's `status` column (stored, rendered and compared as the plain string)."""

    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


PENDING = OutboxStatus.PENDING
DONE = OutboxStatus.DONE
DEAD = OutboxStatus.DEAD
STATUSES = tuple(OutboxStatus)


@dataclass(frozen=True, slots=True)
class Claimed:
    """An event leased to one worker."""

    id: int
    event_id: str
    type: str
    application: str | None
    user_id: str | None
    payload: Mapping[str, Any]
    attempts: int  # including the current one


def new_event(
    type: str, application: str, user: Mapping[str, Any], roles: Sequence[str], at: datetime, **extra: Any
) -> dict[str, Any]:
    """An event document, in the shape a webhook receives it."""
    return {
        "id": str(uuid.uuid4()),
        "type": type,
        "application": application,
        "user": dict(user),
        "roles": list(roles),
        "occurredAt": isoformat(at),
        **extra,
    }


def ordering_key(application: str | None, user_id: str | None) -> str:
    return f"{application or ''}:{user_id or ''}"


def enqueue(
    conn: sa.Connection,
    event: Mapping[str, Any],
    *,
    user_id: str | None,
    now: datetime,
    lease_to: str | None = None,
    lease: float = 0.0,
) -> int:
    """Add `event` (from `new_event`) to the outbox in the caller's transaction; returns the row id.
    `lease_to` inserts it already claimed by that worker (a login about to deliver it itself, saving a
    claim transaction); the caller must have checked `has_pending` first, or it may overtake its key."""
    (inserted,) = execute(conn, _INSERT, _row(event, user_id, to_micros(now), lease_to=lease_to, lease=lease))
    row_id: int = inserted.id
    return row_id


def has_pending(conn: sa.Connection, application: str | None, user_id: str | None) -> bool:
    """Whether (application, user) has an undelivered event: a new one would have to wait its turn."""
    return bool(execute(conn, _HAS_PENDING, {"key": ordering_key(application, user_id)}))


def _row(
    event: Mapping[str, Any],
    user_id: str | None,
    now_us: int,
    *,
    lease_to: str | None = None,
    lease: float = 0.0,
) -> dict[str, Any]:
    """The outbox row of a new event (`enqueue`, `enqueue_many`): due now, unclaimed or leased to `lease_to`."""
    leased = lease_to is not None
    return {
        "event_id": event["id"],
        "type": event["type"],
        "application": event.get("application"),
        "user_id": user_id,
        "ordering_key": ordering_key(event.get("application"), user_id),
        "payload": dict(event),
        "status": str(PENDING),
        "next_attempt_at": now_us,
        "created_at": now_us,
        "attempts": 1 if leased else 0,
        "claimed_by": lease_to,
        "claimed_until": now_us + int(lease * 1_000_000) if leased else None,
    }


def _pending_by_key(table: sa.FromClause = outbox) -> sa.ColumnElement[bool]:
    """`status = 'pending'` in a form no index serves, so that both databases look events up by their
    ordering key (a few rows each) rather than walking every pending event (100,000s during a downstream
    outage), whatever their statistics say of how many events are pending."""
    return sa.func.coalesce(table.c.status, "") == PENDING


# Compiled once (`store.prepared`): every first login runs both inside its claim transaction.
_INSERTED = (
    "event_id",
    "type",
    "application",
    "user_id",
    "ordering_key",
    "payload",
    "status",
    "next_attempt_at",
    "created_at",
    "attempts",
    "claimed_by",
    "claimed_until",
)
_INSERT = Prepared(outbox.insert().returning(outbox.c.id), _INSERTED)
_HAS_PENDING = Prepared(
    sa.select(sa.literal(1).label("one"))
    .select_from(outbox)
    .where(outbox.c.ordering_key == sa.bindparam("key"), _pending_by_key())
    .limit(1)
)


def latest_pending(conn: sa.Connection, application: str, user_id: str, type_: str) -> str | None:
    """The event id of the newest pending event of this type for (application, user), if any."""
    event_id: str | None = conn.execute(
        sa.select(outbox.c.event_id)
        .where(
            outbox.c.ordering_key == ordering_key(application, user_id),
            outbox.c.type == type_,
            _pending_by_key(),
        )
        .order_by(outbox.c.id.desc())
        .limit(1)
    ).scalar()
    return event_id


def pending_keys(conn: sa.Connection, keys: Sequence[str]) -> set[str]:
    """Which of these ordering keys have pending events."""
    stmt = (
        sa.select(outbox.c.ordering_key)
        .where(outbox.c.ordering_key.in_(list(keys)), _pending_by_key())
        .distinct()
    )
    return set(conn.execute(stmt).scalars())


def pending_ids(conn: sa.Connection, keys: Sequence[str]) -> set[int]:
    """Row ids of the pending events of these ordering keys."""
    stmt = sa.select(outbox.c.id).where(outbox.c.ordering_key.in_(list(keys)), _pending_by_key())
    return set(conn.execute(stmt).scalars())


def pending_of(conn: sa.Connection, keys: Sequence[str]) -> list[sa.Row[int, str | None, Any]]:
    """(id, user_id, payload) of the pending events of these ordering keys, in queue order."""
    stmt = (
        sa.select(outbox.c.id, outbox.c.user_id, outbox.c.payload)
        .where(outbox.c.ordering_key.in_(list(keys)), _pending_by_key())
        .order_by(outbox.c.id)
    )
    return list(conn.execute(stmt))


def enqueue_many(
    conn: sa.Connection, items: Sequence[tuple[Mapping[str, Any], str | None]], *, now: datetime
) -> int:
    """`enqueue` for many (event, user_id) pairs in one executemany statement (the sweeper's and the
    deprovisioning fan-out's batches); events of one key keep the order they have in `items`."""
    if not items:
        return 0
    now_us = to_micros(now)
    conn.execute(
        outbox.insert().returning(outbox.c.id),  # RETURNING: batched multi-row VALUES on every driver
        [_row(event, user_id, now_us) for event, user_id in items],
    )
    return len(items)


def _claimable(now_us: int) -> sa.ColumnElement[bool]:
    """Pending, not leased, and the head of its key: the smallest pending id of its ordering key.

    The head is a scalar subquery over the key's own events (`_pending_by_key`, through
    ix_outbox_ordering_key_id), run once per candidate. The earlier `NOT EXISTS (an earlier pending event of
    the key)` was planned by PostgreSQL as an anti-join, and with statistics taken while few events were
    pending (a young or quiet queue, then a mass expiry) its inner side was a scan of every pending event,
    repeated for each candidate: 184 ms per claim at 1,200 pending events, 2.6 s at 10,000 (issue 13)."""
    head = outbox.alias("head")
    first_of_key = (
        sa.select(sa.func.min(head.c.id))
        .where(head.c.ordering_key == outbox.c.ordering_key, _pending_by_key(head))
        .correlate(outbox)
        .scalar_subquery()
    )
    return sa.and_(
        outbox.c.status == PENDING,
        sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now_us),
        outbox.c.id == first_of_key,
    )


def claim_due(conn: sa.Connection, *, worker: str, now: datetime, lease: float, limit: int) -> list[Claimed]:
    """Lease up to `limit` due head-of-key events to `worker`, the longest due first (call inside a write
    transaction)."""
    now_us = to_micros(now)
    stmt = due_heads(now_us, limit)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=outbox)
    ids = [r[0] for r in conn.execute(stmt)]
    return _lease(conn, ids, worker, now_us, lease)


def due_heads(now_us: int, limit: int) -> sa.Select[int]:
    """The ids `claim_due` leases (also explained by `bench/outbox_churn.py`). The order is the index's
    (status, next_attempt_at, id): the scan stops after `limit` heads whatever the planner believes of the
    table, where an order by id alone sorted every due event first."""
    return (
        sa.select(outbox.c.id)
        .where(outbox.c.next_attempt_at <= now_us, _claimable(now_us))
        .order_by(outbox.c.next_attempt_at, outbox.c.id)  # the order of ix_outbox_status_next_attempt_at_id
        .limit(limit)
    )


def claim_event(
    conn: sa.Connection, event_id: str, *, worker: str, now: datetime, lease: float
) -> Claimed | None:
    """Lease one given event now, ignoring its backoff (a user is waiting on it), if it is pending, unclaimed
    and first in its key; None otherwise (someone else is on it, or it must wait its turn)."""
    now_us = to_micros(now)
    stmt = sa.select(outbox.c.id).where(outbox.c.event_id == event_id, _claimable(now_us))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=outbox)
    ids = [r[0] for r in conn.execute(stmt)]
    claimed = _lease(conn, ids, worker, now_us, lease)
    return claimed[0] if claimed else None


def _lease(conn: sa.Connection, ids: list[int], worker: str, now_us: int, lease: float) -> list[Claimed]:
    if not ids:
        return []
    rows = conn.execute(
        outbox.update()
        .where(outbox.c.id.in_(ids))
        .values(
            claimed_by=worker, claimed_until=now_us + int(lease * 1_000_000), attempts=outbox.c.attempts + 1
        )
        .returning(
            outbox.c.id,
            outbox.c.event_id,
            outbox.c.type,
            outbox.c.application,
            outbox.c.user_id,
            outbox.c.payload,
            outbox.c.attempts,
        )
    ).all()
    return sorted((Claimed(*r) for r in rows), key=lambda c: c.id)


def complete(
    conn: sa.Connection, claimed: Claimed, *, worker: str, result: Mapping[str, Any], now: datetime
) -> bool:
    """Mark delivered. False if the lease was lost meanwhile (another worker took over; the receiver's
    idempotency key makes the double call harmless)."""
    done = execute(
        conn,
        _COMPLETE,
        {"c_id": claimed.id, "c_worker": worker, "c_result": dict(result), "c_at": to_micros(now)},
    )
    return len(done) == 1


# Every delivery's result is recorded by it (the worker's and a first login's own): compiled once.
_COMPLETE = Prepared(
    outbox.update()
    .where(
        outbox.c.id == sa.bindparam("c_id"),
        outbox.c.status == PENDING,
        outbox.c.claimed_by == sa.bindparam("c_worker"),
    )
    .values(
        status=DONE,
        result=sa.bindparam("c_result"),
        delivered_at=sa.bindparam("c_at"),
        claimed_by=None,
        claimed_until=None,
        last_error=None,
    )
    .returning(outbox.c.id)
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 12
    base: float = 2.0
    cap: float = 3600.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": between half and all of base * 2^(attempts-1), capped.
        The jitter spreads retries of many events that failed together (one downstream outage)."""
        ceiling = min(self.cap, self.base * (2 ** max(0, attempts - 1)))
        return ceiling / 2 + rng.random() * ceiling / 2


def fail(
    conn: sa.Connection,
    claimed: Claimed,
    *,
    worker: str,
    error: str,
    transient: bool,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
    retry_after: float | None = None,
) -> tuple[str, datetime | None]:
    """Record a failed attempt: (new status, next attempt time or None when dead)."""
    if not transient or claimed.attempts >= policy.max_attempts:
        status, next_at = DEAD, None
    else:
        delay = max(policy.delay(claimed.attempts, rng), min(retry_after or 0.0, policy.cap))
        status, next_at = PENDING, from_micros(to_micros(now) + int(delay * 1_000_000))
    values: dict[str, Any] = {
        "status": status,
        "last_error": error[:2000],
        "claimed_by": None,
        "claimed_until": None,
    }
    if next_at is not None:
        values["next_attempt_at"] = to_micros(next_at)
    conn.execute(
        outbox.update()
        .where(outbox.c.id == claimed.id, outbox.c.status == PENDING, outbox.c.claimed_by == worker)
        .values(**values)
    )
    return status, next_at


def retry(
    conn: sa.Connection, *, ids: Sequence[int] = (), all_dead: bool = False, now: datetime
) -> list[Any]:
    """Re-arm dead events (the given ones, or every dead one): pending, due now, attempts reset. Returns the
    re-armed rows (id, type, application, user_id)."""
    cond = outbox.c.status == DEAD
    if not all_dead:
        cond = sa.and_(cond, outbox.c.id.in_(list(ids)))
    return list(
        conn.execute(
            outbox.update()
            .where(cond)
            .values(
                status=PENDING,
                attempts=0,
                next_attempt_at=to_micros(now),
                claimed_by=None,
                claimed_until=None,
            )
            .returning(outbox.c.id, outbox.c.type, outbox.c.application, outbox.c.user_id)
        ).all()
    )


def list_events(
    conn: sa.Connection,
    *,
    status: str | None = None,
    application: str | None = None,
    user_id: str | None = None,
    limit: int = 100,
    after_id: int = 0,
    with_payload: bool = False,
) -> list[dict[str, Any]]:
    stmt = sa.select(outbox).where(outbox.c.id > after_id).order_by(outbox.c.id).limit(limit)
    if status:
        stmt = stmt.where(outbox.c.status == status)
    if application:
        stmt = stmt.where(outbox.c.application == application)
    if user_id:
        stmt = stmt.where(outbox.c.user_id == user_id)
    return [render(r, with_payload=with_payload) for r in conn.execute(stmt)]


def get(conn: sa.Connection, row_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(outbox).where(outbox.c.id == row_id)).first()
    return render(row, with_payload=True) if row is not None else None


def counts(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status))
    return {status: n for status, n in rows}


def render(row: Row, *, with_payload: bool = False) -> dict[str, Any]:
    def when(us: int | None) -> str | None:
        return format_micros(us) if us is not None else None

    out: dict[str, Any] = {
        "id": row.id,
        "eventId": row.event_id,
        "type": row.type,
        "application": row.application,
        "userId": row.user_id,
        "status": row.status,
        "attempts": row.attempts,
        "nextAttemptAt": when(row.next_attempt_at) if row.status == PENDING else None,
        "lastError": row.last_error,
        "result": row.result,
        "createdAt": when(row.created_at),
        "deliveredAt": when(row.delivered_at),
    }
    if with_payload:
        out["event"] = row.payload
    return out
