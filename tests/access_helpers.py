"""Shared setup for the just-in-time access and deprovisioning tests: two applications (`wiki`, `chat`) whose
webhooks go to one receiver, the `Access` service over the test database and a frozen clock, SCIM writes
through the store's resource operations (so the listener runs exactly as under HTTP), and ledger seeding."""

from __future__ import annotations

import tomllib
from typing import Any

import sqlalchemy as sa

from scimjit.access.service import Access
from scimjit.clock import FrozenClock, to_micros
from scimjit.config import Settings
from scimjit.entitlement import ledger
from scimjit.scim.projection import parse_projection
from scimjit.scim.schema import GROUP_URN, USER_URN, load_registry
from scimjit.services import EngineParts, Services
from scimjit.store import resources as ops
from scimjit.store.db import Database
from scimjit.store.tables import accounts, outbox

REGISTRY = load_registry()

CONFIG = """
[[applications]]
name = "wiki"
issuer = "{issuer}"
audience = ["wiki"]
match = {{ claim = "preferred_username", attribute = "userName" }}
groups = ["wiki-users"]
roles = {{ "wiki-admins" = "admin", "prod-admins" = "prod" }}
on_unentitled = "{on_unentitled}"
grace_period = "{grace}"

[applications.connector]
type = "webhook"
url = "{webhook}"
secret = "change-me"

[[applications]]
name = "chat"
issuer = "{issuer}"
audience = ["chat"]
match = {{ claim = "preferred_username", attribute = "userName" }}
groups = ["chat-users"]
on_unentitled = "disable"

[applications.connector]
type = "webhook"
url = "{webhook}"
secret = "change-me"

[jit]
login_wait = "1s"
{jit}
"""

POLICY = """
expiry_notice = "15m"

[[jit.policies]]
group = "prod-admins"
eligible = ["engineers"]
max_duration = "8h"
approvers = ["sre-leads"]
approvals_required = {approvals}
auto_approve = {{ max_duration = "1h", eligible = ["oncall"] }}
pending_ttl = "24h"
"""


def config(
    webhook: str = "http://127.0.0.1:9/events",
    *,
    issuer: str = "http://127.0.0.1:9",
    on_unentitled: str = "disable",
    grace: str = "0s",
    jit: str = "",
) -> dict[str, Any]:
    text = CONFIG.format(issuer=issuer, webhook=webhook, on_unentitled=on_unentitled, grace=grace, jit=jit)
    return tomllib.loads(text)


def make_access(db: Database, clock: FrozenClock, raw: dict[str, Any] | None = None, **kwargs: Any) -> Access:
    """The `Access` the composition root builds; `kwargs` are `EngineParts` (connectors, fetcher, rng)."""
    settings = Settings.load(environ={}, document=raw or config())
    return Services.build(settings, db=db, clock=clock, parts=EngineParts(**kwargs)).access


class Directory:
    """SCIM writes through `store.resources` with the access service's listener, at the clock's time."""

    def __init__(self, db: Database, clock: FrozenClock, access: Access) -> None:
        self.db = db
        self.clock = clock
        self.access = access

    def ctx(self) -> ops.Context:
        projection = parse_projection(REGISTRY, REGISTRY.resource_type("User"), None, None)
        return ops.Context(
            self.db,
            REGISTRY,
            self.access.deprovisioner,
            to_micros(self.clock.now()),
            "http://test/scim/v2",
            projection,
            actor="test",
        )

    def user(self, name: str, *, active: bool = True) -> str:
        doc = {"schemas": [USER_URN], "userName": name, "active": active, "displayName": name.title()}
        return str(ops.create_user(self.ctx(), doc).document["id"])

    def group(self, name: str, members: list[str] = (), **extension: Any) -> str:  # type: ignore[assignment]
        doc: dict[str, Any] = {
            "schemas": [GROUP_URN],
            "displayName": name,
            "members": [{"value": m} for m in members],
        }
        if extension:
            doc["schemas"].append("urn:scimjit:params:scim:schemas:extension:jit:2.0:Group")
            doc["urn:scimjit:params:scim:schemas:extension:jit:2.0:Group"] = extension
        return str(ops.create_group(self.ctx(), doc).document["id"])

    def patch_user(self, user_id: str, *operations: dict[str, Any]) -> dict[str, Any]:
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": list(operations)}
        return ops.patch_user(self.ctx(), user_id, body, None).document

    def patch_group(self, group_id: str, *operations: dict[str, Any]) -> dict[str, Any]:
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": list(operations)}
        return ops.patch_group(self.ctx(), group_id, body, None).document

    def add(self, group_id: str, *members: str) -> None:
        self.patch_group(group_id, {"op": "add", "path": "members", "value": [{"value": m} for m in members]})

    def remove(self, group_id: str, *members: str) -> None:
        for m in members:
            self.patch_group(group_id, {"op": "remove", "path": f'members[value eq "{m}"]'})

    def delete_user(self, user_id: str) -> None:
        ops.delete_user(self.ctx(), user_id, None)

    def delete_group(self, group_id: str) -> None:
        ops.delete_group(self.ctx(), group_id, None)

    def read_group(self, group_id: str) -> dict[str, Any]:
        return ops.read_one(self.ctx(), "Group", group_id)[0]

    def read_user(self, user_id: str) -> dict[str, Any]:
        return ops.read_one(self.ctx(), "User", user_id)[0]


def give_account(
    db: Database,
    app: str,
    user_id: str,
    roles: list[str] = (),
    status: str = "active",  # type: ignore[assignment]
) -> None:
    """The ledger row a first login leaves behind (the user "logged in" to `app`)."""
    with db.write() as conn:
        conn.execute(
            accounts.insert().values(
                application=app,
                user_id=user_id,
                user_name=user_id,
                downstream_id=f"{app}-{user_id}",
                status=status,
                roles=list(roles),
                created_at=1,
                updated_at=1,
                version=1,
            )
        )


def account(db: Database, app: str, user_id: str) -> Any:
    with db.read() as conn:
        return ledger.get(conn, app, user_id)


def events(db: Database, *types: str) -> list[dict[str, Any]]:
    """Outbox event documents in order, optionally only of some types."""
    with db.read() as conn:
        rows = conn.execute(sa.select(outbox.c.payload).order_by(outbox.c.id)).scalars().all()
    return [dict(r) for r in rows if not types or r["type"] in types]


def summary(db: Database, *types: str) -> list[tuple[str, str, str, str | None]]:
    """(type, application, userName, role) of each outbox event, in order."""
    return [
        (e["type"], e["application"], e["user"].get("userName"), e.get("role")) for e in events(db, *types)
    ]


def clear_outbox(db: Database) -> None:
    with db.write() as conn:
        conn.execute(outbox.delete())
