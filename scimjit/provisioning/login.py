"""The login hook: an application presents a user's ID token; scimjit makes sure that user has an account.

    verify token (or SAML Response) -> find the SCIM user (match rule) -> active? entitled? -> ledger:
      no account      -> claim the ledger slot + enqueue account.create (one transaction), deliver it now
      pending         -> deliver the queued create now (a previous attempt failed or is in flight)
      active          -> "existing"; if the profile or roles changed: account.update (+ role.grant/revoke)
      disabled        -> enqueue account.enable, "existing"
      failed          -> 502: the create is dead, an operator must look (outbox retry)

The existing-account path is the hot one: two indexed reads in one read transaction, no connector call,
and no write unless something changed or `last_login_at` is older than `last_login_resolution` (that write
also carries the `login.allowed` audit record, so the trail has at most one row per user, app and period).

A login decides from its read, but every write it makes starts by locking the user's row and deciding again
from what is committed (`_revalidate`): SCIM writes, sweeps and grants that change the user's access take the
same lock first, so deprovisioning committed meanwhile is seen, never undone (docs/architecture.md, "the
serialization rule"). A login that writes nothing takes no lock.

Concurrent first logins race for the ledger's unique (application, user) slot; the loser waits (bounded by
`login_wait`) for the winner's create to land instead of creating a second account.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from scimjit.clock import Clock, to_micros
from scimjit.config import JitSettings
from scimjit.delivery import outbox
from scimjit.delivery.connectors.base import (
    ACCOUNT_CREATE,
    ACCOUNT_ENABLE,
    ACCOUNT_UPDATE,
    ROLE_GRANT,
    ROLE_REVOKE,
    Outcome,
    Result,
)
from scimjit.delivery.deliverer import Deliverer, Report, worker_id
from scimjit.entitlement import conditions, identity, ledger
from scimjit.entitlement.apps import Application
from scimjit.entitlement.identity import Subject
from scimjit.jiterrors import JitError
from scimjit.metrics import LOGINS
from scimjit.provisioning.oidc import OidcVerifier
from scimjit.provisioning.saml import NAME_ID, SamlVerifier
from scimjit.scim.identifiers import DisallowedIdentifier
from scimjit.store import audit
from scimjit.store import users as user_rows
from scimjit.store.db import Database

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.login")

# verifies the credential (ID token, SAML Response): (claims, audit actor)
_Verify = Callable[[], Awaitable[tuple[dict[str, Any], str | None]]]

POLL_INTERVAL = 0.05  # seconds between ledger checks while waiting for a concurrent first login


class _Changed(Exception):
    """Raised inside the login's write transaction when the re-check under the user's lock says no (the
    transaction rolls back; the caller refuses with these)."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


@dataclass(frozen=True, slots=True)
class LoginResult:
    status_code: int  # 200, or 202 when the account is still being created (async_create)
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Attempt:
    """One login in progress: what is known so far, for the steps and for the audit trail."""

    app: Application
    now: datetime
    caller: str | None  # the application token's name
    request_id: str | None
    actor: str | None = None  # "oidc:<sub>" / "saml:<NameID>" once the credential is verified
    subject: Subject | None = None
    user: dict[str, Any] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)

    @property
    def user_id(self) -> str:
        assert self.subject is not None
        return self.subject.user_id


class LoginService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: JitSettings,
        apps: Mapping[str, Application],
        verifier: OidcVerifier,
        deliverer: Deliverer,
        saml: SamlVerifier | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.apps = apps
        self.verifier = verifier
        self.saml = saml
        self.deliverer = deliverer
        self._resolution_us = int(settings.last_login_resolution * 1_000_000)
        self._lookups = {name: identity.Lookups(app) for name, app in apps.items()}

    async def login(
        self,
        application: str,
        id_token: str,
        *,
        caller: str | None = None,
        request_id: str | None = None,
        client_ip: str | None = None,
    ) -> LoginResult:
        """Run the login hook for `application` with an ID token. Raises JitError (status, reason code).
        `client_ip` (the user's address, as the application saw it) is what the application's network
        conditions are checked against."""
        app = self._app(application)

        async def verify() -> tuple[dict[str, Any], str | None]:
            claims = await self.verifier.verify(app, id_token)
            return claims, f"oidc:{claims['sub']}" if isinstance(claims.get("sub"), str) else None

        return await self._counted(app, verify, caller, request_id, oidc=True, client_ip=client_ip)

    async def saml_login(
        self,
        application: str,
        saml_response: str,
        *,
        in_response_to: str | None = None,
        caller: str | None = None,
        request_id: str | None = None,
        client_ip: str | None = None,
    ) -> LoginResult:
        """Run the login hook for `application` with a SAML Response (base64): verified by saml.py, then the
        same decision path as an ID token, the match rule's claim naming a SAML attribute or `NameID`."""
        app = self._app(application)

        async def verify() -> tuple[dict[str, Any], str | None]:
            if self.saml is None:
                raise JitError(400, "saml_not_configured", "SAML sign-ins are not set up")
            claims = await self.saml.verify(app, saml_response, in_response_to)
            return claims, f"saml:{claims[NAME_ID]}" if isinstance(claims.get(NAME_ID), str) else None

        return await self._counted(app, verify, caller, request_id, oidc=False, client_ip=client_ip)

    def _app(self, application: str) -> Application:
        app = self.apps.get(application)
        if app is None:  # not counted: the metric label would take any string a caller sends
            raise JitError(404, "unknown_application", f"no application named {application!r} is configured")
        return app

    async def _counted(
        self,
        app: Application,
        verify: _Verify,
        caller: str | None,
        request_id: str | None,
        *,
        oidc: bool,
        client_ip: str | None,
    ) -> LoginResult:
        try:
            result = await self._login(app, verify, caller, request_id, oidc, client_ip)
        except JitError as exc:
            LOGINS.labels(application=app.name, outcome="refused" if exc.status < 500 else "error").inc()
            raise
        LOGINS.labels(application=app.name, outcome="allowed").inc()
        return result

    async def _login(
        self,
        app: Application,
        verify: _Verify,
        caller: str | None,
        request_id: str | None,
        oidc: bool,
        client_ip: str | None,
    ) -> LoginResult:
        at = _Attempt(app, self.clock.now(), caller, request_id, actor=caller)
        try:
            claims, actor = await verify()
        except JitError as exc:  # the token or assertion is refused: audit it as a refused login
            await self._refuse(at, exc.status, exc.reason, exc.detail, exc.headers)
        if actor is not None:
            at.actor = actor
        unmet = conditions.check(app.conditions, at.now, client_ip)
        if unmet is not None:  # before any read: outside its hours or networks the app is closed to all
            await self._refuse(
                at,
                403,
                "condition_not_met",
                f"{unmet.condition}: {unmet.detail}",
                audit_details={**unmet.to_json(), "clientIp": client_ip},
            )
        value = claims.get(app.match.claim)
        if not isinstance(value, str) or not value:
            await self._refuse(
                at, 401, "missing_claim", f"the token or assertion has no {app.match.claim!r} claim"
            )
        verified = claims.get("email_verified")
        if oidc and app.require_email_verified and verified is not True and verified != "true":
            # an address the issuer has not verified is whatever the user typed: it identifies no one
            # (a SAML assertion has no such claim: its attributes are the IdP's own statement)
            await self._refuse(
                at,
                403,
                "email_not_verified",
                "the token's email is not verified by the issuer (email_verified)",
            )
        try:
            subjects, refs = await self._read_async(app, value, to_micros(at.now))
        except DisallowedIdentifier as exc:  # no user can have it: refused as unknown, audited with why
            log.info("login claim refused by PRECIS: application=%s %s", app.name, exc.detail)
            await self._refuse(at, 403, "unknown_user", f"no SCIM user can have {app.match.attribute}: {exc}")
        if not subjects:
            await self._refuse(at, 403, "unknown_user", f"no SCIM user has {app.match.attribute} = {value!r}")
        if len(subjects) > 1:
            await self._refuse(
                at, 403, "ambiguous_user", f"several users have {app.match.attribute} = {value!r}"
            )
        at.subject = subject = subjects[0]
        if not subject.active:
            await self._refuse(at, 403, "inactive", "the user is not active")
        if not app.entitled(refs):
            await self._refuse(at, 403, "not_entitled", f"the user is in none of the groups of {app.name!r}")
        at.roles = app.roles_for(refs)
        at.user = identity.render_user(subject)
        account = subject.account
        if account is None or account.status == ledger.DELETED:
            return await self._first_login(at)
        if account.status in (ledger.ACTIVE, ledger.DISABLED):
            if self._needs_write(account, at):
                try:
                    await self.db.run(self._sync, at)
                except _Changed as exc:
                    await self._refuse(at, exc.status, exc.reason, exc.detail)
            return self._ok(at, "existing", account.downstream_id)
        if account.status == ledger.PENDING:
            event_id = await self.db.run(self._pending_create, app, subject.user_id)
            report = await self.deliverer.deliver_now(event_id, also=self._allowed(at)) if event_id else None
            if report is not None:
                return await self._after_create(at, report)
            return await self._wait_for_account(at)
        await self._refuse(
            at,
            502,
            "provisioning_failed",
            f"creating the account in {app.name!r} failed; see the dead outbox events",
        )

    # --- reads ------------------------------------------------------------------------------------------

    def _read(self, app: Application, value: str, now_us: int) -> tuple[list[Subject], set[str]]:
        lookups = self._lookups[app.name]
        with self.db.snapshot() as conn:  # both reads in one snapshot, on the driver (`Database.snapshot`)
            subjects = lookups.find_subjects(conn, value)
            refs = lookups.member_refs(conn, subjects[0].user_id, now_us) if len(subjects) == 1 else set()
        return subjects, refs

    async def _read_async(self, app: Application, value: str, now_us: int) -> tuple[list[Subject], set[str]]:
        """`_read` from the event loop: on PostgreSQL both reads awaited there in one snapshot
        (`Database.snapshot_async`, no thread hop), on SQLite `_read` inline (`Database.run`)."""
        if self.db.is_sqlite:
            return await self.db.run(self._read, app, value, now_us)
        lookups = self._lookups[app.name]
        find = lookups.find_read(value)  # a claim PRECIS refuses raises here, before any connection is used
        refs: set[str] = set()
        async with self.db.snapshot_async() as reader:
            subjects = lookups.subjects(await reader.fetch(*find))
            members = lookups.members_read(subjects[0].user_id, now_us) if len(subjects) == 1 else None
            if members is not None:
                refs = lookups.refs(await reader.fetch(*members))
        return subjects, refs

    def _needs_write(self, account: identity.Account, at: _Attempt) -> bool:
        if account.status != ledger.ACTIVE:
            return True
        if account.roles != at.roles or account.profile_hash != ledger.profile_hash(at.user):
            return True
        return (
            account.last_login_at is None or to_micros(at.now) - account.last_login_at >= self._resolution_us
        )

    def _pending_create(self, app: Application, user_id: str) -> str | None:
        with self.db.read() as conn:
            return outbox.latest_pending(conn, app.name, user_id, ACCOUNT_CREATE)

    def _account(self, application: str, user_id: str) -> ledger.Account | None:
        with self.db.read() as conn:
            return ledger.get(conn, application, user_id)

    # --- writes -----------------------------------------------------------------------------------------

    def _sync(self, at: _Attempt) -> None:
        """Bring the ledger up to date for a returning user and enqueue what downstream must hear.
        Compare-and-set on the account version: a concurrent login that did it first makes this one re-read
        (and usually find nothing left to do)."""
        for _ in range(3):
            with self.db.write() as conn:
                self._revalidate(conn, at)
                phash = ledger.profile_hash(at.user)
                current = ledger.get(conn, at.app.name, at.user_id)
                if current is None or current.status not in (ledger.ACTIVE, ledger.DISABLED):
                    return
                old_roles = list(current.roles or ())
                changed = old_roles != at.roles or current.profile_hash != phash
                enable = current.status == ledger.DISABLED
                values: dict[str, Any] = {
                    "last_login_at": to_micros(at.now),
                    "user_name": at.user.get("userName"),
                }
                if changed:
                    values.update(roles=at.roles, profile_hash=phash)
                if enable:
                    values["status"] = ledger.ACTIVE
                if not ledger.update(conn, current, at.now, **values):
                    continue
                if enable:
                    self._enqueue(conn, at, ACCOUNT_ENABLE)
                if changed:
                    self._enqueue(conn, at, ACCOUNT_UPDATE)
                    for role in sorted(set(at.roles) - set(old_roles)):
                        self._enqueue(conn, at, ROLE_GRANT, role=role)
                    for role in sorted(set(old_roles) - set(at.roles)):
                        self._enqueue(conn, at, ROLE_REVOKE, role=role)
                self._audit(
                    conn, at, "login.allowed", "allowed", {"account": "enabled" if enable else "existing"}
                )
                return

    def _revalidate(self, conn: sa.Connection, at: _Attempt) -> None:
        """First thing in every write of the login: lock the user's row (PostgreSQL; SQLite's BEGIN IMMEDIATE
        already serializes writers) and decide again from what is committed now: the user exists and is
        active, live memberships still entitle them, and the roles and profile written are today's. Every
        SCIM, sweeper and grant write that changes this user's access takes the same lock first
        (`store.users.lock`), so it either committed before (and is seen here) or waits and then sees this
        login's ledger row: a login can never write back access that deprovisioning took away. Raises
        `_Changed` (the refusal) when the answer is no longer yes."""
        row = user_rows.get(conn, at.user_id, for_update=True)
        if row is None:
            raise _Changed(403, "unknown_user", "the user was deleted while logging in")
        if not row.active:
            raise _Changed(403, "inactive", "the user is not active")
        refs = self._lookups[at.app.name].member_refs(conn, at.user_id, to_micros(self.clock.now()))
        if not at.app.entitled(refs):
            raise _Changed(403, "not_entitled", f"the user is in none of the groups of {at.app.name!r}")
        at.roles = at.app.roles_for(refs)
        at.subject = identity.Subject(
            row.id, row.user_name, bool(row.active), row.data, at.subject.account if at.subject else None
        )
        at.user = identity.render_user(at.subject)

    def _enqueue(self, conn: sa.Connection, at: _Attempt, type_: str, **extra: Any) -> str:
        event = outbox.new_event(type_, at.app.name, at.user, at.roles, at.now, **extra)
        outbox.enqueue(conn, event, user_id=at.user_id, now=at.now)
        return str(event["id"])

    def _claim_slot(self, at: _Attempt, worker: str) -> outbox.Claimed | str | None:
        """Take the ledger slot and queue the create, atomically. The create comes back leased to `worker`
        when nothing of this user is queued before it (the usual case), else as an event id to wait for;
        None if a concurrent login holds the slot."""
        try:
            with self.db.write() as conn:
                self._revalidate(conn, at)
                phash = ledger.profile_hash(at.user)
                current = ledger.get(conn, at.app.name, at.user_id)
                if current is None:
                    ledger.insert_pending(
                        conn,
                        application=at.app.name,
                        user_id=at.user_id,
                        user_name=str(at.user.get("userName", "")),
                        roles=at.roles,
                        profile=phash,
                        now=at.now,
                    )
                elif current.status == ledger.DELETED:  # deleted downstream earlier: start a fresh account
                    fresh = {
                        "status": ledger.PENDING,
                        "downstream_id": None,
                        "roles": at.roles,
                        "profile_hash": phash,
                    }
                    if not ledger.update(conn, current, at.now, last_login_at=to_micros(at.now), **fresh):
                        return None
                else:
                    return None
                event = outbox.new_event(
                    ACCOUNT_CREATE, at.app.name, at.user, at.roles, at.now, mode=at.app.on_first_login
                )
                if outbox.has_pending(conn, at.app.name, at.user_id):  # it must wait its turn
                    outbox.enqueue(conn, event, user_id=at.user_id, now=at.now)
                    return str(event["id"])
                lease = self.settings.outbox_lease
                row_id = outbox.enqueue(
                    conn, event, user_id=at.user_id, now=at.now, lease_to=worker, lease=lease
                )
                return outbox.Claimed(row_id, event["id"], ACCOUNT_CREATE, at.app.name, at.user_id, event, 1)
        except IntegrityError:
            return None

    # --- first login ------------------------------------------------------------------------------------

    async def _first_login(self, at: _Attempt) -> LoginResult:
        worker = worker_id("login")
        try:
            claimed = await self.db.run(self._claim_slot, at, worker)
        except _Changed as exc:
            await self._refuse(at, exc.status, exc.reason, exc.detail)
        if claimed is None:  # another login of this user is creating the account right now
            return await self._wait_for_account(at)
        if isinstance(claimed, str):  # queued behind earlier events of this user
            report = await self.deliverer.deliver_now(claimed, also=self._allowed(at))
        else:
            report = await self.deliverer.deliver_claimed(claimed, worker, also=self._allowed(at))
        if report is None:  # the worker (or an earlier event of this user) has it: wait for the result
            return await self._wait_for_account(at)
        return await self._after_create(at, report)

    def _allowed(self, at: _Attempt) -> Callable[[sa.Connection, Result], None]:
        """The `login.allowed` record of a login that created (or linked) the account, written in the
        transaction that records the connector's answer."""

        def record(conn: sa.Connection, result: Result) -> None:
            if result.outcome != Outcome.NOT_FOUND:
                status = "linked" if at.app.on_first_login == "link" else "created"
                details = {"account": status, "downstreamId": result.downstream_id}
                self._audit(conn, at, "login.allowed", "allowed", details)

        return record

    async def _after_create(self, at: _Attempt, report: Report) -> LoginResult:
        if report.status == outbox.DONE and report.result is not None:
            if report.result.outcome == Outcome.NOT_FOUND:
                await self._refuse(
                    at,
                    403,
                    "no_downstream_account",
                    f"{at.app.name!r} links existing accounts only; it has none",
                )
            status = "linked" if at.app.on_first_login == "link" else "created"
            return self._ok(at, status, report.result.downstream_id)
        if report.status == outbox.DEAD:
            await self._refuse(
                at,
                502,
                "provisioning_failed",
                f"the connector of {at.app.name!r} refused the account: {report.error}",
            )
        retry_in = 1
        if report.next_attempt_at is not None:
            retry_in = max(1, math.ceil((report.next_attempt_at - self.clock.now()).total_seconds()))
        return self._not_yet(at, retry_in, report.error or "the downstream is unavailable")

    async def _wait_for_account(self, at: _Attempt) -> LoginResult:
        """Someone else is creating this account: poll the ledger (real time, bounded by `login_wait`)."""
        deadline = time.monotonic() + self.settings.login_wait
        while True:
            row = await self.db.run(self._account, at.app.name, at.user_id)
            if row is None and at.app.on_first_login == "link":
                await self._refuse(
                    at,
                    403,
                    "no_downstream_account",
                    f"{at.app.name!r} links existing accounts only; it has none",
                )
            if row is not None and row.status == ledger.ACTIVE:
                return self._ok(at, "existing", row.downstream_id)
            if row is not None and row.status in (ledger.DISABLED, ledger.DELETED):
                # deprovisioned while the create was in flight (its write came after the one that created
                # the account): the answer agrees with what downstream was told
                await self._refuse(
                    at, 403, "inactive", f"the account in {at.app.name!r} was deprovisioned meanwhile"
                )
            if row is not None and row.status == ledger.FAILED:
                await self._refuse(
                    at, 502, "provisioning_failed", f"creating the account in {at.app.name!r} failed"
                )
            if time.monotonic() >= deadline:
                return self._not_yet(at, 1, "the account is still being created")
            await asyncio.sleep(POLL_INTERVAL)

    # --- answers ----------------------------------------------------------------------------------------

    def _ok(self, at: _Attempt, status: str, downstream_id: str | None) -> LoginResult:
        account = {"status": status, "downstreamId": downstream_id, "application": at.app.name}
        return LoginResult(200, {"account": account, "user": at.user, "roles": at.roles})

    def _not_yet(self, at: _Attempt, retry_in: int, why: str) -> LoginResult:
        """The account is not there yet: 202 `pending` for apps that opted into asynchronous creation,
        otherwise 503 with Retry-After (a later login, or the worker, finishes it)."""
        headers = {"Retry-After": str(retry_in)}
        if at.app.async_create:
            account = {"status": ledger.PENDING, "downstreamId": None, "application": at.app.name}
            return LoginResult(202, {"account": account, "user": at.user, "roles": at.roles}, headers)
        raise JitError(
            503, "downstream_unavailable", f"the account in {at.app.name!r} is not ready: {why}", headers
        )

    async def _refuse(
        self,
        at: _Attempt,
        status: int,
        reason: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
        audit_details: Mapping[str, Any] | None = None,
    ) -> NoReturn:
        """Log and audit a refusal (`login.refused`, with the reason code and any `audit_details`, e.g. the
        condition that decided it), then raise it."""
        user = at.subject.user_id if at.subject else "-"
        log.info("login refused: application=%s reason=%s user=%s", at.app.name, reason, user)
        details = {"reason": reason, "detail": detail, **(audit_details or {})}
        await self.db.run(self._audit_now, at, "login.refused", "refused", details)
        raise JitError(status, reason, detail, headers)

    def _audit_now(self, at: _Attempt, action: str, outcome: str, details: dict[str, Any]) -> None:
        with self.db.write() as conn:
            self._audit(conn, at, action, outcome, details)

    def _audit(
        self, conn: sa.Connection, at: _Attempt, action: str, outcome: str, details: dict[str, Any]
    ) -> None:
        audit.record(
            conn,
            at_micros=to_micros(self.clock.now()),
            actor=at.actor,
            action=action,
            outcome=outcome,
            resource_type="User" if at.subject else "Application",
            resource_id=at.subject.user_id if at.subject else at.app.name,
            request_id=at.request_id,
            details={"application": at.app.name, "via": at.caller, **details},
        )
