"""Deprovisioning: access that ends in the directory ends downstream too, in the same transaction.

`Deprovisioner` is the JIT engine's `ChangeListener` (installed as `Services.listener`). Every SCIM write calls
it inside its own transaction, so the outbox events it writes commit if and only if the change does:

- `active` true -> false: `account.disable` for each account of the user; false -> true: `account.enable`
  for each disabled account the user is still entitled to. Deleting the user: `account.delete` for each.
- membership changes of a group some application cares about (entitlement groups and role-mapped groups):
  the accounts of the affected users are *reconciled*: the roles the ledger says downstream has are compared
  with the roles live memberships give now (`role.revoke` / `role.grant` for the difference), and a user with
  no entitling membership left gets the application's `on_unentitled` (`disable` | `delete` | `keep`), after
  its `grace_period` (the ledger's `unentitled_since` marks the start; regaining entitlement clears it).
- a deleted group (possibly with 100,000 members): one set-based UPDATE per application marks the accounts
  of its members for a re-check (`accounts.recheck_at`); the sweeper reconciles them in batches, so the
  DELETE answers quickly and the member list is never walked in the request.

Users who never logged in to an application have no account there, so nothing is ever sent for them.

Shared Signals (delivery/signals.py) ride on the same transactions: deactivation, reactivation, deletion and a
password change of a user, and per application an ending account or changed roles, each write the SETs of the
streams that asked for them (see docs/signals.md for the table), whether or not the user has accounts.

Reconciling is a diff of state, not a replay of changes: the ledger row is locked (`FOR UPDATE` on PostgreSQL)
and compared with live memberships (`store.memberships.live`, the one definition of liveness), so however many
sweepers, SCIM writes and logins touch one user at once, each revoke is written exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from scimjit.clock import Clock, format_micros, to_micros
from scimjit.delivery import outbox
from scimjit.delivery import signals as ssf
from scimjit.delivery.connectors.base import (
    ACCOUNT_DELETE,
    ACCOUNT_DISABLE,
    ACCOUNT_ENABLE,
    ROLE_GRANT,
    ROLE_REVOKE,
)
from scimjit.entitlement import identity, ledger
from scimjit.entitlement.apps import Application
from scimjit.entitlement.policies import AccessSettings, refs_match
from scimjit.store import audit, memberships
from scimjit.store.tables import Row

# Accounts that exist downstream (or are being created there): the ones deprovisioning talks to.
LIVE_STATUSES = ledger.LIVE_STATUSES
# (conn, user id or None, group id or None, now in micros): what ends when a user or group is deleted
EndAccess = Callable[[sa.Connection, str | None, str | None, int], None]
CHUNK = 500  # ids per IN list
INLINE_LIMIT = 1000  # membership changes touching more users than this are reconciled by the sweeper


@dataclass(slots=True)
class Outcome:
    """What one reconcile (or sweep step) wrote."""

    events: int = 0
    revoked: int = 0
    granted: int = 0
    disabled: int = 0
    deleted: int = 0
    deferred: int = 0  # accounts that lost entitlement and wait out the grace period
    user_ids: list[str] = field(default_factory=list)  # users whose account was disabled or deleted

    def add(self, other: Outcome) -> None:
        self.events += other.events
        self.revoked += other.revoked
        self.granted += other.granted
        self.disabled += other.disabled
        self.deleted += other.deleted
        self.deferred += other.deferred
        self.user_ids.extend(other.user_ids)


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def user_document(row: Row) -> dict[str, Any]:
    """The SCIM user (a `users` row) as events carry it (the same shape as the login's events)."""
    return render_user(row.id, row.user_name, row.active, row.data)


def render_user(user_id: str, user_name: str, active: bool, data: dict[str, Any]) -> dict[str, Any]:
    subject = identity.Subject(
        user_id=user_id, user_name=user_name, active=bool(active), data=data, account=None
    )
    return identity.render_user(subject)


class Deprovisioner:
    """The `ChangeListener` of the JIT engine, and the reconcile step the sweeper and grants share."""

    def __init__(
        self,
        apps: Mapping[str, Application],
        clock: Clock,
        settings: AccessSettings | None = None,
        *,
        inline_limit: int = INLINE_LIMIT,
        end_access: EndAccess | None = None,
        signals: ssf.Signals | None = None,
    ) -> None:
        self.apps = apps
        self.signals = signals
        self.end_access = end_access
        self.clock = clock
        self.settings = settings or AccessSettings()
        self.inline_limit = inline_limit

    # ------------------------------------------------------------------------------------ ChangeListener

    def user_changed(self, conn: sa.Connection, before: Row, after: Row) -> None:
        self._signal_user_changed(conn, before, after)
        if bool(before.active) == bool(after.active):
            return
        now = self.clock.now()
        items: list[tuple[dict[str, Any], str | None]] = []
        doc = user_document(after)
        for acc in ledger.of_user(conn, after.id, LIVE_STATUSES):
            app = self.apps.get(acc.application)
            if app is None:
                continue
            if not after.active and acc.status in (ledger.ACTIVE, ledger.PENDING):
                items.append(
                    (outbox.new_event(ACCOUNT_DISABLE, app.name, doc, acc.roles or [], now), after.id)
                )
                ledger.set_status(conn, app.name, after.id, ledger.DISABLED, now)
            elif after.active and acc.status == ledger.DISABLED:
                refs = self.live_refs(conn, app, [after.id], to_micros(now)).get(after.id, set())
                if app.entitled(refs):  # disabled for lost entitlement: the next login decides
                    items.append(
                        (outbox.new_event(ACCOUNT_ENABLE, app.name, doc, acc.roles or [], now), after.id)
                    )
                    ledger.set_status(conn, app.name, after.id, ledger.ACTIVE, now, unentitled_since=None)
        outbox.enqueue_many(conn, items, now=now)

    def user_deleted(self, conn: sa.Connection, before: Row) -> None:
        now = self.clock.now()
        now_us = to_micros(now)
        doc = user_document(before)
        if self.signals is not None:
            self.signals.emit(conn, doc, {ssf.ACCOUNT_PURGED: {}}, now)
        items: list[tuple[dict[str, Any], str | None]] = []
        for acc in ledger.of_user(conn, before.id, (*LIVE_STATUSES, ledger.FAILED)):
            app = self.apps.get(acc.application)
            if app is None:
                continue
            if acc.status != ledger.FAILED:  # a failed create never made an account downstream
                items.append((outbox.new_event(ACCOUNT_DELETE, app.name, doc, [], now), before.id))
            ledger.set_status(
                conn,
                app.name,
                before.id,
                ledger.DELETED,
                now,
                roles=[],
                unentitled_since=None,
                recheck_at=None,
            )
        outbox.enqueue_many(conn, items, now=now)
        self._end_access(conn, before.id, None, now_us)

    def members_changed(
        self, conn: sa.Connection, group: Row, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        apps = self.apps_for_group(group.id, group.display_name)
        if not apps:
            return
        ids = list(dict.fromkeys([*added, *removed]))
        now = self.clock.now()
        for app in apps:
            if len(ids) > self.inline_limit:  # a huge PUT: mark, and let the sweeper work through them
                for chunk in chunks(ids):
                    ledger.mark_recheck(conn, app.name, chunk, to_micros(now))
            else:
                self.reconcile(conn, app, ids, now)

    def group_deleted(self, conn: sa.Connection, group: Row) -> None:
        now_us = to_micros(self.clock.now())
        for app in self.apps_for_group(group.id, group.display_name):
            ledger.mark_recheck(conn, app.name, memberships.live_member_ids(group.pk, now_us), now_us)
        self._end_access(conn, None, group.id, now_us)

    def group_renamed(self, conn: sa.Connection, before: Row, after: Row) -> None:
        """Apps may name groups by displayName: members are rechecked for apps that knew either name."""
        now_us = to_micros(self.clock.now())
        apps = {a.name: a for a in self.apps_for_group(before.id, before.display_name)}
        apps.update((a.name, a) for a in self.apps_for_group(after.id, after.display_name))
        for app in apps.values():
            ledger.mark_recheck(conn, app.name, memberships.live_member_ids(after.pk, now_us), now_us)

    def decides_access(self, group: Row) -> bool:
        return bool(self.apps_for_group(group.id, group.display_name))

    def membership_ttl(self, group: Row) -> int | None:
        return self.settings.ttl_for(group.id, group.display_name)

    # ------------------------------------------------------------------------------------ shared steps

    def apps_for_group(self, group_id: str, display_name: str) -> list[Application]:
        """The applications whose entitlement or role mapping names this group."""
        return [
            app
            for _, app in sorted(self.apps.items())  # name order: the lock order (see reconcile)
            if refs_match((*app.groups, *app.roles), group_id, display_name)
        ]

    def live_refs(
        self, conn: sa.Connection, app: Application, user_ids: Sequence[str], now_us: int
    ) -> dict[str, set[str]]:
        """Per user: lower-cased ids and displayNames of the app's groups they are a live member of (what
        `Application.entitled` / `roles_for` take), in one query."""
        out: dict[str, set[str]] = {u: set() for u in user_ids}
        if not app.group_refs or not user_ids:
            return out
        stmt = memberships.live_groups(
            list(user_ids), now_us, group_ids=[*app.groups, *app.roles], names_ci=app.group_refs
        )
        for member_id, group_id, name_ci in conn.execute(stmt):
            out[member_id].update((group_id.lower(), name_ci))
        return out

    def reconcile(
        self,
        conn: sa.Connection,
        app: Application,
        user_ids: Sequence[str],
        now: datetime,
        actor: str = "jit",
    ) -> Outcome:
        """Bring the accounts of `user_ids` in `app` in line with their live memberships: role revokes and
        grants, and `on_unentitled` once the grace period is over. Users without an account are skipped."""
        result = Outcome()
        if not user_ids:
            return result
        now_us = to_micros(now)
        rows = ledger.for_reconcile(conn, app.name, user_ids)
        if not rows:
            return result
        ids = [r.user_id for r in rows]
        refs = self.live_refs(conn, app, ids, now_us)
        grace_us = int(app.grace_period * 1_000_000)
        items: list[tuple[dict[str, Any], str | None]] = []
        signalled: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]] = []  # Shared Signals, per user
        updates: dict[tuple[tuple[str, ...], str, int | None, int | None], list[int]] = {}
        for acc in rows:
            mine = refs.get(acc.user_id, set())
            old_roles = list(acc.roles or ())
            new_roles = app.roles_for(mine)
            status, since, recheck = acc.status, acc.unentitled_since, None
            ending: str | None = None
            if app.entitled(mine) or app.on_unentitled == "keep":
                since = None
            else:
                since = since if since is not None else now_us
                if now_us >= since + grace_us:
                    since = None
                    if app.on_unentitled == "delete":
                        ending, status, new_roles = ACCOUNT_DELETE, ledger.DELETED, []
                    elif status != ledger.DISABLED:
                        ending, status = ACCOUNT_DISABLE, ledger.DISABLED
                else:
                    recheck = since + grace_us
                    result.deferred += 1
            revoked = [] if ending == ACCOUNT_DELETE else sorted(set(old_roles) - set(new_roles))
            granted = sorted(set(new_roles) - set(old_roles))
            calls = [(ROLE_REVOKE, r) for r in revoked] + [(ROLE_GRANT, r) for r in granted]
            if ending:
                calls.append((ending, None))
                result.user_ids.append(acc.user_id)
                result.deleted += ending == ACCOUNT_DELETE
                result.disabled += ending == ACCOUNT_DISABLE
            if calls:
                doc = render_user(acc.user_id, acc.p_user_name, acc.p_active, acc.p_data)
                for kind, role in calls:
                    extra = {"role": role} if role is not None else {}
                    event = outbox.new_event(kind, app.name, doc, new_roles, now, **extra)
                    items.append((event, acc.user_id))
                signalled.append((doc, access_signal(app, ending, new_roles)))
            result.revoked += len(revoked)
            result.granted += len(granted)
            changed = (
                old_roles != new_roles
                or status != acc.status
                or since != acc.unentitled_since
                or recheck != acc.recheck_at
            )
            if changed:
                updates.setdefault((tuple(new_roles), status, since, recheck), []).append(acc.id)
        result.events = outbox.enqueue_many(conn, items, now=now)
        if self.signals is not None:
            self.signals.emit_many(conn, signalled, now)
        # set-based: one UPDATE per distinct outcome (an expiry batch has one or two), not one per account
        for (roles, status, since, recheck), ids in updates.items():
            ledger.set_many(
                conn,
                ids,
                now_us,
                roles=list(roles),
                status=status,
                unentitled_since=since,
                recheck_at=recheck,
            )
        if result.user_ids:
            audit.record(
                conn,
                actor=actor,
                action="account.unentitled",
                outcome="success",
                resource_type="Application",
                resource_id=app.name,
                details={
                    "onUnentitled": app.on_unentitled,
                    "disabled": result.disabled,
                    "deleted": result.deleted,
                    "userIds": audit.capped(result.user_ids),
                },
                at_micros=now_us,
            )
        return result

    def reclaim_idle(
        self, conn: sa.Connection, app: Application, now: datetime, limit: int, actor: str = "sweeper"
    ) -> Outcome:
        """One batch of `app`'s idle accounts (no login for `idle_after`) gets `on_idle`: the same
        `account.disable` / `account.delete` events deprovisioning sends, written with the ledger change,
        and one `account.idle` audit record naming why. The next login re-enables a disabled account and
        re-creates a deleted one, as after any deprovisioning (provisioning/login.py)."""
        result = Outcome()
        if app.idle_after is None:
            return result
        now_us = to_micros(now)
        cutoff_us = now_us - int(app.idle_after * 1_000_000)
        rows = ledger.idle(conn, app.name, cutoff_us, limit, lock=True)
        if not rows:
            return result
        delete = app.on_idle == "delete"
        kind = ACCOUNT_DELETE if delete else ACCOUNT_DISABLE
        items: list[tuple[dict[str, Any], str | None]] = []
        signalled: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]] = []
        for acc in rows:
            doc = render_user(acc.user_id, acc.p_user_name, acc.p_active, acc.p_data)
            roles = [] if delete else list(acc.roles or ())
            items.append((outbox.new_event(kind, app.name, doc, roles, now), acc.user_id))
            signalled.append((doc, access_signal(app, kind, roles)))  # the account ended there: sessions too
            result.user_ids.append(acc.user_id)
        result.events = outbox.enqueue_many(conn, items, now=now)
        if self.signals is not None:
            self.signals.emit_many(conn, signalled, now)
        ids = [acc.id for acc in rows]
        if delete:
            result.deleted = len(rows)
            ledger.set_many(
                conn, ids, now_us, status=ledger.DELETED, roles=[], unentitled_since=None, recheck_at=None
            )
        else:
            result.disabled = len(rows)
            ledger.set_many(conn, ids, now_us, status=ledger.DISABLED)
        audit.record(
            conn,
            actor=actor,
            action="account.idle",
            outcome="success",
            resource_type="Application",
            resource_id=app.name,
            details={
                "reason": "idle",
                "onIdle": app.on_idle,
                "idleAfter": app.idle_after,
                "idleSince": format_micros(cutoff_us),
                "disabled": result.disabled,
                "deleted": result.deleted,
                "userIds": audit.capped(result.user_ids),
                "lastSeen": audit.capped([format_micros(ledger.last_seen(a)) for a in rows]),
            },
            at_micros=now_us,
        )
        return result

    # ------------------------------------------------------------------------------------ signals

    def _signal_user_changed(self, conn: sa.Connection, before: Row, after: Row) -> None:
        """SETs for a changed user: RISC account-disabled and CAEP session-revoked when it is deactivated,
        account-enabled when it is reactivated, CAEP credential-change when its password was set or cleared."""
        if self.signals is None:
            return
        events: dict[str, dict[str, Any]] = {}
        if bool(before.active) != bool(after.active):
            if after.active:
                events[ssf.ACCOUNT_ENABLED] = {}
            else:
                events[ssf.ACCOUNT_DISABLED] = {}
                events[ssf.SESSION_REVOKED] = {
                    "initiating_entity": "admin",
                    "reason_admin": {"en": "The user was deactivated in the directory"},
                }
        if before.password_hash != after.password_hash:
            change = "create" if before.password_hash is None else "update"
            events[ssf.CREDENTIAL_CHANGE] = {
                "credential_type": "password",
                "change_type": "delete" if after.password_hash is None else change,
                "initiating_entity": "admin",
            }
        if events:
            self.signals.emit(conn, user_document(after), events, self.clock.now())

    # ------------------------------------------------------------------------------------ helpers

    def _end_access(
        self, conn: sa.Connection, user_id: str | None, group_id: str | None, now_us: int
    ) -> None:
        """The user or group is gone: time-bound access ends with it. Grants and requests belong to the
        access concern above this one, which hands its step in as `end_access`."""
        if self.end_access is not None:
            self.end_access(conn, user_id, group_id, now_us)


def access_signal(app: Application, ending: str | None, roles: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The SET events for one application's account: CAEP session-revoked (scoped to the application) when the
    account is disabled or deleted there, else CAEP token-claims-change with the `roles` it has now."""
    if ending is not None:
        reason = {"en": f"Access to application {app.name} ended"}
        body = {"initiating_entity": "policy", "reason_admin": reason, "application": app.name}
        return {ssf.SESSION_REVOKED: body}
    claims = {"roles": list(roles)}
    return {
        ssf.TOKEN_CLAIMS_CHANGE: {"claims": claims, "initiating_entity": "policy", "application": app.name}
    }
