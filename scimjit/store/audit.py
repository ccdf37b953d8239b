"""The audit trail: append-only rows answering "who had access to what, when, and why".

Every record is written with `record()` **inside the caller's transaction**, so an audit row exists if and
only if the change it describes committed (a rolled-back SCIM write or login leaves no trace, and a committed
one can never lack its record). Nothing in scimjit updates audit rows; `purge()` deletes whole rows past the
retention period and is the only other statement that touches the table.

Secrets never reach the table: `details` passes through `scimjit.redact.scrub`, which drops every key that
names a secret (password, token, secret, authorization, ...) at any depth and masks string values that look
like bearer tokens or JWTs wherever they appear. Callers should still put only what an auditor needs in `details`:
attribute *names*, ids, counts, reasons, results.

Action names are dotted, `<area>.<object>.<verb>` or `<area>.<verb>`; the ones scimjit writes:

- `scim.user.create|replace|patch|delete`, `scim.group.create|replace|patch|delete` (SCIM writes;
  `details.changed` names the attributes that changed, and `details.ignored` / `details.ignoredCount` the
  unknown attribute paths and schema URNs the write ignored, when there were any: see `scimjit.scim.ignored`);
- `login.allowed`, `login.refused` (login decisions; `details.reason` says why);
- `connector.call` (one delivery attempt; `details`: operation, result or error, duration);
- `grant.create|extend|revoke|expire`, `request.create|approve|deny|cancel|expire` (time-bound access;
  a decision's `details.decidedVia` says how the approver proved who they are: `console`, `admin-token`,
  `operator`);
- `reconcile.repair` (one account brought back in line: `details` application, accountId, source, differences,
  events) and `reconcile.run` (one finished reconcile pass, with its counts; the schedule reads the last one).

Outcomes: `success`, `failure`, `allowed`, `refused`, `error` (free text is accepted, these are the norm).

Request ids: a caller may choose its own `X-Request-Id` (a proxy's, or the client's), and it is kept so the
client's report of a failure can be joined with the row. But a client-chosen id is the client's word, not
scimjit's: such a row says so with `details.requestIdFrom = "client"` (absent: scimjit made the id), so an
auditor never mistakes an id a caller picked (perhaps to collide with another's) for one the server issued.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.redact import scrub
from scimjit.store.db import Database, execute
from scimjit.store.prepared import Prepared
from scimjit.store.tables import audit_log

MAX_IDS = 100  # lists of ids in `details` are capped here; the count is always exact


class RequestId(str):
    """A request id that knows who chose it: `client` (an incoming `X-Request-Id` that was kept) or `server`.
    A `str`, so everything that passes request ids along keeps working; `record()` reads `chosen_by`."""

    chosen_by: str

    def __new__(cls, value: str, chosen_by: str) -> RequestId:
        rid = super().__new__(cls, value)
        rid.chosen_by = chosen_by
        return rid


def capped(ids: list[str] | tuple[str, ...], limit: int = MAX_IDS) -> list[str]:
    """The first `limit` ids: enough to trace, bounded so a 10,000-member PUT writes a small row."""
    return list(ids[:limit])


def record(
    conn: sa.Connection,
    *,
    actor: str | None,
    action: str,
    outcome: str,
    resource_type: str | None = None,
    resource_id: str | None = None,
    request_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    at_micros: int,
) -> None:
    """Append one audit record in the caller's transaction (commits or rolls back with the change).

    - `actor`: who acted: the token name for API calls, `oidc:<sub>` (or the user id) for logins,
      `worker`/`sweeper` for background work, `cli:<user>` for the command line; None if unknown.
    - `action`: dotted name from the list in this module's docstring, e.g. `login.refused`.
    - `outcome`: `success`, `failure`, `allowed`, `refused` or `error`.
    - `resource_type` / `resource_id`: what it was done to (`User` + SCIM id, `Grant` + grant id,
      `Application` + name, `OutboxEvent` + event id, ...).
    - `request_id`: the HTTP request id (`X-Request-Id`), so the audit row, the log line and the client's
      report of a failure can be joined. A `RequestId` the client chose adds `details.requestIdFrom`.
    - `details`: JSON-able facts: changed attribute names, member ids added/removed, the refusal reason,
      the connector result. Scrubbed of secrets here, but do not pass secrets in the first place.
    - `at_micros`: epoch microseconds from the injected clock (`scimjit.clock.to_micros(clock.now())`).
    """
    if getattr(request_id, "chosen_by", None) == "client":
        details = {**(details or {}), "requestIdFrom": "client"}
    execute(
        conn,
        _INSERT,
        {
            "at": at_micros,
            "actor": _clip(actor, 256),
            "action": action[:64],
            "outcome": outcome[:32],
            "resource_type": _clip(resource_type, 64),
            "resource_id": _clip(resource_id, 256),
            "request_id": _clip(request_id, 64),
            "details": scrub(details or {}),
        },
    )


_COLUMNS = ("at", "actor", "action", "outcome", "resource_type", "resource_id", "request_id", "details")
_INSERT = Prepared(audit_log.insert(), _COLUMNS)  # compiled once: it runs inside every write transaction


def record_now(db: Database, *, at: datetime, **fields: Any) -> None:
    """`record()` in a transaction of its own: for events with no surrounding write (a refused login)."""
    with db.write() as conn:
        record(conn, at_micros=to_micros(at), **fields)


def _clip(value: str | None, length: int) -> str | None:
    return None if value is None else str(value)[:length]


def purge(
    db: Database, older_than: datetime, *, batch: int = 5000, progress: Callable[[int], None] | None = None
) -> int:
    """Delete audit records from before `older_than`; returns how many went. Run by the sweeper and by
    `scimjit audit purge`. Deletes in batches, each its own transaction, so a first purge of years of history
    never holds one huge transaction (or, on SQLite, the write lock) for long; `progress` hears each batch."""
    cutoff = to_micros(older_than)
    total = 0
    while True:
        with db.write() as conn:
            ids = (
                sa.select(audit_log.c.id).where(audit_log.c.at < cutoff).order_by(audit_log.c.id).limit(batch)
            )
            deleted = conn.execute(
                audit_log.delete().where(audit_log.c.id.in_(ids.scalar_subquery()))
            ).rowcount
        total += deleted
        if progress is not None and deleted:
            progress(deleted)
        if deleted < batch:
            return total


def purge_expired(db: Database, now: datetime, retention_seconds: float) -> int:
    """Apply the `audit_retention` setting: purge what is older than `now - retention`. 0 keeps forever."""
    if retention_seconds <= 0:
        return 0
    return purge(db, now - timedelta(seconds=retention_seconds))
