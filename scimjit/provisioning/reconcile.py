"""The reconcile pass: drift is repaired, not only prevented.

Every SCIM write, login, grant and sweep keeps the ledger and the outbox in step with the directory in its own
transaction; this pass is the safety net for whatever slipped past them (a race, a restored database, a
ledger row whose user was deleted without the listener, a downstream changed by hand). For each application
it pages through the ledger (`accounts`, keyset pagination by id, `batch_size` rows per transaction; never the
whole table) and compares each account with what the directory says *now*:

- the user no longer exists (an outer join on `users`, so orphaned rows are visited too): `account.delete`
  (as deleting the user does), ledger `deleted`;
- the user is inactive and the account `active` / `pending`: `account.disable` (as deactivation does);
- roles and entitlement: the deprovisioner's own `reconcile` (live memberships, SCIM and live grants, expired
  ones excluded by `store.memberships.live` exactly as reads do): `role.revoke` / `role.grant` for the
  difference, `on_unentitled` once the grace period is over;
- the profile: an `active` account whose ledger `profile_hash` differs from the SCIM user's gets
  `account.update` (what the next login would send).

Where the application's connector implements the optional `reconcile(call)` (docs/connectors.md), the downstream
state it reports is compared with the ledger too: an account downstream that the ledger says is deleted gets
`account.delete` again, enabled downstream but `disabled` in the ledger gets `account.disable`, missing
downstream but `active` in the ledger gets `account.create` (ledger back to `pending`), disabled downstream
but `active` gets `account.enable`; managed roles downstream that the ledger lacks are revoked, ledger roles
missing downstream are granted. Downstream calls happen outside any transaction, before the batch's.

**Convergence with in-flight work.** The ledger is the intent: every writer changes it in the transaction that
queues its events, and this pass locks the batch's rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL: a row another
writer holds is skipped and revisited next run) and re-reads them, so a repair is queued at most once and always
behind the events already pending for that account (the outbox delivers one account's events in order). The
downstream comparison, whose snapshot lags pending events by nature, is skipped for an account with pending
events, or whose ledger row changed between the downstream read and the batch's transaction. Nothing here
re-enables an account the directory disabled: an account is only enabled when the ledger says `active` and the
downstream says disabled (deprovisioning always wins; a login re-enables).

**Several processes.** On PostgreSQL a run holds a session advisory lock (per schema) for its duration; a
second process finds it taken and skips its turn. The schedule (`[jit] reconcile_interval`, default 1h, 0 turns
it off) is read from the audit trail's last `reconcile.run` record, so it is shared by every process and
survives restarts. On SQLite each batch is one BEGIN IMMEDIATE transaction (a single writer) and the pending
check above keeps a second process from repeating a downstream repair.

Each repair writes one `reconcile.repair` audit record (the account, what differed, the events sent) in the
batch's transaction and counts in `scimjit_reconcile_repairs_total{application,source,kind}`. `dry_run` runs
the same code and rolls each batch back: it reports what would be repaired and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa

from scimjit.clock import Clock, from_micros, to_micros
from scimjit.delivery import outbox
from scimjit.delivery.connectors.base import (
    ACCOUNT_CREATE,
    ACCOUNT_DELETE,
    ACCOUNT_DISABLE,
    ACCOUNT_ENABLE,
    ACCOUNT_UPDATE,
    ROLE_GRANT,
    ROLE_REVOKE,
    Call,
    Connector,
    Outcome,
)
from scimjit.entitlement import ledger
from scimjit.entitlement.apps import Application
from scimjit.metrics import RECONCILE_REPAIRS
from scimjit.provisioning.deprovision import LIVE_STATUSES, Deprovisioner, render_user
from scimjit.scim.schema import USER_URN
from scimjit.store import audit
from scimjit.store import users as user_rows
from scimjit.store.db import Database
from scimjit.store.tables import Row, audit_log

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.reconcile")

REPAIR_ACTION = "reconcile.repair"
RUN_ACTION = "reconcile.run"
ACTOR = "reconcile"
DEFAULT_BATCH = 500
MAX_LISTED = 1000  # repairs kept in a report for listing (the counts are always exact)
RECONCILE_CALL = "account.reconcile"  # the `type` of the event document a connector's reconcile gets


class ReconcileError(ValueError):
    """A caller's mistake (an unknown application): a message, never a traceback."""


@dataclass(slots=True)
class Repair:
    """One account brought back in line: what differed and the events queued for it."""

    application: str
    user_id: str
    user_name: str | None
    account_id: int
    source: str  # "scim" (the directory and grants) or "downstream" (the connector's report)
    differences: list[str]
    events: list[dict[str, Any]]  # {"type", "eventId", "role"?}

    def to_json(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "userId": self.user_id,
            "userName": self.user_name,
            "accountId": self.account_id,
            "source": self.source,
            "differences": list(self.differences),
            "events": [dict(e) for e in self.events],
        }


@dataclass(slots=True)
class ReconcileReport:
    ran: bool = True  # False: another process holds the reconcile lock; nothing was done
    dry_run: bool = False
    total: int = 0  # ledger rows of the applications in scope when the run started
    accounts: int = 0  # ledger rows visited
    repairs: int = 0  # accounts repaired (or, dry run, that would be)
    events: int = 0  # outbox events queued (or that would be)
    skipped: int = 0  # rows another writer held (PostgreSQL SKIP LOCKED): revisited next run
    downstream_checked: int = 0  # accounts compared with a connector's report
    downstream_errors: int = 0  # connector reconcile calls that failed (compared with the ledger only)
    seconds: float = 0.0
    items: list[Repair] = field(default_factory=list)  # the first MAX_LISTED repairs

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["items"] = [r.to_json() for r in self.items]
        return out


@dataclass(frozen=True, slots=True)
class Visited:
    """A locked ledger row as the repair step compares it, with its user's columns (`u_*` None when the
    user is gone)."""

    id: int
    application: str
    user_id: str
    user_name: str | None
    downstream_id: str | None
    status: str
    roles: list[str]
    profile_hash: str | None
    version: int
    u_id: str | None
    u_user_name: str | None
    u_active: bool | None
    u_data: dict[str, Any] | None

    @classmethod
    def of(cls, account: Row, person: Row | Visited | None) -> Visited:
        """`account` (a ledger row) with `person`: a `users` row (id, user_name, active, data), or the user
        columns of an earlier `Visited` of the same account."""
        if isinstance(person, Visited):
            user: tuple[Any, Any, Any, Any] = (
                person.u_id,
                person.u_user_name,
                person.u_active,
                person.u_data,
            )
        elif person is not None:
            user = (person.id, person.user_name, person.active, person.data)
        else:
            user = (None, None, None, None)
        return cls(
            account.id,
            account.application,
            account.user_id,
            account.user_name,
            account.downstream_id,
            account.status,
            list(account.roles or ()),
            account.profile_hash,
            account.version,
            *user,
        )


class _Rollback(Exception):
    """Raised inside a dry run's transaction so the database rolls it back."""


class Reconciler:
    def __init__(
        self,
        db: Database,
        deprov: Deprovisioner,
        connectors: Mapping[str, Connector],
        clock: Clock,
        *,
        batch_size: int = DEFAULT_BATCH,
        concurrency: int = 8,
    ) -> None:
        self.db = db
        self.deprov = deprov
        self.connectors = connectors
        self.clock = clock
        self.batch_size = batch_size
        self.concurrency = concurrency

    @property
    def apps(self) -> Mapping[str, Application]:
        return self.deprov.apps

    async def run(
        self,
        *,
        application: str | None = None,
        dry_run: bool = False,
        progress: Callable[[ReconcileReport], None] | None = None,
    ) -> ReconcileReport:
        """One pass over the ledger of `application` (default: every application)."""
        if application is not None and application not in self.apps:
            known = ", ".join(sorted(self.apps)) or "none configured"
            raise ReconcileError(f"unknown application {application!r} (configured: {known})")
        names = [application] if application is not None else sorted(self.apps)
        report = ReconcileReport(dry_run=dry_run)
        started = time.perf_counter()
        lock = await asyncio.to_thread(self._acquire)
        if lock is None:
            report.ran = False
            log.info("reconcile: another process is running it; skipping")
            return report
        try:
            report.total = await asyncio.to_thread(self._count, names)
            await self._pass(names, report, dry_run, progress)
            report.seconds = time.perf_counter() - started
            if not dry_run:
                await asyncio.to_thread(self._record_run, report, application)
        finally:
            await asyncio.to_thread(self._release, lock)
        if report.repairs:
            log.info("reconcile: %d repair(s), %d event(s)", report.repairs, report.events)
        return report

    async def _pass(
        self,
        names: Sequence[str],
        report: ReconcileReport,
        dry_run: bool,
        progress: Callable[[ReconcileReport], None] | None,
    ) -> None:
        """One scan of the ledger by id (every application in scope together: one pass over the table, not
        one per application), batch by batch."""
        asks: dict[str, Any] = {}
        for name in names:
            connector = self.connectors.get(name)
            asks[name] = getattr(connector, "reconcile", None) if connector is not None else None
        after = 0
        while True:
            page, busy = await asyncio.to_thread(self._page, names, after)
            if not page:
                return
            after = page[-1].id
            by_app: dict[str, list[Row]] = {}
            for row in page:
                by_app.setdefault(row.application, []).append(row)
            states: dict[int, tuple[int, Mapping[str, Any]]] = {}
            for name, rows in sorted(by_app.items()):
                ask = asks.get(name)
                if ask is None:
                    continue
                found, supported = await self._downstream(self.apps[name], ask, rows, busy, report)
                states.update(found)
                if not supported:
                    asks[name] = None  # the connector keeps no readable state (a webhook): stop asking
            parts = [(self.apps[name], [r.id for r in rows]) for name, rows in sorted(by_app.items())]
            repairs, skipped = await asyncio.to_thread(self._repair_batch, parts, states, dry_run)
            report.accounts += len(page)
            report.skipped += skipped
            for repair in repairs:
                report.repairs += 1
                report.events += len(repair.events)
                if len(report.items) < MAX_LISTED:
                    report.items.append(repair)
                if not dry_run:
                    for event in repair.events:
                        RECONCILE_REPAIRS.labels(
                            application=repair.application, source=repair.source, kind=event["type"]
                        ).inc()
            if progress is not None:
                progress(report)
            if len(page) < self.batch_size:
                return

    # ------------------------------------------------------------------------------------ reading

    def _count(self, names: Sequence[str]) -> int:
        with self.db.read() as conn:
            return ledger.count(conn, names)

    def _page(self, names: Sequence[str], after: int) -> tuple[list[Row], set[str]]:
        """The next batch of ledger rows (by id) of these applications, with their user if it still exists,
        and the ordering keys among them with pending events: what the downstream comparison needs, read
        without locks. The application test is wrapped in coalesce() so SQLite walks the primary key
        (`id > after ... LIMIT n`) instead of the (application, user_id) index plus a sort of the whole
        application per batch). The batch is chosen first and joined to users after, so no planner joins
        the rest of the table before applying the LIMIT."""
        with self.db.read() as conn:
            rows = ledger.page(conn, names, after, self.batch_size)
            busy = outbox.pending_keys(conn, [outbox.ordering_key(r.application, r.user_id) for r in rows])
        return rows, busy

    async def _downstream(
        self,
        app: Application,
        ask: Callable[[Call], Coroutine[Any, Any, Any]],
        page: Sequence[Row],
        busy: set[str],
        report: ReconcileReport,
    ) -> tuple[dict[int, tuple[int, Mapping[str, Any]]], bool]:
        """Ask the connector for the downstream state of the accounts worth comparing (settled: no pending
        events; existing downstream as far as the ledger knows). Returns {account id: (version, details)}
        and False when the connector says it has no state to report."""
        wanted = [
            r
            for r in page
            if outbox.ordering_key(app.name, r.user_id) not in busy
            and r.status in (ledger.ACTIVE, ledger.DISABLED, ledger.DELETED)
        ]
        out: dict[int, tuple[int, Mapping[str, Any]]] = {}
        if not wanted:
            return out, True
        gate = asyncio.Semaphore(self.concurrency)
        now = self.clock.now()

        async def one(row: Row) -> tuple[Row, Any]:
            event = outbox.new_event(RECONCILE_CALL, app.name, _document(row), list(row.roles or ()), now)
            async with gate:
                try:
                    return row, await ask(Call(event, row.downstream_id))
                except Exception as exc:  # a failing downstream: compare with the ledger only, this run
                    log.warning("reconcile: %s: connector reconcile failed: %s", app.name, exc)
                    return row, exc

        supported = True
        for row, result in await asyncio.gather(*(one(r) for r in wanted)):
            if isinstance(result, Exception):
                report.downstream_errors += 1
                continue
            details = getattr(result, "details", None) or {}
            if getattr(result, "outcome", None) != Outcome.RECONCILED or details.get("supported") is False:
                supported = False
                continue
            if not isinstance(details.get("exists"), bool):
                report.downstream_errors += 1  # outside the contract: `exists` is required
                continue
            report.downstream_checked += 1
            out[row.id] = (row.version, details)
        return out, supported

    # ------------------------------------------------------------------------------------ repairing

    def _repair_batch(
        self,
        parts: Sequence[tuple[Application, Sequence[int]]],
        states: Mapping[int, tuple[int, Mapping[str, Any]]],
        dry_run: bool,
    ) -> tuple[list[Repair], int]:
        """One batch in one transaction, application by application in name order (the lock order of
        deprovisioning); a dry run rolls it back."""
        try:
            with self.db.write() as conn:
                repairs: list[Repair] = []
                skipped = 0
                for app, ids in parts:
                    found, missed = self._repair(conn, app, ids, states)
                    repairs.extend(found)
                    skipped += missed
                if dry_run:
                    raise _Rollback(repairs, skipped)
                return repairs, skipped
        except _Rollback as done:
            return done.args[0], done.args[1]

    def _repair(
        self,
        conn: sa.Connection,
        app: Application,
        ids: Sequence[int],
        states: Mapping[int, tuple[int, Mapping[str, Any]]],
    ) -> tuple[list[Repair], int]:
        """One batch, one transaction: lock the rows, compare, queue the events, change the ledger, audit."""
        now = self.clock.now()
        now_us = to_micros(now)
        rows = self._lock_rows(conn, ids)
        skipped = len(ids) - len(rows)
        if not rows:
            return [], skipped
        keys = [outbox.ordering_key(app.name, r.user_id) for r in rows]
        busy = outbox.pending_keys(conn, keys)
        repairs: dict[int, Repair] = {}

        def repair(row: Visited, source: str, difference: str) -> Repair:
            found = repairs.get(row.id)
            if found is None or found.source != source:
                found = Repair(app.name, row.user_id, row.user_name, row.id, source, [], [])
                repairs[row.id] = found
            found.differences.append(difference)
            return found

        # 1. users that are gone or inactive: what deleting / deactivating them would have sent
        items: list[tuple[dict[str, Any], str | None]] = []
        for row in rows:
            if row.u_id is None and row.status != ledger.DELETED:
                rep = repair(row, "scim", "user no longer exists")
                if row.status != ledger.FAILED:  # a failed create never made an account downstream
                    event = outbox.new_event(ACCOUNT_DELETE, app.name, _document(row), [], now)
                    items.append((event, row.user_id))
                    rep.events.append(_summary(event))
                ledger.set_status(
                    conn,
                    app.name,
                    row.user_id,
                    ledger.DELETED,
                    now,
                    roles=[],
                    unentitled_since=None,
                    recheck_at=None,
                )
            elif row.u_id is not None and not row.u_active and row.status in (ledger.ACTIVE, ledger.PENDING):
                rep = repair(row, "scim", "user is inactive, account is " + row.status)
                event = outbox.new_event(ACCOUNT_DISABLE, app.name, _document(row), row.roles or [], now)
                items.append((event, row.user_id))
                rep.events.append(_summary(event))
                ledger.set_status(conn, app.name, row.user_id, ledger.DISABLED, now)
        outbox.enqueue_many(conn, items, now=now)

        # 2. roles and entitlement: the deprovisioner's reconcile, the one definition of both
        present = [r for r in rows if r.u_id is not None and r.status in LIVE_STATUSES]
        if present:
            before = outbox.pending_ids(conn, [outbox.ordering_key(app.name, r.user_id) for r in present])
            self.deprov.reconcile(conn, app, [r.user_id for r in present], now, ACTOR)
            by_user = {r.user_id: r for r in present}
            for event in self._new_events(conn, app.name, list(by_user), before):
                row = by_user[event["user_id"]]
                repair(row, "scim", _why(event, app)).events.append(event["summary"])

        # 3. the profile: what the next login would send as account.update
        current = self._reload(conn, rows)
        items = []
        for row in rows:
            now_row = current.get(row.id)
            if (
                now_row is None
                or now_row.u_id is None
                or now_row.status != ledger.ACTIVE
                or now_row.profile_hash is None
            ):
                continue
            doc = _document(now_row)
            phash = ledger.profile_hash(doc)
            if phash == now_row.profile_hash:
                continue
            event = outbox.new_event(ACCOUNT_UPDATE, app.name, doc, now_row.roles or [], now)
            items.append((event, row.user_id))
            repair(row, "scim", "profile changed since it was last sent").events.append(_summary(event))
            ledger.set_many(conn, [row.id], now_us, profile_hash=phash)
        outbox.enqueue_many(conn, items, now=now)

        # 4. the downstream's report, for settled accounts only
        items = []
        managed = {role for roles in app.roles.values() for role in roles}
        for row in rows:
            state = states.get(row.id)
            now_row = current.get(row.id)
            if state is None or now_row is None or row.id in repairs:
                continue
            version, details = state
            if now_row.version != version or outbox.ordering_key(app.name, row.user_id) in busy:
                continue  # changed since the downstream was read, or events in flight: next run
            for kind, role, difference in _downstream_diff(now_row, details, managed):
                extra = {"role": role} if role is not None else {}
                if kind == ACCOUNT_CREATE:
                    extra["mode"] = app.on_first_login
                roles = [] if kind == ACCOUNT_DELETE else list(now_row.roles or ())
                event = outbox.new_event(kind, app.name, _document(now_row), roles, now, **extra)
                items.append((event, row.user_id))
                repair(row, "downstream", difference).events.append(_summary(event))
                if kind == ACCOUNT_CREATE:
                    ledger.set_status(conn, app.name, row.user_id, ledger.PENDING, now)
        outbox.enqueue_many(conn, items, now=now)

        for rep in repairs.values():
            audit.record(
                conn,
                actor=ACTOR,
                action=REPAIR_ACTION,
                outcome="success",
                resource_type="User",
                resource_id=rep.user_id,
                details={
                    "application": rep.application,
                    "accountId": rep.account_id,
                    "source": rep.source,
                    "differences": rep.differences,
                    "events": rep.events,
                },
                at_micros=now_us,
            )
        return list(repairs.values()), skipped

    def _lock_rows(self, conn: sa.Connection, ids: Sequence[int]) -> list[Visited]:
        """The ledger rows (in id order, the lock order of deprovisioning), each with its user's columns
        (`u_id` None when the user is gone). Two primary-key lookups rather than one outer join, so the
        plan cannot turn into a scan of both tables."""
        rows = ledger.by_ids(conn, ids, lock=True)
        people = user_rows.profiles(conn, [r.user_id for r in rows])
        return [Visited.of(row, people.get(row.user_id)) for row in rows]

    def _reload(self, conn: sa.Connection, rows: Sequence[Visited]) -> dict[int, Visited]:
        """The locked rows as they are now (after this transaction's own changes), with the same user."""
        before = {r.id: r for r in rows}
        return {row.id: Visited.of(row, before[row.id]) for row in ledger.by_ids(conn, [r.id for r in rows])}

    def _new_events(
        self, conn: sa.Connection, application: str, user_ids: Sequence[str], before: set[int]
    ) -> list[dict[str, Any]]:
        """The events the deprovisioner's reconcile just queued for these users (in this transaction)."""
        keys = [outbox.ordering_key(application, u) for u in user_ids]
        return [
            {"user_id": r.user_id, "summary": _summary(r.payload), "payload": r.payload}
            for r in outbox.pending_of(conn, keys)
            if r.id not in before
        ]

    # ------------------------------------------------------------------------------------ run bookkeeping

    def _acquire(self) -> Any:
        """PostgreSQL: a session advisory lock (keyed by the schema) on a connection of its own, held for the
        run; None if another process holds it. SQLite: nothing to take (a single writer)."""
        if self.db.dialect != "postgresql":
            return True
        conn = self.db.engine.connect()
        try:
            got = conn.execute(_TRY_LOCK).scalar()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return None
        return conn

    def _release(self, lock: Any) -> None:
        if isinstance(lock, sa.Connection):
            with contextlib.closing(lock):
                lock.execute(_UNLOCK)
                lock.commit()

    def last_run(self) -> datetime | None:
        """When the last (non-dry) run finished, from the audit trail (indexed on `action`)."""
        with self.db.read() as conn:
            at = conn.execute(
                sa.select(sa.func.max(audit_log.c.at)).where(audit_log.c.action == RUN_ACTION)
            ).scalar()
        return from_micros(at) if at is not None else None

    def _record_run(self, report: ReconcileReport, application: str | None) -> None:
        facts = report.to_json()
        facts.pop("items")
        facts.pop("dry_run")
        with self.db.write() as conn:
            audit.record(
                conn,
                actor=ACTOR,
                action=RUN_ACTION,
                outcome="success",
                resource_type="Application" if application else None,
                resource_id=application,
                details=facts,
                at_micros=to_micros(self.clock.now()),
            )


_LOCK_KEY = "hashtext('scimjit.reconcile:' || current_schema())"
_TRY_LOCK = sa.text(f"SELECT pg_try_advisory_lock({_LOCK_KEY})")
_UNLOCK = sa.text(f"SELECT pg_advisory_unlock({_LOCK_KEY})")


def _document(row: Row | Visited) -> dict[str, Any]:
    """The user as events carry it; for a user who is gone, what the ledger still knows (id, userName)."""
    if row.u_id is not None:  # the user exists: all of its columns are there
        return render_user(
            row.u_id, cast(str, row.u_user_name), cast(bool, row.u_active), cast(dict[str, Any], row.u_data)
        )
    return {"schemas": [USER_URN], "id": row.user_id, "userName": row.user_name}


def _summary(event: Mapping[str, Any]) -> dict[str, Any]:
    out = {"type": event["type"], "eventId": event["id"]}
    if event.get("role") is not None:
        out["role"] = event["role"]
    return out


def _why(event: Mapping[str, Any], app: Application) -> str:
    kind, role = event["summary"]["type"], event["summary"].get("role")
    if kind == ROLE_REVOKE:
        return f"ledger has role {role!r}, live memberships do not give it"
    if kind == ROLE_GRANT:
        return f"live memberships give role {role!r}, ledger lacks it"
    return f"not entitled by any live membership (on_unentitled = {app.on_unentitled!r})"


def _downstream_diff(
    row: Visited, details: Mapping[str, Any], managed: set[str]
) -> list[tuple[str, str | None, str]]:
    """(event type, role, what differed) for a settled account and the connector's report of it."""
    exists, active = details.get("exists"), details.get("active")
    status = row.status
    if status == ledger.DELETED:
        return [(ACCOUNT_DELETE, None, "deleted in the ledger, exists downstream")] if exists else []
    if status not in (ledger.ACTIVE, ledger.DISABLED):
        return []
    if not exists:
        if status == ledger.ACTIVE:
            return [(ACCOUNT_CREATE, None, "active in the ledger, missing downstream")]
        return []  # disabled and gone downstream: no access either way
    out: list[tuple[str, str | None, str]] = []
    if status == ledger.DISABLED and active is True:
        out.append((ACCOUNT_DISABLE, None, "disabled in the ledger, enabled downstream"))
    elif status == ledger.ACTIVE and active is False:
        out.append((ACCOUNT_ENABLE, None, "active in the ledger, disabled downstream"))
    reported = details.get("roles")
    if isinstance(reported, list):
        have = {str(r) for r in reported}
        want = set(row.roles or ())
        for role in sorted((have & managed) - want):
            out.append((ROLE_REVOKE, role, f"role {role!r} downstream, not in the ledger"))
        for role in sorted(want - have):
            out.append((ROLE_GRANT, role, f"role {role!r} in the ledger, missing downstream"))
    return out


# ---------------------------------------------------------------- the schedule


class Schedule:
    """Runs the pass every `interval` seconds of the injected clock, shared by all processes through the
    audit trail's last `reconcile.run` (so restarts do not reset it and N processes do not run it N times).
    With no run recorded yet, the first is one interval after the first tick (a process that just started
    does not begin with a full pass over the ledger). `tick()` is cheap when nothing is due (no query until
    the next run could be due), so a loop may call it often."""

    def __init__(self, reconciler: Reconciler, interval: float, *, retry_busy: float = 60.0) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self.retry_busy = retry_busy
        self._next_check: datetime | None = None
        self._first_tick: datetime | None = None

    async def tick(self) -> ReconcileReport | None:
        """Run the pass if it is due; the report, or None if it was not due (or is disabled)."""
        if self.interval <= 0:
            return None
        now = self.reconciler.clock.now()
        if self._next_check is not None and now < self._next_check:
            return None
        if self._first_tick is None:
            self._first_tick = now
        last = await asyncio.to_thread(self.reconciler.last_run) or self._first_tick
        if now < last + timedelta(seconds=self.interval):
            self._next_check = last + timedelta(seconds=self.interval)
            return None
        batches = 0

        def progress(r: ReconcileReport) -> None:  # a long scheduled pass shows how far it got
            nonlocal batches
            batches += 1
            if batches % 20 == 0:
                log.info("reconciled %d/%d accounts, %d repairs", r.accounts, r.total, r.repairs)

        report = await self.reconciler.run(progress=progress)
        wait = self.interval if report.ran else min(self.interval, self.retry_busy)
        self._next_check = self.reconciler.clock.now() + timedelta(seconds=wait)
        return report


async def run_schedule(schedule: Schedule, stop: asyncio.Event, poll: float = 30.0) -> None:
    """Tick the schedule until `stop` (the background task of `scimjit serve` and `scimjit sweep`)."""
    log.info("reconcile scheduled every %.0fs", schedule.interval)
    while not stop.is_set():
        try:
            await schedule.tick()
        except Exception:  # the database went away, say: try again at the next poll
            log.exception("reconcile failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(poll, schedule.interval))


def background_task(schedule: Schedule) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """For `create_app(background=[...])`: the in-process reconcile schedule."""

    async def task(stop: asyncio.Event) -> None:
        await run_schedule(schedule, stop)

    return task
