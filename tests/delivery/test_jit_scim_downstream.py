"""The `scim` connector provisioning into a second, real scimjit instance (its own database, its own bearer
token): the account really appears there on first login, and later events change it there."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scimjit.clock import FrozenClock
from scimjit.config import Settings
from scimjit.delivery import outbox
from scimjit.delivery.connectors.base import ACCOUNT_DELETE, ACCOUNT_DISABLE, ACCOUNT_ENABLE, ROLE_REVOKE
from scimjit.http.app import create_app
from scimjit.services import Services
from scimjit.store.db import Database
from scimjit.store.migrate import upgrade
from tests.jit_helpers import LocalIssuer, add_group, add_user, engine_for, remove_members, update_user
from tests.live_server import serve


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


class Downstream:
    def __init__(self, url: str, token: str) -> None:
        self.scim = f"{url}/scim/v2"
        self.token = token
        self.client = httpx.Client(
            base_url=self.scim, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def user(self, user_name: str) -> dict[str, Any] | None:
        found = self.client.get("/Users", params={"filter": f'userName eq "{user_name}"'}).json()
        return found["Resources"][0] if found["totalResults"] else None

    def group_members(self, name: str) -> list[str]:
        found = self.client.get("/Groups", params={"filter": f'displayName eq "{name}"'}).json()
        if not found["totalResults"]:
            return []
        return [m["value"] for m in found["Resources"][0].get("members", [])]


@pytest.fixture
def downstream(tmp_path) -> Iterator[Downstream]:
    """Another scimjit, as the application's SCIM service provider."""
    db = Database(f"sqlite:///{tmp_path}/downstream.db")
    upgrade(db)
    settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0)
    services = Services.build(settings, db=db, clock=FrozenClock())
    token = services.tokens.create("upstream", ["scim:read", "scim:write"])
    with serve(create_app(services=services)) as url:
        ds = Downstream(url, token)
        yield ds
        ds.client.close()
    db.dispose()


def scim_config(issuer_url: str, downstream: Downstream) -> dict[str, Any]:
    return {
        "applications": [
            {
                "name": "crm",
                "issuer": issuer_url,
                "audience": ["crm"],
                "match": {"claim": "preferred_username", "attribute": "userName"},
                "groups": ["crm-users"],
                "roles": {"crm-admins": "admin", "crm-users": "member"},
                "connector": {"type": "scim", "url": downstream.scim, "token": downstream.token},
            }
        ]
    }


def test_the_account_appears_downstream_and_follows_changes(db, clock, issuer, downstream):
    alice = add_user(
        db, "alice", emails=["alice@example.com"], name={"givenName": "Alice", "familyName": "Liddell"}
    )
    add_group(db, "crm-users", [alice])
    admins = add_group(db, "crm-admins", [alice])
    engine = engine_for(db, clock, scim_config(issuer.url, downstream))

    def login() -> Any:
        token = issuer.token(clock.now().timestamp(), aud="crm", preferred_username="alice")
        return asyncio.run(engine.login("crm", token))

    first = login()
    assert first.body["account"]["status"] == "created"
    remote = downstream.user("alice")
    assert remote is not None
    assert first.body["account"]["downstreamId"] == remote["id"]
    assert remote["externalId"] == alice and remote["active"] is True
    assert remote["emails"][0]["value"] == "alice@example.com" and remote["name"]["familyName"] == "Liddell"
    assert sorted(m for m in downstream.group_members("admin")) == [remote["id"]]
    assert downstream.group_members("member") == [remote["id"]]
    assert login().body["account"]["status"] == "existing"
    assert downstream.client.get("/Users").json()["totalResults"] == 1

    # profile and role changes: account.update and role.revoke through the outbox
    update_user(db, alice, displayName="Alice L.")
    remove_members(db, admins, [alice])
    login()
    reports = asyncio.run(engine.deliverer.drain())
    assert [(r.type, r.status) for r in reports] == [("account.update", "done"), ("role.revoke", "done")]
    assert downstream.user("alice")["displayName"] == "Alice L."
    assert downstream.group_members("admin") == []
    assert downstream.group_members("member") == [remote["id"]]

    def deliver(type_: str, **extra: Any) -> None:
        event = outbox.new_event(type_, "crm", first.body["user"], [], clock.now(), **extra)
        with db.write() as conn:
            outbox.enqueue(conn, event, user_id=alice, now=clock.now())
        (report,) = asyncio.run(engine.deliver_due())
        assert report.status == "done", report.error

    deliver(ACCOUNT_DISABLE)
    assert downstream.user("alice")["active"] is False
    deliver(ACCOUNT_ENABLE)
    assert downstream.user("alice")["active"] is True
    deliver(ROLE_REVOKE, role="admin")  # already revoked: idempotent
    deliver(ACCOUNT_DELETE)
    assert downstream.user("alice") is None
    deliver(ACCOUNT_DELETE)  # deleting again is "already deleted", not an error


def test_a_repeated_create_finds_the_existing_account(db, clock, issuer, downstream):
    """A create retried after the downstream already made the user (lost response) does not duplicate it."""
    bob = add_user(db, "bob")
    add_group(db, "crm-users", [bob])
    r = downstream.client.post(
        "/Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bob"}
    )
    assert r.status_code == 201
    engine = engine_for(db, clock, scim_config(issuer.url, downstream))
    token = issuer.token(clock.now().timestamp(), aud="crm", preferred_username="bob")
    result = asyncio.run(engine.login("crm", token))
    assert result.body["account"] == {
        "status": "created",
        "downstreamId": r.json()["id"],
        "application": "crm",
    }
    assert downstream.client.get("/Users").json()["totalResults"] == 1


def test_a_bad_downstream_token_is_a_permanent_failure(db, clock, issuer, downstream):
    carol = add_user(db, "carol")
    add_group(db, "crm-users", [carol])
    raw = scim_config(issuer.url, downstream)
    raw["applications"][0]["connector"]["token"] = "sjt_wrong_wrong"
    engine = engine_for(db, clock, raw)
    token = issuer.token(clock.now().timestamp(), aud="crm", preferred_username="carol")
    from scimjit.jiterrors import JitError

    with pytest.raises(JitError) as excinfo:
        asyncio.run(engine.login("crm", token))
    assert excinfo.value.reason == "provisioning_failed"
    assert "401" in excinfo.value.detail
