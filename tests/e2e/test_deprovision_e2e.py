"""End to end over real sockets: scimjit served by uvicorn with its in-process worker and sweeper, an OIDC
issuer, and a webhook receiver on 127.0.0.1. Users log in to some applications; the IdP then deactivates or
deletes them in its own PATCH / PUT dialect, and the receiver gets exactly the deprovisioning it should:
`account.disable` for each application the user logged in to, and nothing for the ones never used."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.services import Services, compose
from tests.access_helpers import config
from tests.jit_helpers import LocalIssuer, WebhookReceiver
from tests.live_server import serve

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"


@dataclass
class World:
    url: str
    services: Services
    issuer: LocalIssuer
    hook: WebhookReceiver
    clock: Any
    scim: httpx.Client
    admin: dict[str, str]

    def user(self, name: str) -> str:
        r = self.scim.post("/Users", json={"schemas": [USER_URN], "userName": name, "active": True})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def group(self, name: str, members: list[str]) -> str:
        body = {"schemas": [GROUP_URN], "displayName": name, "members": [{"value": m} for m in members]}
        r = self.scim.post("/Groups", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def login(self, name: str, app: str) -> None:
        token = self.issuer.token(self.clock.now().timestamp(), aud=app, preferred_username=name)
        r = httpx.post(
            f"{self.url}/jit/v1/logins",
            json={"application": app, "id_token": token},
            headers=self.admin,
            timeout=30,
        )
        assert r.status_code == 200, r.text

    def wait_for(self, done: Callable[[], bool], what: str) -> None:
        """The worker delivers in the server's own loop: wait (bounded) for the receiver to see it."""
        deadline = time.monotonic() + 15
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.received()}"
            time.sleep(0.02)

    def received(self, *types: str) -> list[tuple[str, str, str]]:
        return [
            (e["type"], e["application"], e["user"]["userName"])
            for e in self.hook.events
            if not types or e["type"] in types
        ]


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@pytest.fixture
def world(db, clock, issuer) -> Iterator[World]:
    with WebhookReceiver().running() as hook:
        raw = config(hook.url, issuer=issuer.url, jit='worker_poll_interval = "0.02s"')
        settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0, document=raw)
        settings.sweep_interval = 0.05
        services = compose(settings, db=db, clock=clock)  # listener, in-process worker and sweeper
        app = create_app(services=services, background=list(services.background))
        admin = {"Authorization": f"Bearer {services.tokens.create('admin', ['admin'])}"}
        with serve(app) as url, httpx.Client(base_url=f"{url}/scim/v2", headers=admin, timeout=30) as scim:
            w = World(url, services, issuer, hook, clock, scim, admin)
            yield w


@pytest.fixture
def people(world) -> dict[str, str]:
    """alice logged in to wiki and chat, bob to wiki only, carol never; all three are entitled to both."""
    ids = {name: world.user(name) for name in ("alice", "bob", "carol")}
    world.group("wiki-users", list(ids.values()))
    world.group("chat-users", list(ids.values()))
    world.login("alice", "wiki")
    world.login("alice", "chat")
    world.login("bob", "wiki")
    world.wait_for(lambda: len(world.received("account.create")) == 3, "the account creations")
    return ids


def patch(world: World, user_id: str, *operations: dict[str, Any]) -> None:
    r = world.scim.patch(f"/Users/{user_id}", json={"schemas": [PATCH_OP], "Operations": list(operations)})
    assert r.status_code == 200, r.text  # a user PATCH answers with the user (no Prefer: return=minimal)


def test_entra_deactivation(world, people):
    patch(world, people["alice"], {"op": "Replace", "path": "active", "value": "False"})
    world.wait_for(lambda: len(world.received("account.disable")) == 2, "alice's disables")
    assert sorted(world.received("account.disable")) == [
        ("account.disable", "chat", "alice"),
        ("account.disable", "wiki", "alice"),
    ]
    patch(world, people["carol"], {"op": "Replace", "path": "active", "value": "False"})  # never logged in
    patch(world, people["alice"], {"op": "Replace", "path": "active", "value": "True"})
    world.wait_for(lambda: len(world.received("account.enable")) == 2, "alice's enables")
    assert [e for e in world.received() if e[2] == "carol"] == []
    assert world.hook.bad_signatures == 0 and world.hook.duplicates == 0


def test_okta_deactivation_by_patch_and_by_put(world, people):
    patch(world, people["bob"], {"op": "replace", "value": {"active": False}})
    world.wait_for(lambda: len(world.received("account.disable")) == 1, "bob's disable")
    assert world.received("account.disable") == [("account.disable", "wiki", "bob")]  # bob never used chat

    body = {"schemas": [USER_URN], "userName": "alice", "active": False}  # Okta updates users with PUT
    r = world.scim.put(f"/Users/{people['alice']}", json=body)
    assert r.status_code == 200, r.text
    world.wait_for(lambda: len(world.received("account.disable")) == 3, "alice's disables")
    assert sorted(world.received("account.disable"))[:2] == [
        ("account.disable", "chat", "alice"),
        ("account.disable", "wiki", "alice"),
    ]
    assert [e for e in world.received() if e[2] == "carol"] == []


def test_delete_user_and_group(world, people):
    r = world.scim.delete(f"/Users/{people['bob']}")
    assert r.status_code == 204
    world.wait_for(lambda: len(world.received("account.delete")) == 1, "bob's delete")
    assert world.received("account.delete") == [("account.delete", "wiki", "bob")]
    assert world.scim.get(f"/Users/{people['bob']}").status_code == 404

    chat = world.scim.get("/Groups", params={"filter": 'displayName eq "chat-users"'}).json()["Resources"][0]
    r = world.scim.delete(f"/Groups/{chat['id']}")
    assert r.status_code == 204
    # the fan-out runs in the sweeper: alice (the only one left with a chat account) loses chat
    world.wait_for(lambda: ("account.disable", "chat", "alice") in world.received(), "the group's fan-out")
    assert world.received("account.disable") == [("account.disable", "chat", "alice")]
