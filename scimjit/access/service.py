"""Just-in-time access as a service: grants, requests and the sweeper over one database, one clock and the
JIT engine's applications. The HTTP routes (`scimjit.http.jit.access`) and the CLI
(`scimjit.cli.access`) both call these methods; each is one transaction.

Who may decide (docs/jit-access.md, "Trust model"): a decision is made by a person who proved who they are to
scimjit itself, and `decide` records how (`decided_via`): `console` (signed in to scimjit's console),
`admin-token` (an admin token over the API, acting for the approver it names) or `operator` (the CLI or
Python, which act on the database directly). A user's ID token may file a request for that user, once: its
`jti` (or, without one, a digest of its claims) is claimed in the `used_once` replay cache in the same
transaction as the request.

Wiring lives in the composition root (scimjit.services): it builds the engine, then the `Deprovisioner`
(`deprovisioner_for`, which is also the SCIM writes' listener), then `Access(engine, deprovisioner)`, then the
sweeper's background task.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from scimjit.access import grants, requests, schedules
from scimjit.access.sweeper import Sweeper
from scimjit.clock import to_micros
from scimjit.engine import JitEngine
from scimjit.entitlement import identity
from scimjit.entitlement.policies import AccessSettings
from scimjit.jiterrors import JitError
from scimjit.provisioning.deprovision import Deprovisioner
from scimjit.provisioning.reconcile import Reconciler, Schedule
from scimjit.scim.identifiers import DisallowedIdentifier
from scimjit.store import audit, used_once

ID_TOKEN_PURPOSE = "id_token"  # noqa: S105 (a name, not a secret): the used_once purpose of ID tokens accepted for an action
DECIDED_VIA = frozenset({"console", "admin-token", "operator"})


class SingleUse(NamedTuple):
    """What makes an accepted ID token single-use: its replay-cache value, kept until the token is dead."""

    value: str
    until: datetime


def single_use(claims: dict[str, Any], skew: float) -> SingleUse:
    """The issuer and `jti` when the token has one; otherwise a digest of all its verified claims (`iat`,
    `exp`, `nonce`... make it one token's: an IdP without `jti` never issues the same claims twice, and a
    replay is byte for byte the same token). Kept until `exp` plus the clock skew, after which the verifier
    refuses it anyway."""
    jti = claims.get("jti")
    if isinstance(jti, str) and jti:
        value = f"jti\n{claims.get('iss')}\n{jti}"
    else:
        value = "claims\n" + hashlib.sha256(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return SingleUse(value, datetime.fromtimestamp(float(claims["exp"]) + skew, tz=UTC))


def deprovisioner_for(engine: JitEngine) -> Deprovisioner:
    """The deprovisioning listener over the engine's applications and the `[jit]` access settings (policies,
    TTLs, notices). Raises ConfigError if those settings are wrong."""
    settings = AccessSettings.from_config(
        engine.settings.jit, engine.apps, engine.settings.notifications, engine.settings.base_url
    )
    return Deprovisioner(
        engine.apps, engine.clock, settings, end_access=requests.end_access, signals=engine.signals
    )


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

    # ------------------------------------------------------------------------------------ schedules

    def apply_schedule(
        self, source: Any, plan: Any, *, actor: str, http_request_id: str | None = None
    ) -> dict[str, int]:
        """A scheduling system's complete plan for `source` (access/schedules.py): the summary
        {created, updated, revoked, unchanged, skipped}. Refused whole (400 `invalid_schedule`) if any shift
        is bad."""
        name = schedules.check_source(source)
        if not isinstance(plan, dict):
            raise JitError(400, "invalid_request", 'the plan must be an object {"shifts": [...]}')
        period, shifts = schedules.parse(
            plan, self.settings.schedule_max_shifts, self.settings.schedule_max_shift
        )
        now = self.clock.now()
        with self.db.write() as conn:
            summary = schedules.apply(
                conn,
                self.deprovisioner,
                name,
                period,
                shifts,
                actor=actor,
                now=now,
                http_request_id=http_request_id,
            )
        return summary.to_json()

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
        once: SingleUse | None = None,
        client_ip: str | None = None,
    ) -> dict[str, Any]:
        """File a request. `once` (from `user_from_id_token`) is claimed in the same transaction: a replayed
        ID token is refused (401 `token_replayed`), and a request that fails leaves the token unused.
        `client_ip` (the filer's address) is what the policy's network conditions are checked against; a
        refusal by the policy's conditions is audited (`request.create`, outcome `refused`, the condition)."""
        now = self.clock.now()
        if duration is None:
            raise JitError(400, "invalid_request", '`duration` is required, e.g. "2h"')
        seconds = grants.seconds(duration)
        start = grants.instant(starts_at, "startsAt") if starts_at is not None else None
        if start is not None:
            grants.within_horizon(to_micros(now), start + int(seconds * 1_000_000), "the requested access")
        try:
            with self.db.write() as conn:
                if once is not None and not used_once.claim(
                    conn, ID_TOKEN_PURPOSE, once.value, once.until, now
                ):
                    raise JitError(401, "token_replayed", "this ID token was already used: sign in again")
                person = user if not isinstance(user, str) else grants.find_user(conn, user)
                row = requests.create(
                    conn,
                    self.deprovisioner,
                    user=person,
                    group=grants.find_group(conn, group),
                    duration=seconds,
                    starts_at=start,
                    justification=justification,
                    requested_by=requested_by,
                    now=now,
                    http_request_id=http_request_id,
                    client_ip=client_ip,
                )
                return requests.render(row, to_micros(now))
        except requests.ConditionNotMet as exc:  # the write rolled back: the refusal is audited on its own
            audit.record_now(
                self.db,
                at=now,
                actor=requested_by,
                action="request.create",
                outcome="refused",
                resource_type="AccessRequest",
                resource_id=None,
                request_id=http_request_id,
                details={
                    "reason": exc.reason,
                    "userId": person.id,
                    "group": group,
                    **exc.unmet.to_json(),
                    "clientIp": client_ip,
                },
            )
            raise

    def decide(
        self,
        request_id: str,
        *,
        approver: Any,
        decision: str,
        comment: Any = None,
        actor: str,
        http_request_id: str | None = None,
        decided_via: str = "operator",
    ) -> dict[str, Any]:
        """`approve` or `deny` by `approver` (a user row, or a user's id or userName), a person who proved who
        they are to scimjit: `decided_via` says how (`console`, `admin-token`, `operator`; see the module
        docstring) and is kept on the decision and in its audit record. A refused decision (self-approval,
        not an approver) is audited with outcome `refused`."""
        if decision not in ("approve", "deny"):
            raise ValueError(decision)
        if decided_via not in DECIDED_VIA:
            raise ValueError(decided_via)
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
                    decided_via=decided_via,
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
                    details={"reason": exc.reason, "detail": exc.detail, "decidedVia": decided_via},
                )
            raise

    def cancel_request(
        self, request_id: str, *, user_id: str, actor: str, http_request_id: str | None = None
    ) -> dict[str, Any]:
        """The requester (`user_id`) withdraws their own pending request."""
        now = self.clock.now()
        with self.db.write() as conn:
            row = requests.cancel(
                conn, request_id, user_id=user_id, actor=actor, now=now, http_request_id=http_request_id
            )
            return requests.render(row, to_micros(now))

    def get_request(self, request_id: str) -> dict[str, Any]:
        now_us = to_micros(self.clock.now())
        with self.db.read() as conn:
            return requests.render(requests.get(conn, request_id), now_us)

    # ------------------------------------------------------------------------------------ identity

    async def user_from_id_token(self, application: Any, id_token: Any) -> tuple[Any, str, SingleUse]:
        """The SCIM user an ID token (issued for `application`'s client) belongs to, the actor name
        `oidc:<sub>`, and what makes it single-use (pass it to `create_request` as `once`): how a user files
        a request for themselves without a scimjit token. Never a credential for deciding one."""
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
                try:
                    found = identity.find_subjects(conn, app, value)
                except DisallowedIdentifier as exc:
                    raise JitError(
                        403, "unknown_user", f"no SCIM user can have {app.match.attribute}: {exc}"
                    ) from None
                if len(found) != 1:
                    raise JitError(
                        403, "unknown_user", f"no single SCIM user has {app.match.attribute} = {value!r}"
                    )
                return grants.find_user(conn, found[0].user_id)

        skew = self.engine.settings.jit.clock_skew if app.clock_skew is None else app.clock_skew
        return await self.db.run(read), f"oidc:{claims.get('sub')}", single_use(claims, skew)
