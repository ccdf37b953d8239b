"""The sweeper: makes time-bound access end downstream on time.

Reads already hide expired memberships at the instant they expire (`store.memberships.live`); the sweeper
does the rest, in batches, each batch one transaction that changes state *and* writes the outbox events of
that change (so a crash between the two is impossible):

1. scheduled grants whose `startsAt` has come become active (membership row + `role.grant`);
2. expired membership rows are deleted, and the accounts of their members are reconciled: `role.revoke` for
   roles no live membership gives any more, `on_unentitled` when nothing entitles the user (events only for
   users with an account, and only when no other source keeps the membership alive); a windowed grant's
   row expires at its window's end, so this is also where access closes at a window boundary;
2b. windowed grants whose next window has started get their membership row back (`role.grant`);
3. active grants past their end are recorded as expired;
4. accounts marked for a re-check (a deleted group's members; a grace period that ran out) are reconciled;
5. `access.expiring` notices go out for grants ending within `expiry_notice`;
6. pending requests past their `pending_ttl` are recorded as expired;
7. accounts idle longer than their application's `idle_after` get its `on_idle` (disable or delete).

On PostgreSQL every batch claims its rows with `FOR UPDATE SKIP LOCKED` (the membership batch is one
`DELETE ... WHERE (pk) IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED) RETURNING`), so any number of sweepers
(`scimjit sweep`, and the one inside each `scimjit serve`) share the work without doing any of it twice.
On SQLite each batch is a BEGIN IMMEDIATE transaction: sweepers take turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from scimjit.access import grants, requests
from scimjit.clock import Clock, format_micros, to_micros
from scimjit.entitlement import ledger
from scimjit.entitlement.apps import Application
from scimjit.metrics import EXPIRATIONS, IDLE_RECLAIMED
from scimjit.provisioning import reconcile
from scimjit.provisioning.deprovision import Deprovisioner, Outcome, chunks
from scimjit.provisioning.reconcile import Schedule
from scimjit.store import audit, memberships, signin_states, used_once
from scimjit.store import groups as group_rows
from scimjit.store import users as user_rows
from scimjit.store.db import Database

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.sweeper")


@dataclass(slots=True)
class SweepReport:
    activated: int = 0  # scheduled grants that started
    memberships_expired: int = 0  # membership rows deleted
    grants_expired: int = 0
    windows_opened: int = 0  # windowed grants whose next window started (membership row back)
    rechecked: int = 0  # accounts re-checked (deleted groups, grace periods)
    notices: int = 0  # grants whose access.expiring went out
    requests_expired: int = 0
    events: int = 0  # outbox events written
    revoked: int = 0  # role.revoke events
    disabled: int = 0  # accounts disabled or deleted for lost entitlement
    single_use_purged: int = 0  # expired sign-in states and replay-cache values deleted
    idle_reclaimed: int = 0  # accounts disabled or deleted for `idle_after` without a login
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def work(self) -> int:
        return (
            self.activated
            + self.memberships_expired
            + self.windows_opened
            + self.grants_expired
            + self.rechecked
            + self.notices
            + self.requests_expired
            + self.idle_reclaimed
        )

    def _count(self, outcome: Outcome) -> None:
        self.events += outcome.events
        self.revoked += outcome.revoked
        self.disabled += outcome.disabled + outcome.deleted


class Sweeper:
    def __init__(
        self,
        db: Database,
        deprov: Deprovisioner,
        clock: Clock,
        *,
        batch_size: int | None = None,
        audit_retention: float = 0.0,  # the `audit_retention` setting, seconds; 0 keeps audit records
    ) -> None:
        self.db = db
        self.deprov = deprov
        self.clock = clock
        self.batch_size = batch_size or deprov.settings.sweep_batch_size
        self.audit_retention = audit_retention
        self._audit_purged_at: datetime | None = None
        # the periodic reconcile (jit/reconcile.py), run next to the sweep loop by `run` when set
        self.schedule: Schedule | None = None

    def sweep_once(self, now: datetime | None = None) -> SweepReport:
        """Everything due at `now` (default: the clock's now), batch after batch until nothing is left."""
        now = now or self.clock.now()
        started = time.perf_counter()
        report = SweepReport()
        report.activated = self._drain(
            lambda conn: grants.activate_due(conn, self.deprov, now, self.batch_size)
        )
        report.memberships_expired = self._drain(lambda conn: self.expire_memberships(conn, now, report))
        report.windows_opened = self._drain(
            lambda conn: grants.reopen_due(conn, self.deprov, now, self.batch_size)
        )
        report.grants_expired = self._drain(lambda conn: grants.expire_due(conn, now, self.batch_size))
        report.rechecked = self._drain(lambda conn: self.recheck_accounts(conn, now, report))
        report.notices = self._drain(lambda conn: grants.notify_due(conn, self.deprov, now, self.batch_size))
        report.requests_expired = self._drain(lambda conn: requests.expire_due(conn, now, self.batch_size))
        report.idle_reclaimed = self.reclaim_idle(now, report=report)
        report.seconds = time.perf_counter() - started
        if report.work:
            log.info("sweep: %s", {k: v for k, v in report.to_json().items() if v})
        for kind, n in (
            ("membership", report.memberships_expired),
            ("grant", report.grants_expired),
            ("request", report.requests_expired),
        ):
            if n:
                EXPIRATIONS.labels(kind=kind).inc(n)
        self._purge_audit(now)
        report.single_use_purged = self._drain(lambda conn: self.purge_single_use(conn, now))
        return report

    def reclaim_idle(
        self,
        now: datetime | None = None,
        *,
        application: str | None = None,
        actor: str = "sweeper",
        report: SweepReport | None = None,
    ) -> int:
        """Apply `on_idle` to every application's (or one's) idle accounts, a batch per transaction; returns
        how many were reclaimed. The sweep's step 7, and `scimjit accounts idle` without --dry-run."""
        now = now or self.clock.now()
        total = 0
        for name, app in sorted(self.deprov.apps.items()):  # application order: the lock order
            if app.idle_after is None or (application is not None and name != application):
                continue
            outcome = Outcome()

            def step(conn: sa.Connection, app: Application = app, outcome: Outcome = outcome) -> int:
                batch = self.deprov.reclaim_idle(conn, app, now, self.batch_size, actor)
                outcome.add(batch)
                return batch.disabled + batch.deleted

            done = self._drain(step)
            if done:
                IDLE_RECLAIMED.labels(application=name, action=app.on_idle).inc(done)
                if report is not None:
                    report.events += outcome.events
            total += done
        return total

    def idle_accounts(self, application: str, now: datetime | None = None) -> Iterator[dict[str, Any]]:
        """What `reclaim_idle` would reclaim in `application` now (nothing written), page by page: the
        dry run of `scimjit accounts idle`."""
        app = self.deprov.apps[application]
        if app.idle_after is None:
            return
        now = now or self.clock.now()
        cutoff_us = to_micros(now) - int(app.idle_after * 1_000_000)
        after = 0
        while True:
            with self.db.read() as conn:
                rows = ledger.idle(conn, app.name, cutoff_us, self.batch_size, after=after)
            for r in rows:
                yield {
                    "application": app.name,
                    "userName": r.p_user_name,
                    "userId": r.user_id,
                    "lastSeen": format_micros(ledger.last_seen(r)),
                    "action": app.on_idle,
                }
            if len(rows) < self.batch_size:
                return
            after = rows[-1].id

    def purge_single_use(self, conn: sa.Connection, now: datetime) -> int:
        """Abandoned sign-in states and replay-cache values past their expiry: they can no longer be used or
        replayed, so keeping them would only grow the tables."""
        return signin_states.purge_expired(conn, now, self.batch_size) + used_once.purge_expired(
            conn, now, self.batch_size
        )

    def _purge_audit(self, now: datetime) -> None:
        """Delete audit records past `audit_retention`, at most once a minute (an indexed range delete)."""
        if self.audit_retention <= 0:
            return
        if self._audit_purged_at is not None and (now - self._audit_purged_at).total_seconds() < 60:
            return
        self._audit_purged_at = now
        deleted = audit.purge_expired(self.db, now, self.audit_retention)
        if deleted:
            log.info("purged %d audit record(s) older than audit_retention", deleted)

    def _drain(self, step: Callable[[sa.Connection], int]) -> int:
        total = 0
        while True:
            with self.db.write() as conn:
                done = step(conn)
            total += done
            if done < self.batch_size:
                return total

    # ------------------------------------------------------------------------------------ steps

    def expire_memberships(self, conn: sa.Connection, now: datetime, report: SweepReport) -> int:
        """Delete one batch of expired membership rows and reconcile their members' accounts."""
        now_us = to_micros(now)
        batch = memberships.expired_batch(now_us, self.batch_size)
        if conn.dialect.name == "postgresql":
            # The members' user rows first, as every membership writer does (store.users.lock); only rows of
            # users locked here are deleted in this batch.
            locked = sorted({r.member_id for r in conn.execute(batch)})
            user_rows.lock(conn, locked)
            batch = memberships.narrow_to_members(batch, locked).with_for_update(skip_locked=True)
        gone = memberships.delete_keys(conn, batch)
        if not gone:
            return 0
        by_group: dict[int, list[str]] = {}
        for group_pk, member_id, _source in gone:
            by_group.setdefault(group_pk, []).append(member_id)
        rows = group_rows.names(conn, pks=by_group)
        by_app: dict[str, set[str]] = {}
        for g in rows:
            for app in self.deprov.apps_for_group(g.id, g.display_name):
                by_app.setdefault(app.name, set()).update(by_group[g.pk])
            audit.record(
                conn,
                actor="sweeper",
                action="membership.expire",
                outcome="success",
                resource_type="Group",
                resource_id=g.id,
                details={
                    "displayName": g.display_name,
                    "expired": len(by_group[g.pk]),
                    "memberIds": audit.capped(by_group[g.pk]),
                },
                at_micros=now_us,
            )
        for name, user_ids in sorted(by_app.items()):  # application order: the lock order
            for chunk in chunks(sorted(user_ids)):
                report._count(self.deprov.reconcile(conn, self.deprov.apps[name], chunk, now, "sweeper"))
        return len(gone)

    def recheck_accounts(self, conn: sa.Connection, now: datetime, report: SweepReport) -> int:
        """Reconcile one batch of accounts marked for a re-check whose time has come."""
        now_us = to_micros(now)
        due = ledger.due_rechecks(conn, now_us, self.batch_size)
        if not due:
            return 0
        by_app: dict[str, list[str]] = {}
        for row in due:
            by_app.setdefault(row.application, []).append(row.user_id)
        for name, user_ids in sorted(by_app.items()):
            app = self.deprov.apps.get(name)
            if app is not None:
                report._count(self.deprov.reconcile(conn, app, user_ids, now, "sweeper"))
        # whatever reconcile did not re-arm (a grace period still running) is done
        ledger.clear_rechecks(conn, [r.id for r in due], now_us)
        return len(due)


# ---------------------------------------------------------------- running it


async def run(sweeper: Sweeper, stop: asyncio.Event, interval: float, *, once: bool = False) -> int:
    """Sweep every `interval` seconds until `stop` is set; returns the number of sweeps. The sweep itself
    runs in a thread (it is blocking database work, possibly a few seconds of it after a long outage)."""
    sweeps = 0
    log.info("sweeper started (every %.1fs)", interval)
    # The reconcile pass runs beside the loop, not in it: a long pass must not delay TTL revokes.
    beside = None
    if sweeper.schedule is not None and not once:
        beside = asyncio.create_task(reconcile.run_schedule(sweeper.schedule, stop))
    try:
        while not stop.is_set():
            try:
                await asyncio.to_thread(sweeper.sweep_once)
            except Exception:  # the database went away, say: keep the loop alive, try again next interval
                log.exception("sweep failed")
            sweeps += 1
            if once:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        if beside is not None:
            if not stop.is_set():
                beside.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beside
    log.info("sweeper stopped after %d sweep(s)", sweeps)
    return sweeps


def background_task(
    sweeper: Sweeper, interval: float
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """For `create_app(background=[...])`: the in-process sweeper of `scimjit serve`."""

    async def task(stop: asyncio.Event) -> None:
        await run(sweeper, stop, interval)

    return task


def run_sweeper(sweeper: Sweeper, interval: float, *, once: bool = False) -> int:
    """Blocking entry point of `scimjit sweep`: until SIGTERM / SIGINT (or one sweep with `once`)."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await run(sweeper, stop, interval, once=once)

    return asyncio.run(main())
