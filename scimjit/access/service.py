"""Just-in-time access as a service: grants, requests and the sweeper over one database, one clock and the
JIT engine's applications. The HTTP routes (`scimjit.http.jit.access`) and the CLI
(`scimjit.cli.access`) both call these methods; each is one transaction.

Wiring (what `scimjit serve` and the app factory do): `install(services)` puts the `Deprovisioner` in
`Services.listener` (so SCIM writes deprovision in their own transaction) and returns the background tasks
to pass to `create_app(background=[...])` (the in-process sweeper, when `run_sweeper` is on).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from scimjit.access import grants, requests
from scimjit.access.sweeper import Sweeper, background_task
from scimjit.clock import to_micros
from scimjit.engine import JitEngine, get_engine
from scimjit.entitlement import identity
from scimjit.entitlement.policies import AccessSettings
from scimjit.jiterrors import JitError
from scimjit.provisioning.deprovision import Deprovisioner
from scimjit.provisioning.reconcile import Reconciler, Schedule
from scimjit.store import audit

BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
_BY_ENGINE: weakref.WeakKeyDictionary[JitEngine, Access] = weakref.WeakKeyDictionary()


class Access:
    def __init__(self, engine: JitEngine) -> None:
        """Raises ConfigError if the `[jit]` access settings or policies are wrong."""
        self.engine = engine
        self.db = engine.db
        self.clock = engine.clock
        self.settings = AccessSettings.from_config(engine.settings.jit, engine.apps)
        self.deprovisioner = Deprovisioner(
            engine.apps, engine.clock, self.settings, end_access=requests.end_access
        )
        self.sweeper = Sweeper(
            engine.db, self.deprovisioner, engine.clock, audit_retention=engine.settings.audit_retention
        )
        self.reconciler = Reconciler(engine.db, self.deprovisioner, engine.connectors, engine.clock)
        interval = engine.settings.jit.reconcile_interval
        if interval > 0:  # wherever the sweeper loop runs, the reconcile runs beside it
            self.sweeper.schedule = Schedule(self.reconciler, interval)

    # ------------------------------------------------------------------------------------ grants

    def create_grant(
        self,
        *,
        user: Any,
        group: Any,
        duration: Any = None,
        expires_at: Any = None,
        starts_at: Any = None,
        justification: Any = None,
        actor: str,
        http_request_id: str | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        if justification is not None and not isinstance(justification, str):
            raise JitError(400, "invalid_request", "`justification` must be a string")
        start, end = grants.window(now, duration=duration, expires_at=expires_at, starts_at=starts_at)
        with self.db.write() as conn:
            row = grants.create(
                conn,
                self.deprovisioner,
                user=grants.find_user(conn, user),
                group=grants.find_group(conn, group),
                starts_at=start,
                expires_at=end,
                justification=justification,
                actor=actor,
                now=now,
                http_request_id=http_request_id,
            )
            return grants.render(row, to_micros(now))

    def extend_grant(
        self,
        grant_id: str,
        *,
        duration: Any = None,
        expires_at: Any = None,
        actor: str,
        http_request_id: str | None = None,
    ) -> dict[str, Any]:
        """A new end: `expiresAt`, or `duration` more than the current end."""
        now = self.clock.now()
        if (duration is None) == (expires_at is None):
            raise JitError(400, "invalid_request", "give either `duration` (added to the end) or `expiresAt`")
        with self.db.write() as conn:
            if duration is not None:
                current = grants.get(conn, grant_id)
                end = current.expires_at + int(grants.seconds(duration) * 1_000_000)
            else:
                end = grants.instant(expires_at, "expiresAt")
            row = grants.extend(
                conn,
                self.deprovisioner,
                grant_id,
                expires_at=end,
                actor=actor,
                now=now,
                http_request_id=http_request_id,
            )
            return grants.render(row, to_micros(now))

    def revoke_grant(
        self, grant_id: str, *, actor: str, reason: Any = None, http_request_id: str | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        if reason is not None and not isinstance(reason, str):
            raise JitError(400, "invalid_request", "`reason` must be a string")
        with self.db.write() as conn:
            row = grants.revoke(
                conn,
                self.deprovisioner,
                grant_id,
                actor=actor,
                now=now,
                reason=reason,
                http_request_id=http_request_id,
            )
            return grants.render(row, to_micros(now))

    def get_grant(self, grant_id: str) -> dict[str, Any]:
        now_us = to_micros(self.clock.now())
        with self.db.read() as conn:
            return grants.render(grants.get(conn, grant_id), now_us)

    # ------------------------------------------------------------------------------------ requests

    def create_request(
        self,
        *,
        user: Any,
        group: Any,
        duration: Any,
        justification: Any,
        requested_by: str,
        starts_at: Any = None,
        http_request_id: str | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        if duration is None:
            raise JitError(400, "invalid_request", '`duration` is required, e.g. "2h"')
        seconds = grants.seconds(duration)
        start = grants.instant(starts_at, "startsAt") if starts_at is not None else None
        with self.db.write() as conn:
            row = requests.create(
                conn,
                self.deprovisioner,
                user=user if not isinstance(user, str) else grants.find_user(conn, user),
                group=grants.find_group(conn, group),
                duration=seconds,
                starts_at=start,
                justification=justification,
                requested_by=requested_by,
                now=now,
                http_request_id=http_request_id,
            )
            return requests.render(row, to_micros(now))

    def decide(
        self,
        request_id: str,
        *,
        approver: Any,
        decision: str,
        comment: Any = None,
        actor: str,
        http_request_id: str | None = None,
    ) -> dict[str, Any]:
        """`approve` or `deny` by `approver` (a user row, or a user's id or userName). A refused decision
        (self-approval, not an approver) is audited with outcome `refused`."""
        if decision not in ("approve", "deny"):
            raise ValueError(decision)
        now = self.clock.now()
        try:
            with self.db.write() as conn:
                person = approver if not isinstance(approver, str) else grants.find_user(conn, approver)
                row = requests.decide(
                    conn,
                    self.deprovisioner,
                    request_id,
                    approver=person,
                    decision=decision,
                    comment=comment,
                    actor=actor,
                    now=now,
                    http_request_id=http_request_id,
                )
                return requests.render(row, to_micros(now))
        except JitError as exc:
            if exc.status == 403:
                audit.record_now(
                    self.db,
                    at=now,
                    actor=actor,
                    action=f"request.{decision}",
                    outcome="refused",
                    resource_type="AccessRequest",
                    resource_id=request_id,
                    request_id=http_request_id,
                    details={"reason": exc.reason, "detail": exc.detail},
                )
            raise

    def get_request(self, request_id: str) -> dict[str, Any]:
        now_us = to_micros(self.clock.now())
        with self.db.read() as conn:
            return requests.render(requests.get(conn, request_id), now_us)

    # ------------------------------------------------------------------------------------ identity

    async def user_from_id_token(self, application: Any, id_token: Any) -> tuple[Any, str]:
        """The SCIM user an ID token (issued for `application`'s client) belongs to, and the actor name
        `oidc:<sub>`: how a user files or decides a request without a scimjit token."""
        if not isinstance(application, str) or not isinstance(id_token, str):
            raise JitError(400, "invalid_request", "send `application` with the user's `id_token`")
        app = self.engine.apps.get(application)
        if app is None:
            raise JitError(404, "unknown_application", f"no application named {application!r}")
        try:
            claims = await self.engine.verifier.verify(app, id_token)
        except JitError as exc:  # a refused ID token (even an unreachable issuer) is a 401 here
            raise JitError(401, exc.reason, exc.detail) from None
        value = claims.get(app.match.claim)
        if not isinstance(value, str) or not value:
            raise JitError(401, "missing_claim", f"the token has no {app.match.claim!r} claim")

        def read() -> Any:
            with self.db.read() as conn:
                found = identity.find_subjects(conn, app, value)
                if len(found) != 1:
                    raise JitError(
                        403, "unknown_user", f"no single SCIM user has {app.match.attribute} = {value!r}"
                    )
                return grants.find_user(conn, found[0].user_id)

        return await self.db.run(read), f"oidc:{claims.get('sub')}"


def access_for(services: Any) -> Access:
    """The `Access` of these services' JIT engine, built on first use."""
    engine = get_engine(services)
    found = _BY_ENGINE.get(engine)
    if found is None:
        found = _BY_ENGINE[engine] = Access(engine)
    return found


def install(services: Any) -> list[BackgroundTask]:
    """Make SCIM writes deprovision (`Services.listener`) and return the in-process sweeper task for
    `create_app(background=[...])` (none when `run_sweeper` is off)."""
    access = access_for(services)
    services.listener = access.deprovisioner
    if not services.settings.run_sweeper:
        return []
    return [background_task(access.sweeper, services.settings.sweep_interval)]
