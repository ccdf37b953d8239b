"""The connector contract: what scimjit asks of a downstream application, and what it may answer.

One typed protocol for every connector (built-in or plugin). Each call gets a `Call` that carries the event
(its `id` is the idempotency key: the same on every retry of that event) and returns a `Result` with a typed
`Outcome`. Failures are raised as `TransientError` (retried with backoff) or `PermanentError` (the event goes
to the dead letter state, visible and replayable). Anything else a connector raises counts as transient, so
a bug in a plugin is retried a bounded number of times and then parked, never lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

# Event types (the webhook's `type` field and the outbox's `type` column).
ACCOUNT_CREATE = "account.create"
ACCOUNT_UPDATE = "account.update"
ACCOUNT_DISABLE = "account.disable"
ACCOUNT_ENABLE = "account.enable"
ACCOUNT_DELETE = "account.delete"
ROLE_GRANT = "role.grant"
ROLE_REVOKE = "role.revoke"
ACCESS_EXPIRING = "access.expiring"
REQUEST_CREATED = "request.created"  # to each approver (scimjit/access/notify.py)
REQUEST_DECIDED = "request.decided"  # to the requester
SECURITY_EVENT = "security.event"  # a Shared Signals SET for one push stream (scimjit/delivery/signals.py)


class Outcome(StrEnum):
    CREATED = "created"
    ALREADY_EXISTS = "already_exists"
    LINKED = "linked"
    NOT_FOUND = "not_found"  # link: the downstream has no such account (scimjit records none)
    UPDATED = "updated"
    DISABLED = "disabled"
    ENABLED = "enabled"
    DELETED = "deleted"
    ALREADY_DELETED = "already_deleted"
    GRANTED = "granted"
    ALREADY_GRANTED = "already_granted"
    REVOKED = "revoked"
    ALREADY_REVOKED = "already_revoked"
    IN_PROGRESS = "in_progress"  # accepted downstream, finishing there asynchronously
    NOTIFIED = "notified"
    RECONCILED = "reconciled"


@dataclass(frozen=True, slots=True)
class Call:
    """One request to a connector, built from an outbox event."""

    event: Mapping[str, Any]  # the event document, as a webhook would POST it
    downstream_id: str | None = None  # the account's id downstream, when known

    @property
    def idempotency_key(self) -> str:
        return str(self.event["id"])

    @property
    def type(self) -> str:
        return str(self.event["type"])

    @property
    def application(self) -> str:
        return str(self.event["application"])

    @property
    def user(self) -> Mapping[str, Any]:
        user: Mapping[str, Any] = self.event.get("user") or {}
        return user

    @property
    def roles(self) -> list[str]:
        return list(self.event.get("roles") or ())

    @property
    def role(self) -> str | None:
        """The role granted or revoked (role.grant / role.revoke)."""
        role = self.event.get("role")
        return str(role) if role is not None else None

    @property
    def mode(self) -> Literal["create", "link"]:
        return "link" if self.event.get("mode") == "link" else "create"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    downstream_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome.value}
        if self.downstream_id is not None:
            out["downstreamId"] = self.downstream_id
        if self.details:
            out["details"] = dict(self.details)
        return out


class ConnectorError(Exception):
    transient: bool = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # a downstream's Retry-After hint, in seconds


class TransientError(ConnectorError):
    """Worth retrying: timeouts, connection errors, 408/429/5xx, a downstream that is busy."""

    transient = True


class PermanentError(ConnectorError):
    """Retrying cannot help (rejected request, bad credentials, a config error): dead letter."""

    transient = False


@runtime_checkable
class Connector(Protocol):
    """What a downstream application connector implements. All methods are coroutines."""

    async def create_account(self, call: Call) -> Result:
        """Create the account (`call.mode == "create"`: CREATED or ALREADY_EXISTS) or find the one the
        downstream already has (`"link"`: LINKED or NOT_FOUND, never create)."""
        ...

    async def update_account(self, call: Call) -> Result: ...

    async def disable_account(self, call: Call) -> Result: ...

    async def enable_account(self, call: Call) -> Result: ...

    async def delete_account(self, call: Call) -> Result: ...

    async def grant(self, call: Call) -> Result: ...

    async def revoke(self, call: Call) -> Result: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ReconcilingConnector(Connector, Protocol):
    """A connector that can also report downstream state, for the reconcile pass (scimjit/provisioning/reconcile.py).
    Optional: a connector without `reconcile` is compared with the ledger only.

    `reconcile(call)` gets a `Call` whose event has `type` "account.reconcile" (the user, the ledger's
    roles, a fresh `id` that is not an outbox event) and `downstream_id` from the ledger. It changes
    nothing downstream and returns `Result(Outcome.RECONCILED, downstream_id, details)` where `details` is:

    - `{"supported": False}`: this connector keeps no readable state (the pass stops asking it this run);
    - otherwise `exists` (bool, required): whether the downstream has the account;
      `active` (bool, optional): whether it is enabled there; `roles` (list of str, optional): the roles
      it has there. A key left out is not compared.

    Raising (any exception) means "unknown this time": that account is compared with the ledger only.
    """

    async def reconcile(self, call: Call) -> Result:
        """Report the downstream state of the account (`details`), for drift repair; no change made."""
        ...


def method_for(event_type: str) -> str:
    """The connector method an event type is delivered through."""
    try:
        return _METHODS[event_type]
    except KeyError:
        raise PermanentError(f"no connector method for event type {event_type!r}") from None


_METHODS = {
    ACCOUNT_CREATE: "create_account",
    ACCOUNT_UPDATE: "update_account",
    ACCOUNT_DISABLE: "disable_account",
    ACCOUNT_ENABLE: "enable_account",
    ACCOUNT_DELETE: "delete_account",
    ROLE_GRANT: "grant",
    ROLE_REVOKE: "revoke",
    ACCESS_EXPIRING: "notify",
    REQUEST_CREATED: "notify",
    REQUEST_DECIDED: "notify",
    SECURITY_EVENT: "notify",
}
