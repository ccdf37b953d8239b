"""The access API over a real socket (SQLite and PostgreSQL): grants and requests under /jit/v1, requests filed
and decided with a `requests` token or with the user's own ID token, SCIM-filtered lists, and TTL expiry seen
by every SCIM read (`members`, `members.value` filters, `User.groups`) at the instant it happens."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.services import Services, compose
from tests.access_helpers import POLICY, config
from tests.jit_helpers import LocalIssuer
from tests.live_server import serve

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
JIT_GROUP = "urn:scimjit:params:scim:schemas:extension:jit:2.0:Group"


@dataclass
class Api:
    url: str
    services: Services
    issuer: LocalIssuer
    clock: Any
    admin: dict[str, str]
    requests: dict[str, str]
    scim: httpx.Client
    ids: dict[str, str]

    def post(self, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        return httpx.post(
            f"{self.url}/jit/v1{path}",
            json=body,
            headers=self.admin if headers is None else headers,
            timeout=30,
        )

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any):
        return httpx.get(
            f"{self.url}/jit/v1{path}",
            params=params,
            headers=self.admin if headers is None else headers,
            timeout=30,
        )

    def id_token(self, name: str) -> str:
        """A fresh sign-in's ID token (its own `jti`, as most IdPs issue)."""
        return self.issuer.token(
            self.clock.now().timestamp(), aud="wiki", preferred_username=name, jti=os.urandom(8).hex()
        )


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@pytest.fixture
def approvals() -> int:
    return 1  # a test may parametrize it


@pytest.fixture
def api(db, clock, issuer, approvals) -> Iterator[Api]:
    raw = config(issuer=issuer.url, jit=POLICY.format(approvals=approvals))
    settings = Settings.load(
        environ={},
        database_url=db.url,
        token_cache_seconds=0,
        document=raw,
        run_sweeper=False,
        run_worker=False,
    )
    services = compose(settings, db=db, clock=clock)
    assert services.listener is services.access.deprovisioner  # SCIM writes deprovision
    assert services.background == ()  # no in-process worker or sweeper with both switched off
    app = create_app(services=services)
    admin = {"Authorization": f"Bearer {services.tokens.create('admin', ['admin'])}"}
    bot = {"Authorization": f"Bearer {services.tokens.create('chat-bot', ['requests'])}"}
    with serve(app) as url, httpx.Client(base_url=f"{url}/scim/v2", headers=admin, timeout=30) as scim:
        ids = {}
        for name in ("alice", "bob", "carol", "mallory"):
            ids[name] = scim.post("/Users", json={"schemas": [USER_URN], "userName": name}).json()["id"]
        for name, members in (
            ("wiki-users", ["alice"]),
            ("engineers", ["alice", "bob"]),
            ("sre-leads", ["bob", "carol"]),
            ("prod-admins", []),
        ):
            body = {
                "schemas": [GROUP_URN],
                "displayName": name,
                "members": [{"value": ids[m]} for m in members],
            }
            ids[name] = scim.post("/Groups", json=body).json()["id"]
        yield Api(url, services, issuer, clock, admin, bot, scim, ids)


def test_grants_create_get_extend_revoke_and_list(api):
    r = api.post(
        "/grants", {"user": "alice", "group": "prod-admins", "duration": "2h", "justification": "incident 7"}
    )
    assert r.status_code == 201, r.text
    grant = r.json()
    assert r.headers["location"].endswith(f"/jit/v1/grants/{grant['id']}")
    assert (grant["userId"], grant["groupId"], grant["status"]) == (
        api.ids["alice"],
        api.ids["prod-admins"],
        "active",
    )
    assert grant["expiresAt"] == "2030-01-01T02:00:00Z" and grant["createdBy"] == "admin"
    assert api.get(f"/grants/{grant['id']}").json() == grant

    r = api.post(f"/grants/{grant['id']}/extend", {"expiresAt": "2030-01-01T05:00:00Z"})
    assert r.status_code == 200 and r.json()["expiresAt"] == "2030-01-01T05:00:00Z"
    other = api.post("/grants", {"user": api.ids["bob"], "group": "prod-admins", "duration": 600}).json()

    listed = api.get("/grants", filter=f'userId eq "{api.ids["alice"]}" and status eq "active"').json()
    assert [g["id"] for g in listed["Resources"]] == [grant["id"]] and listed["totalResults"] == 1
    later = api.get("/grants", filter='expiresAt gt "2030-01-01T01:00:00Z"').json()
    assert [g["id"] for g in later["Resources"]] == [grant["id"]]

    r = httpx.post(f"{api.url}/jit/v1/grants/{other['id']}/revoke", headers=api.admin)  # no body at all
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert api.post(f"/grants/{other['id']}/revoke", {}).json()["error"] == "not_open"


def test_grant_errors_and_scopes(api):
    assert api.post("/grants", {"user": "alice", "group": "prod-admins"}).json()["error"] == "invalid_request"
    r = api.post("/grants", {"user": "nobody", "group": "prod-admins", "duration": "1h"})
    assert (r.status_code, r.json()["error"]) == (404, "unknown_user")
    r = api.post("/grants", {"user": "alice", "group": "prod-admins", "duration": "1h"}, headers=api.requests)
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    r = httpx.post(f"{api.url}/jit/v1/grants", json={})
    assert r.status_code == 401
    assert api.get("/grants/nope").status_code == 404
    assert api.get("/grants", filter="userId eq").status_code == 400


def test_request_by_a_bot_decided_with_an_admin_token_for_the_approver(api):
    body = {"user": "alice", "group": "prod-admins", "duration": "4h", "justification": "release"}
    r = api.post("/requests", body, headers=api.requests)
    assert r.status_code == 201, r.text
    request = r.json()
    assert (request["status"], request["requestedBy"]) == ("pending", "chat-bot")
    assert api.get(f"/requests/{request['id']}", headers=api.requests).json()["status"] == "pending"

    r = api.post(f"/requests/{request['id']}/approve", {"approver": "mallory"})
    assert (r.status_code, r.json()["error"]) == (403, "not_an_approver")
    r = api.post(f"/requests/{request['id']}/approve", {"comment": "go"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")  # name the person
    r = api.post(f"/requests/{request['id']}/approve", {"approver": "bob", "comment": "go"})
    assert r.status_code == 200, r.text
    approved = r.json()
    assert approved["status"] == "approved" and approved["approvals"][0]["comment"] == "go"
    assert (approved["approvals"][0]["approver"], approved["approvals"][0]["via"]) == ("bob", "admin-token")
    grant = api.get(f"/grants/{approved['grantId']}").json()
    assert grant["requestId"] == request["id"] and grant["status"] == "active"
    members = api.scim.get(f"/Groups/{api.ids['prod-admins']}").json()["members"]
    assert [m["value"] for m in members] == [api.ids["alice"]]
    assert api.get("/requests", filter='status eq "approved"').json()["totalResults"] == 1
    decisions = audit(api, "request.approve", request["id"])
    assert [(a["actor"], a["outcome"]) for a in decisions] == [
        ("token:admin", "refused"),
        ("token:admin", "success"),
    ]
    assert decisions[-1]["details"]["approver"] == "bob"
    assert {a["details"]["decidedVia"] for a in decisions} == {"admin-token"}


def test_a_user_requests_with_their_own_id_token_and_cannot_approve_it(api):
    body = {
        "application": "wiki",
        "id_token": api.id_token("bob"),
        "group": "prod-admins",
        "duration": "1h",
        "justification": "db migration",
    }
    r = api.post("/requests", body, headers={})
    assert r.status_code == 201, r.text
    request = r.json()
    assert request["userId"] == api.ids["bob"] and request["requestedBy"].startswith("oidc:")
    r = api.post(f"/requests/{request['id']}/approve", {"approver": "bob"})
    assert (r.status_code, r.json()["error"]) == (403, "self_approval")
    r = api.post(f"/requests/{request['id']}/deny", {"approver": "bob"})
    assert r.json()["error"] == "self_approval"

    forged = api.issuer.token(api.clock.now().timestamp(), aud="other", preferred_username="bob")
    r = api.post("/requests", {**body, "id_token": forged}, headers={})
    assert (r.status_code, r.json()["error"]) == (401, "wrong_audience")
    r = api.post(
        "/requests", {k: v for k, v in body.items() if k not in ("id_token", "application")}, headers={}
    )
    assert r.status_code == 401  # no ID token and no scimjit token


# ------------------------------------------------------- issue 12: decisions belong to authenticated people


@pytest.mark.parametrize("approvals", [2])
def test_a_requests_token_files_but_never_decides_not_even_as_two_named_approvers(api, approvals):
    """The bot of the issue: one `requests` token filed, then 'approved' as bob and as carol."""
    body = {"user": "alice", "group": "prod-admins", "duration": "4h", "justification": "release"}
    request = api.post("/requests", body, headers=api.requests).json()
    for approver in ("bob", "carol"):
        for decision in ("approve", "deny"):
            r = api.post(
                f"/requests/{request['id']}/{decision}", {"approver": approver}, headers=api.requests
            )
            assert (r.status_code, r.json()["error"]) == (403, "forbidden"), r.text
    after = api.get(f"/requests/{request['id']}").json()
    assert (after["status"], after["approvals"], after.get("grantId")) == ("pending", [], None)
    assert api.get("/grants", filter=f'userId eq "{api.ids["alice"]}"').json()["totalResults"] == 0
    assert api.scim.get(f"/Groups/{api.ids['prod-admins']}").json().get("members", []) == []
    assert audit(api, "request.approve", request["id"]) == []

    # the same two people, through an admin token: recorded as such, and it takes both of them
    assert api.post(f"/requests/{request['id']}/approve", {"approver": "bob"}).json()["status"] == "pending"
    done = api.post(f"/requests/{request['id']}/approve", {"approver": "carol"}).json()
    assert done["status"] == "approved"
    assert [(a["approver"], a["via"]) for a in done["approvals"]] == [
        ("bob", "admin-token"),
        ("carol", "admin-token"),
    ]


@pytest.mark.parametrize("application", ["chat", "wiki"])
def test_an_id_token_is_no_credential_for_deciding(api, application):
    """bob's browser holds an ID token for a configured application (`aud=chat`, or wiki's own): no decision
    with it, with or without a scimjit token beside it, and nothing is recorded as bob's decision."""
    request = api.post(
        "/requests",
        {"user": "alice", "group": "prod-admins", "duration": "4h", "justification": "release"},
        headers=api.requests,
    ).json()
    token = api.issuer.token(api.clock.now().timestamp(), aud=application, preferred_username="bob")
    for headers in ({}, api.requests, api.admin):
        for decision in ("approve", "deny"):
            r = api.post(
                f"/requests/{request['id']}/{decision}",
                {"application": application, "id_token": token},
                headers=headers,
            )
            assert (r.status_code, r.json()["error"]) == (403, "id_token_not_accepted"), r.text
    after = api.get(f"/requests/{request['id']}").json()
    assert (after["status"], after["approvals"]) == ("pending", [])
    assert audit(api, "request.approve", request["id"]) == []


def test_an_id_token_files_one_request_and_a_replay_is_refused(api):
    token = api.id_token("bob")
    body = {"application": "wiki", "id_token": token, "duration": "1h", "justification": "db migration"}
    r = api.post("/requests", {**body, "group": "no-such-group"}, headers={})
    assert (r.status_code, r.json()["error"]) == (404, "unknown_group")  # refused: the token is not used up
    first = api.post("/requests", {**body, "group": "prod-admins"}, headers={})
    assert first.status_code == 201, first.text
    for group in ("prod-admins", "wiki-users"):  # the same token again, for anything
        r = api.post("/requests", {**body, "group": group}, headers={})
        assert (r.status_code, r.json()["error"]) == (401, "token_replayed"), r.text
    mine = api.get("/requests", filter=f'userId eq "{api.ids["bob"]}"').json()
    assert [q["id"] for q in mine["Resources"]] == [first.json()["id"]]
    assert api.post(f"/requests/{first.json()['id']}/deny", {"approver": "carol"}).status_code == 200
    fresh = api.post(
        "/requests", {**body, "id_token": api.id_token("bob"), "group": "prod-admins"}, headers={}
    )
    assert fresh.status_code == 201, fresh.text  # a new sign-in, a new token


def test_a_token_without_jti_is_single_use_too(api):
    now = api.clock.now().timestamp()
    token = api.issuer.token(now, aud="wiki", preferred_username="bob", nonce="n-1")
    body = {"application": "wiki", "id_token": token, "duration": "1h", "justification": "x"}
    assert api.post("/requests", {**body, "group": "prod-admins"}, headers={}).status_code == 201
    r = api.post("/requests", {**body, "group": "engineers"}, headers={})
    assert (r.status_code, r.json()["error"]) == (401, "token_replayed")


def audit(api: Api, action: str, resource_id: str) -> list[dict[str, Any]]:
    found = api.get("/audit", filter=f'action eq "{action}" and resourceId eq "{resource_id}"', sortBy="id")
    assert found.status_code == 200, found.text
    return list(found.json()["Resources"])


def test_ttl_expiry_is_seen_by_every_scim_read_at_once(api):
    body = {
        "schemas": [GROUP_URN, JIT_GROUP],
        "displayName": "contractors",
        JIT_GROUP: {"membershipTTL": 300},
    }
    body["members"] = [{"value": api.ids["mallory"]}]
    group = api.scim.post("/Groups", json=body).json()
    assert group[JIT_GROUP] == {"membershipTTL": 300}
    by_member = {"filter": f'members.value eq "{api.ids["mallory"]}"'}
    api.clock.advance(299)
    assert [g["displayName"] for g in api.scim.get("/Groups", params=by_member).json()["Resources"]] == [
        "contractors"
    ]
    assert [g["display"] for g in api.scim.get(f"/Users/{api.ids['mallory']}").json()["groups"]] == [
        "contractors"
    ]
    api.clock.advance(1)
    assert api.scim.get("/Groups", params=by_member).json()["totalResults"] == 0
    assert "members" not in api.scim.get(f"/Groups/{group['id']}").json()
    assert "groups" not in api.scim.get(f"/Users/{api.ids['mallory']}").json()
    # and the sweeper tidies up later without anything to send (mallory has no account)
    report = api.services.access.sweeper.sweep_once()
    assert (report.memberships_expired, report.events) == (1, 0)


def test_an_id_token_spelling_a_name_with_a_kelvin_sign_files_nothing(api):
    """The access API's ID-token identity uses the login's match (PRECIS keys, RFC 8265): "kim" with U+212A
    KELVIN SIGN is not the user kim, where `str.lower` made it so."""
    r = api.scim.post("/Users", json={"schemas": [USER_URN], "userName": "kim"})
    assert r.status_code == 201, r.text
    body = {"group": "prod-admins", "duration": "1h", "justification": "db migration", "application": "wiki"}
    r = api.post("/requests", {**body, "id_token": api.id_token("\u212aim")}, headers={})
    assert (r.status_code, r.json()["error"]) == (403, "unknown_user")
    assert "U+212A KELVIN SIGN" in r.json()["detail"]
    assert api.get("/requests").json()["totalResults"] == 0
    r = api.post("/requests", {**body, "id_token": api.id_token("KIM")}, headers={})
    assert (r.status_code, r.json()["error"]) == (403, "not_eligible")  # KIM is kim, judged by the policy
