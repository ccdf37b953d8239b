"""Just-in-time access as a service: grants, requests and the sweeper over one database, one clock and the
JIT engine's applications. The HTTP routes (`scimjit.http.jit.access`) and the CLI
(`scimjit.cli.access`) both call these methods; each is one transaction.

Wiring lives in the composition root (scimjit.services): it builds the engine, then the `Deprovisioner`
(`deprovisioner_for`, which is also the SCIM writes' listener), then `Access(engine, deprovisioner)`, then the
sweeper's background task.
"""

from __future__ import annotations

from typing import Any

from scimjit.access import grants, requests
from scimjit.access.sweeper import Sweeper
from scimjit.clock import to_micros
from scimjit.engine import JitEngine
from scimjit.entitlement import identity
from scimjit.entitlement.policies import AccessSettings
from scimjit.jiterrors import JitError
from scimjit.provisioning.deprovision import Deprovisioner
from scimjit.provisioning.reconcile import Reconciler, Schedule
from scimjit.store import audit


def deprovisioner_for(engine: JitEngine) -> Deprovisioner:
    """The deprovisioning listener over the engine's applications and the `[jit]` access settings (policies,
    TTLs, notices). Raises ConfigError if those settings are wrong."""
    settings = AccessSettings.from_config(engine.settings.jit, engine.apps)
    return Deprovisioner(engine.apps, engine.clock, settings, end_access=requests.end_access)


class Access:
    def __init__(self, engine: JitEngine, deprovisioner: Deprovisioner | None = None) -> None:
        """`deprovisioner` is the one the SCIM writes use (the composition root passes it); without it one is
        built from the engine. Raises ConfigError if the `[jit]` access settings or policies are wrong."""
        self.engine = engine
        self.db = engine.db
        self.clock = engine.clock
        self.deprovisioner = deprovisioner or deprovisioner_for(engine)
        self.settings = self.deprovisioner.settings
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
            grants.within_horizon(to_micros(now), end, "the grant")
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
        if start is not None:
            grants.within_horizon(to_micros(now), start + int(seconds * 1_000_000), "the requested access")
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
