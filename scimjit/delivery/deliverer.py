"""Delivering outbox events through connectors, and recording what came back.

One attempt = claim (short write transaction) -> connector call (no transaction open: it may take seconds)
-> record the outcome and its effect on the account ledger (one write transaction). A crash between the
call and the record leaves the event claimed; its lease runs out and it is delivered again with the same
idempotency key, which is why connectors must treat a repeated key as "already done".
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from scimjit.clock import Clock, to_micros
from scimjit.config import JitSettings
from scimjit.delivery import outbox
from scimjit.delivery.connectors.base import (
    ACCOUNT_CREATE,
    Call,
    Connector,
    ConnectorError,
    Outcome,
    PermanentError,
    Result,
    method_for,
)
from scimjit.entitlement import ledger
from scimjit.metrics import CONNECTOR_ERRORS, CONNECTOR_LATENCY, DEAD_LETTERED, DELIVERIES
from scimjit.store import audit
from scimjit.store.db import Database

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.delivery")

AlsoOnDone = Callable[[sa.Connection, Result], None]

_CREATED = {Outcome.CREATED, Outcome.ALREADY_EXISTS, Outcome.LINKED, Outcome.IN_PROGRESS}


@dataclass(frozen=True, slots=True)
class Report:
    """What one delivery attempt ended in."""

    id: int
    event_id: str
    type: str
    status: str  # done, pending (will retry), dead
    result: Result | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


def worker_id(kind: str = "worker") -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Deliverer:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: JitSettings,
        connector_for: Callable[[str], Connector | None],
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.connector_for = connector_for
        self.rng = rng or random.Random()
        self.policy = outbox.RetryPolicy(
            settings.outbox_max_attempts, settings.outbox_backoff_base, settings.outbox_backoff_max
        )

    async def deliver_due(self, *, worker: str | None = None, limit: int | None = None) -> list[Report]:
        """Claim the due events (heads of their keys) and deliver them concurrently; one round."""
        me = worker or worker_id()
        batch = limit or self.settings.worker_batch_size
        claimed, known = await self.db.run(self._claim_due, me, batch)
        if not claimed:
            return []
        commits = _GroupCommit(self)
        return list(
            await asyncio.gather(
                *(self.deliver_claimed(c, me, known=known, commits=commits) for c in claimed)
            )
        )

    async def drain(self, *, worker: str | None = None, max_rounds: int = 1000) -> list[Report]:
        """Deliver until nothing is due now (tests and `scimjit worker --once`)."""
        me = worker or worker_id()
        reports: list[Report] = []
        for _ in range(max_rounds):
            round_ = await self.deliver_due(worker=me)
            if not round_:
                break
            reports.extend(round_)
        return reports

    async def deliver_now(self, event_id: str, *, also: AlsoOnDone | None = None) -> Report | None:
        """Deliver one event at once (a login is waiting for it). None if it cannot be claimed now: another
        worker holds it, or an earlier event of the same user must go first."""
        me = worker_id("login")
        claimed = await self.db.run(self._claim_one, event_id, me)
        if claimed is None:
            return None
        return await self.deliver_claimed(claimed, me, also=also)

    def _claim_due(
        self, worker: str, limit: int
    ) -> tuple[list[outbox.Claimed], dict[tuple[str, str], str | None]]:
        """The round's events, and their accounts' downstream ids read with them: one read for the round, not
        one transaction per event (a mass expiry's 10,000 revokes read them 64 at a time). Safe to read before
        the calls: only an event of the same key changes an account's downstream id, and a key has one event
        in flight at a time."""
        with self.db.write() as conn:
            claimed = outbox.claim_due(
                conn, worker=worker, now=self.clock.now(), lease=self.settings.outbox_lease, limit=limit
            )
            keys = [
                (c.application, c.user_id)
                for c in claimed
                if c.type != ACCOUNT_CREATE and c.application and c.user_id
            ]
            return claimed, ledger.downstream_ids(conn, keys)

    def _claim_one(self, event_id: str, worker: str) -> outbox.Claimed | None:
        with self.db.write() as conn:
            return outbox.claim_event(
                conn, event_id, worker=worker, now=self.clock.now(), lease=self.settings.outbox_lease
            )

    async def deliver_claimed(
        self,
        claimed: outbox.Claimed,
        worker: str,
        *,
        also: AlsoOnDone | None = None,
        known: Mapping[tuple[str, str], str | None] | None = None,
        commits: _GroupCommit | None = None,
    ) -> Report:
        """One attempt at an event leased to `worker`. `also` runs in the transaction that records a success
        (the login writes its audit record there instead of in a transaction of its own); `known` holds the
        downstream ids read with the claim (`_claim_due`), else the event's is read here; `commits` records a
        success together with the round's other results that are ready (`_GroupCommit`)."""
        result: Result | None = None
        error: ConnectorError | None = None
        started = time.monotonic()
        try:
            if claimed.attempts > self.policy.max_attempts:
                raise PermanentError(f"gave up after {claimed.attempts - 1} attempts (crashed deliveries?)")
            connector = self.connector_for(claimed.application or "")
            if connector is None:
                raise PermanentError(f"application {claimed.application!r} is not configured")
            downstream_id = None
            if claimed.type != ACCOUNT_CREATE:  # a create has no downstream id yet
                if known is not None:
                    downstream_id = known.get((claimed.application or "", claimed.user_id or ""))
                else:
                    downstream_id = await self.db.run(self._downstream_id, claimed)
            call = Call(event=claimed.payload, downstream_id=downstream_id)
            method = getattr(connector, method_for(claimed.type), None)
            if method is None:  # optional methods (notify): nothing to do for this connector
                result = Result(Outcome.NOTIFIED, downstream_id, {"skipped": True})
            else:
                timeout = max(1.0, self.settings.outbox_lease * 0.8)  # finish before the lease runs out
                result = await asyncio.wait_for(method(call), timeout)
                if not isinstance(result, Result):
                    raise PermanentError(f"connector returned {type(result).__name__}, not a Result")
        except ConnectorError as exc:
            error = exc
        except TimeoutError:
            error = ConnectorError("the connector call timed out")
        except Exception as exc:  # a connector bug: retry a bounded number of times, then park it
            log.exception("connector error delivering event %s (%s)", claimed.event_id, claimed.type)
            error = ConnectorError(f"{type(exc).__name__}: {exc}")
        elapsed = time.monotonic() - started
        app = claimed.application or ""
        CONNECTOR_LATENCY.labels(application=app, operation=claimed.type).observe(elapsed)
        if error is None:
            assert result is not None
            if commits is not None and also is None:
                await commits.record(claimed, worker, result, elapsed)
            else:
                await self.db.run(self._record_done, claimed, worker, result, elapsed, also)
            log.info("delivered %s %s -> %s", claimed.type, claimed.event_id, result.outcome.value)
            DELIVERIES.labels(application=app, outcome="done").inc()
            return Report(claimed.id, claimed.event_id, claimed.type, outbox.DONE, result)
        kind = "transient" if error.transient else "permanent"
        CONNECTOR_ERRORS.labels(application=app, operation=claimed.type, kind=kind).inc()
        status, next_at = await self.db.run(self._record_failure, claimed, worker, error, elapsed)
        DELIVERIES.labels(application=app, outcome="dead" if status == outbox.DEAD else "retry").inc()
        if status == outbox.DEAD:
            DEAD_LETTERED.labels(application=app).inc()
        level = logging.WARNING if status == outbox.DEAD else logging.INFO
        log.log(level, "delivery of %s %s failed (%s): %s", claimed.type, claimed.event_id, status, error)
        return Report(claimed.id, claimed.event_id, claimed.type, status, None, str(error), next_at)

    def _downstream_id(self, claimed: outbox.Claimed) -> str | None:
        if not claimed.application or not claimed.user_id:
            return None
        with self.db.read() as conn:
            row = ledger.get(conn, claimed.application, claimed.user_id)
        return row.downstream_id if row is not None else None

    def _record_done(
        self, claimed: outbox.Claimed, worker: str, result: Result, elapsed: float, also: AlsoOnDone | None
    ) -> None:
        now = self.clock.now()
        with self.db.write() as conn:
            _done(conn, claimed, worker, result, elapsed, now)
            if also is not None:
                also(conn, result)

    def _record_done_many(self, done: Sequence[_Done]) -> None:
        """`_record_done` of several deliveries in one write transaction (one commit, one WAL flush)."""
        now = self.clock.now()
        with self.db.write() as conn:
            for item in done:
                _done(conn, item.claimed, item.worker, item.result, item.elapsed, now)

    def _record_failure(
        self, claimed: outbox.Claimed, worker: str, error: ConnectorError, elapsed: float
    ) -> tuple[str, datetime | None]:
        now = self.clock.now()
        with self.db.write() as conn:
            status, next_at = outbox.fail(
                conn,
                claimed,
                worker=worker,
                error=str(error),
                transient=error.transient,
                now=now,
                policy=self.policy,
                rng=self.rng,
                retry_after=error.retry_after,
            )
            if (
                status == outbox.DEAD
                and claimed.type == ACCOUNT_CREATE
                and claimed.application
                and claimed.user_id
            ):
                ledger.set_status(
                    conn, claimed.application, claimed.user_id, ledger.FAILED, now, only_from=[ledger.PENDING]
                )
            _audit(conn, claimed, worker, now, "failure", elapsed, error=str(error), status=status)
        return status, next_at

    def retry(self, *, ids: list[int] | None = None, all_dead: bool = False) -> list[Any]:
        return retry_dead(self.db, self.clock.now(), ids=ids, all_dead=all_dead)


def retry_dead(
    db: Database, now: datetime, *, ids: list[int] | None = None, all_dead: bool = False
) -> list[Any]:
    """Re-arm dead events; a re-armed account.create puts its failed account back to pending. Needs no
    connector: an operator can re-arm while fixing a connector's configuration."""
    with db.write() as conn:
        rows = outbox.retry(conn, ids=ids or [], all_dead=all_dead, now=now)
        for row in rows:
            if row.type == ACCOUNT_CREATE and row.application and row.user_id:
                ledger.set_status(
                    conn, row.application, row.user_id, ledger.PENDING, now, only_from=[ledger.FAILED]
                )
    return rows


def _done(
    conn: sa.Connection, claimed: outbox.Claimed, worker: str, result: Result, elapsed: float, now: datetime
) -> None:
    """A delivered event's records: the outbox row done, the ledger's side, the `connector.call` audit."""
    outbox.complete(conn, claimed, worker=worker, result=result.to_json(), now=now)
    _apply(conn, claimed, result, now)
    _audit(conn, claimed, worker, now, "success", elapsed, result=result.to_json())


@dataclass(frozen=True, slots=True)
class _Done:
    claimed: outbox.Claimed
    worker: str
    result: Result
    elapsed: float
    recorded: asyncio.Future[None]


class _GroupCommit:
    """A round's successes recorded together: the first to finish is recorded at once; those that finish
    while a transaction is being written wait for it and go in the next one, all in one transaction.

    Per delivery, the transaction (and on PostgreSQL its commit's WAL flush) was most of the worker threads'
    time in a mass expiry (`make bench` X3). Nothing is lost or half-written: a group's transaction is all or
    nothing, and if it fails each of its deliveries is recorded again alone, so one bad record fails only its
    own delivery (whose event stays leased, then is delivered again under the same idempotency key)."""

    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer
        self._queue: list[_Done] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, claimed: outbox.Claimed, worker: str, result: Result, elapsed: float) -> None:
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Done(claimed, worker, result, elapsed, recorded))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        await recorded

    async def _write(self) -> None:
        db, deliverer = self._deliverer.db, self._deliverer
        group: list[_Done] = []
        try:
            while self._queue:
                group, self._queue = self._queue, []
                try:
                    await db.run(deliverer._record_done_many, group)
                except Exception as exc:
                    if len(group) == 1:
                        _settle(group[0].recorded, exc)
                        continue
                    for item in group:  # alone, each in its own transaction: only a bad one fails
                        try:
                            await db.run(
                                deliverer._record_done,
                                item.claimed,
                                item.worker,
                                item.result,
                                item.elapsed,
                                None,
                            )
                        except Exception as alone:
                            _settle(item.recorded, alone)
                        else:
                            _settle(item.recorded)
                else:
                    for item in group:
                        _settle(item.recorded)
        except BaseException:  # cancelled (the loop is closing): no delivery is told it was recorded
            for item in (*group, *self._queue):
                item.recorded.cancel()
            self._queue = []
            raise
        finally:
            self._writer = None


def _settle(recorded: asyncio.Future[None], error: Exception | None = None) -> None:
    """Tell a delivery how its record went (unless it stopped waiting: its task was cancelled)."""
    if recorded.done():
        return
    if error is None:
        recorded.set_result(None)
    else:
        recorded.set_exception(error)


def _audit(
    conn: sa.Connection,
    claimed: outbox.Claimed,
    worker: str,
    now: datetime,
    outcome: str,
    elapsed: float,
    **facts: Any,
) -> None:
    """One `connector.call` audit record per delivery attempt, in the transaction that records it."""
    audit.record(
        conn,
        at_micros=to_micros(now),
        actor=worker.split(":", 1)[0],
        action="connector.call",
        outcome=outcome,
        resource_type="OutboxEvent",
        resource_id=claimed.event_id,
        details={
            "operation": claimed.type,
            "application": claimed.application,
            "userId": claimed.user_id,
            "attempt": claimed.attempts,
            "durationMs": round(elapsed * 1000, 1),
            **facts,
        },
    )


def _apply(conn: sa.Connection, claimed: outbox.Claimed, result: Result, now: datetime) -> None:
    """The ledger side of a delivered event."""
    app, user_id = claimed.application, claimed.user_id
    if not app or not user_id:
        return
    if claimed.type == ACCOUNT_CREATE:
        if result.outcome in _CREATED:
            values: dict[str, Any] = {}
            if result.downstream_id is not None:
                values["downstream_id"] = result.downstream_id
            ledger.set_status(
                conn, app, user_id, ledger.ACTIVE, now, only_from=[ledger.PENDING, ledger.FAILED], **values
            )
        elif result.outcome == Outcome.NOT_FOUND:
            # link found nothing: record no account, so a later login tries linking again
            ledger.remove(conn, app, user_id, only_from=[ledger.PENDING])
    elif result.downstream_id is not None:
        ledger.record_downstream_id(conn, app, user_id, result.downstream_id)
