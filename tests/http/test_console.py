"""The web console over HTTP, against a real server and the real OIDC provider of pytest-iam: sign-in
(code flow + PKCE, single-use state), the session and CSRF checks, the requester and approver actions
through the access rules, the admin pages and every refusal as a page. The browser run of the same story
is tests/e2e/test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from scimjit.clock import FrozenClock
from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.services import Services
from scimjit.store.tables import access_requests, audit_log, grants
from tests.console_helpers import Idp, console_document, seed_directory, sign_in
from tests.live_server import serve


class World:
    def __init__(
        self, url: str, services: Services, clock: FrozenClock, idp: Idp, ids: dict[str, str]
    ) -> None:
        self.url, self.services, self.clock, self.idp, self.ids = url, services, clock, idp, ids

    def sign_in(self, name: str) -> httpx.Client:
        return sign_in(self.idp, self.url, name)


@pytest.fixture(scope="session")
def idp(iam_server) -> Idp:
    return Idp.of(iam_server)


@pytest.fixture
def policy() -> dict[str, Any]:
    """Changes to the prod-admins policy (a test parametrizes `policy` to change it)."""
    return {}


@pytest.fixture
def world(db, idp, policy) -> Iterator[World]:
    clock = FrozenClock(datetime.now(UTC))  # the provider signs with real time
    document = console_document(idp.issuer)
    document["jit"]["policies"][0].update(policy)
    settings = Settings.load(
        environ={},
        database_url=db.url,
        token_cache_seconds=0,
        session_secret="console-test-secret-" + "x" * 20,
        document=document,
    )
    services = Services.build(settings, db=db, clock=clock)
    ids = seed_directory(db)
    with serve(create_app(services=services)) as url:
        services.settings.base_url = url
        idp.register(url)
        yield World(url, services, clock, idp, ids)


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def file_request(
    client: httpx.Client, duration: str = "3600s", group: str = "prod-admins", **more: str
) -> httpx.Response:
    token = csrf(client.get("/console/").text)
    body = {"csrf": token, "group": group, "duration": duration, "justification": "deploy the fix", **more}
    return client.post("/console/requests", data=body)


def rows(db, table: sa.Table, *where: Any) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(table).where(*where)))


def audit(db, action: str) -> list[Any]:
    return rows(db, audit_log, audit_log.c.action == action)


def test_request_approve_and_see_the_grant(db, world):
    alice = world.sign_in("alice")
    home = alice.get("/console/")
    assert home.status_code == 200 and "prod-admins" in home.text and 'id="who">alice<' in home.text
    filed = file_request(alice)
    assert filed.status_code == 303 and filed.headers["location"] == "/console/?note=requested"
    (pending,) = rows(db, access_requests)
    assert pending.status == "pending" and pending.user_id == world.ids["alice"]
    assert pending.requested_by == "console:alice" and pending.duration_seconds == 3600

    # her own request is never in her queue, and she cannot decide it
    assert pending.id not in alice.get("/console/approvals").text
    token = csrf(alice.get("/console/").text)
    refused = alice.post(f"/console/requests/{pending.id}/approve", data={"csrf": token})
    assert refused.status_code == 403 and "You cannot decide your own request" in refused.text
    assert rows(db, access_requests)[0].status == "pending"

    bob = world.sign_in("bob")
    queue = bob.get("/console/approvals")
    assert f'data-id="{pending.id}"' in queue.text and 'data-requester="alice"' in queue.text
    assert "deploy the fix" in queue.text
    decided = bob.post(
        f"/console/requests/{pending.id}/approve", data={"csrf": csrf(queue.text), "comment": "go ahead"}
    )
    assert decided.status_code == 303
    (approved,) = rows(db, access_requests)
    assert approved.status == "approved" and approved.approvals[0]["approver"] == "bob"
    assert approved.approvals[0]["via"] == "console" and approved.approvals[0]["comment"] == "go ahead"
    (grant,) = rows(db, grants)
    assert grant.user_id == world.ids["alice"] and grant.status == "active"
    approvals = [r for r in audit(db, "request.approve") if r.details.get("approved")]
    assert [(r.actor, r.details["decidedVia"]) for r in approvals] == [("console:bob", "console")]

    mine = alice.get("/console/")
    assert 'class="grant" data-group="prod-admins"' in mine.text and '<td class="left">1h</td>' in mine.text


def test_the_requester_never_decides_their_own_request(db, world):
    """dave is an engineer and an sre-lead: he may approve others, never himself."""
    dave = world.sign_in("dave")
    assert file_request(dave).status_code == 303
    (pending,) = rows(db, access_requests)
    assert pending.id not in dave.get("/console/approvals").text
    token = csrf(dave.get("/console/").text)
    refused = dave.post(f"/console/requests/{pending.id}/approve", data={"csrf": token})
    assert refused.status_code == 403 and "You cannot decide your own request" in refused.text
    assert rows(db, access_requests)[0].status == "pending"
    (audited,) = [r for r in audit(db, "request.approve") if r.outcome == "refused"]
    assert audited.actor == "console:dave" and audited.details["reason"] == "self_approval"


def test_refusal_pages(db, world):
    alice = world.sign_in("alice")
    too_long = file_request(alice, duration="32400s")
    assert too_long.status_code == 400 and "longer than this group allows" in too_long.text
    carol = world.sign_in("carol")  # not an engineer
    offered = carol.get("/console/").text
    assert "There is nothing you may request" in offered
    not_eligible = file_request(carol)
    assert not_eligible.status_code == 403 and "You cannot request this group" in not_eligible.text
    form = carol.get("/console/request", params={"group": "prod-admins"})
    assert form.status_code == 403 and "You cannot request this group" in form.text
    unknown = carol.get("/console/request", params={"group": "engineers"})
    assert unknown.status_code == 403 and "This group cannot be requested" in unknown.text
    assert rows(db, access_requests) == []

    assert file_request(alice).status_code == 303
    (pending,) = rows(db, access_requests)
    bob = world.sign_in("bob")
    token = csrf(bob.get("/console/approvals").text)
    assert bob.post(f"/console/requests/{pending.id}/deny", data={"csrf": token}).status_code == 303
    again = bob.post(f"/console/requests/{pending.id}/approve", data={"csrf": token})
    assert again.status_code == 409 and "already decided" in again.text
    assert rows(db, access_requests)[0].status == "denied" and rows(db, grants) == []
    for page in (too_long, not_eligible, again):
        assert "Traceback" not in page.text


def test_cancel_my_request_and_ask_to_extend(db, world):
    alice = world.sign_in("alice")
    assert file_request(alice).status_code == 303
    (pending,) = rows(db, access_requests)
    bob = world.sign_in("bob")
    token = csrf(bob.get("/console/").text)
    assert bob.post(f"/console/requests/{pending.id}/cancel", data={"csrf": token}).status_code == 403
    token = csrf(alice.get("/console/").text)
    assert alice.post(f"/console/requests/{pending.id}/cancel", data={"csrf": token}).status_code == 303
    assert rows(db, access_requests)[0].status == "cancelled"
    assert [r.actor for r in audit(db, "request.cancel")] == ["console:alice"]
    assert (
        bob.post(
            f"/console/requests/{pending.id}/approve", data={"csrf": csrf(bob.get("/console/").text)}
        ).status_code
        == 409
    )

    # an active grant offers "ask to extend": a request that starts when the grant ends
    world.services.access.create_grant(user="alice", group="prod-admins", duration="1h", actor="test")
    home = alice.get("/console/").text
    link = re.search(r'href="(/console/request\?group=prod-admins&extend=[^"]+)"', home)
    assert link
    form = alice.get(link.group(1)).text
    assert "Ask to extend prod-admins" in form
    starts = re.search(r'name="starts_at_utc" value="([^"]+)"', form).group(1)
    body = {
        "csrf": csrf(form),
        "group": "prod-admins",
        "duration": "7200s",
        "justification": "longer",
        "starts_at_utc": starts,
    }
    assert alice.post("/console/requests", data=body).status_code == 303
    extension = [r for r in rows(db, access_requests) if r.status == "pending"]
    (grant,) = rows(db, grants)
    assert len(extension) == 1 and extension[0].starts_at == grant.expires_at


def test_forms_need_the_session_csrf_token(db, world):
    alice = world.sign_in("alice")
    body = {"group": "prod-admins", "duration": "3600s", "justification": "x"}
    missing = alice.post("/console/requests", data=body)
    forged = alice.post("/console/requests", data={**body, "csrf": "0" * 64})
    bob = world.sign_in("bob")
    someone_elses = alice.post("/console/requests", data={**body, "csrf": csrf(bob.get("/console/").text)})
    for response in (missing, forged, someone_elses):
        assert response.status_code == 403 and "This form has expired" in response.text
    assert rows(db, access_requests) == []


def test_signed_out_tampered_and_ended_sessions(db, world):
    anonymous = httpx.Client(base_url=world.url)
    page = anonymous.get("/console/")
    assert page.status_code == 401 and 'href="/console/login?next=/console/"' in page.text
    post = anonymous.post("/console/requests", data={"group": "prod-admins"})
    assert post.status_code == 401 and "You are signed out" in post.text

    alice = world.sign_in("alice")
    cookie = alice.cookies.get("scimjit_console")
    assert cookie
    tampered = httpx.Client(base_url=world.url, cookies={"scimjit_console": cookie[:-2] + "xx"})
    assert tampered.get("/console/").status_code == 401
    world.clock.advance(8 * 3600 + 1)  # session_lifetime
    assert alice.get("/console/").status_code == 401


def test_sign_out_clears_the_session(world):
    alice = world.sign_in("alice")
    token = csrf(alice.get("/console/").text)
    out = alice.post("/console/logout", data={"csrf": token})
    assert out.status_code == 200 and "You are signed out" in out.text
    assert "scimjit_console" not in alice.cookies
    assert alice.get("/console/").status_code == 401


def test_cookie_attributes(world):
    client = httpx.Client(base_url=world.url)
    start = client.get("/console/login")
    state_cookie = start.headers["set-cookie"].lower()
    assert (
        "httponly" in state_cookie
        and "samesite=lax" in state_cookie
        and "path=/console/callback" in state_cookie
    )
    world.idp.as_("alice")
    try:
        back = client.get(httpx.get(start.headers["location"]).headers["location"])
    finally:
        world.idp.iam.logout()
    header = next(v for k, v in back.headers.multi_items() if k == "set-cookie" and "scimjit_console=" in v)
    header = header.lower()
    assert "httponly" in header and "samesite=lax" in header and "path=/console" in header
    assert "secure" not in header  # base_url is http here; https turns Secure on


def _callback(world: World, client: httpx.Client, **params: str) -> str:
    start = client.get("/console/login", params=params)
    world.idp.as_("alice")
    try:
        return str(httpx.get(start.headers["location"]).headers["location"])
    finally:
        world.idp.iam.logout()


def test_a_state_is_used_once(world):
    client = httpx.Client(base_url=world.url)
    callback = _callback(world, client)
    state = httpx.URL(callback).params["state"]
    assert client.get(callback).status_code == 303
    # the same callback again, even from a browser holding the state cookie: the state is gone
    replay = httpx.Client(base_url=world.url, cookies={"scimjit_console_state": state}).get(callback)
    assert replay.status_code == 400 and "This sign-in expired" in replay.text
    assert "scimjit_console=" not in replay.headers.get("set-cookie", "")


def test_a_callback_from_another_browser_is_refused(world):
    """Login CSRF: an attacker's own callback URL sent to a victim does not sign the victim in as them."""
    attacker = httpx.Client(base_url=world.url)
    callback = _callback(world, attacker)
    victim = httpx.Client(base_url=world.url).get(callback)
    assert victim.status_code == 400 and "not started in this browser" in victim.text
    assert "scimjit_console=" not in victim.headers.get("set-cookie", "")
    assert attacker.get(callback).status_code == 303  # the state was not used up by the refused attempt


def test_redirect_uri_is_built_from_base_url_not_host(world):
    start = httpx.get(f"{world.url}/console/login", headers={"Host": "evil.example"})
    params = httpx.URL(start.headers["location"]).params
    assert params["redirect_uri"] == f"{world.url}/console/callback"
    assert params["code_challenge_method"] == "S256" and params["nonce"]


def test_only_console_paths_are_followed_after_sign_in(world):
    client = httpx.Client(base_url=world.url)
    callback = _callback(world, client, next="https://evil.example/")
    assert client.get(callback).headers["location"] == "/console/"


def test_admin_pages(db, world):
    alice = world.sign_in("alice")
    assert alice.get("/console/admin/users").status_code == 403
    assert "/console/admin/audit" not in alice.get("/console/").text
    assert file_request(alice).status_code == 303
    world.services.access.create_grant(user="alice", group="prod-admins", duration="1h", actor="test")
    carol = world.sign_in("carol")
    users = carol.get("/console/admin/users", params={"filter": 'userName sw "a"'})
    assert users.status_code == 200 and ">alice<" in users.text and ">bob<" not in users.text
    groups = carol.get("/console/admin/groups", params={"filter": 'displayName eq "sre-leads"'})
    assert ">sre-leads<" in groups.text and ">engineers<" not in groups.text
    expiring = carol.get("/console/admin/expiring")
    assert 'data-user="alice"' in expiring.text
    trail = carol.get("/console/admin/audit", params={"filter": 'action eq "request.create"'})
    assert 'data-action="request.create" data-actor="console:alice"' in trail.text
    assert 'data-action="grant.create"' not in trail.text
    bad = carol.get("/console/admin/audit", params={"filter": "action eq"})
    assert bad.status_code == 400 and "The filter is not valid" in bad.text
    assert carol.get("/console/admin/accounts").status_code == 200
    assert carol.get("/console/admin/dead").status_code == 200


def test_lists_page_in_sql(db, world):
    """A page holds `page_size` rows and says how many there are; page 2 holds the rest."""
    from tests.jit_helpers import add_user

    for i in range(120):
        add_user(db, f"user{i:03d}")
    carol = world.sign_in("carol")
    first = carol.get("/console/admin/users").text
    assert "124 in all, page 1" in first and first.count("<tr>") == 51  # header + page_size (50)
    third = carol.get("/console/admin/users", params={"page": "3"}).text
    assert third.count("<tr>") == 1 + 24 and "Next" not in third


def test_console_off_without_its_table(db):
    services = Services.build(Settings.load(environ={}, database_url=db.url))
    with serve(create_app(services=services)) as url:
        assert httpx.get(f"{url}/console/").status_code == 404
        assert httpx.get(f"{url}/console/login").status_code == 404
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        assert not any(p.startswith("/console") for p in paths)


def test_dead_letters_are_listed_and_retried(db, world):
    from scimjit.delivery import outbox
    from scimjit.store.tables import outbox as outbox_table

    now = world.clock.now()
    with db.write() as conn:
        event = outbox.new_event("account.create", "wiki", {"id": world.ids["alice"]}, [], now)
        dead = outbox.enqueue(conn, event, user_id=world.ids["alice"], now=now)
        conn.execute(
            outbox_table.update()
            .where(outbox_table.c.id == dead)
            .values(status="dead", last_error="HTTP 500")
        )
        kept = outbox.enqueue(
            conn, outbox.new_event("account.update", "wiki", {}, [], now), user_id=None, now=now
        )
    carol = world.sign_in("carol")
    page = carol.get("/console/admin/dead").text
    assert f"/console/admin/dead/{dead}/retry" in page and "HTTP 500" in page
    assert f"/console/admin/dead/{kept}/retry" not in page  # pending events are not dead letters
    retried = carol.post(f"/console/admin/dead/{dead}/retry", data={"csrf": csrf(page)})
    assert retried.status_code == 303
    assert {r.id: r.status for r in rows(db, outbox_table)}[dead] == "pending"
    again = carol.post(f"/console/admin/dead/{dead}/retry", data={"csrf": csrf(page)})
    assert again.status_code == 409 and "Traceback" not in again.text
    alice = world.sign_in("alice")
    refused = alice.post(
        f"/console/admin/dead/{dead}/retry", data={"csrf": csrf(alice.get("/console/").text)}
    )
    assert refused.status_code == 403 and "Administrators only" in refused.text


def test_what_people_type_is_shown_as_text_and_a_later_start_is_kept(db, world):
    alice = world.sign_in("alice")
    filed = file_request(alice, justification="<script>alert(1)</script>", starts_at="2030-01-01T08:00")
    assert filed.status_code == 303
    (pending,) = rows(db, access_requests)
    assert pending.starts_at == int(datetime(2030, 1, 1, 8, tzinfo=UTC).timestamp() * 1_000_000)
    bob = world.sign_in("bob")
    for page in (alice.get("/console/").text, bob.get("/console/approvals").text):
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    offered = alice.get("/console/request", params={"group": "prod-admins"}).text
    assert '<option value="28800s">8h</option>' in offered and "32400s" not in offered  # up to max_duration


def test_secure_cookies_when_the_public_url_is_https(world):
    alice = world.sign_in("alice")
    token = csrf(alice.get("/console/").text)
    world.services.settings.base_url = "https://console.example.com"
    out = alice.post("/console/logout", data={"csrf": token})
    assert "secure" in out.headers["set-cookie"].lower()
    start = httpx.get(f"{world.url}/console/login")
    assert "secure" in start.headers["set-cookie"].lower()
    assert (
        httpx.URL(start.headers["location"]).params["redirect_uri"]
        == "https://console.example.com/console/callback"
    )


@pytest.mark.parametrize("policy", [{"approvals_required": 2}])
def test_two_distinct_approvers(db, world):
    alice = world.sign_in("alice")
    assert file_request(alice).status_code == 303
    (pending,) = rows(db, access_requests)
    bob = world.sign_in("bob")
    assert (
        bob.post(
            f"/console/requests/{pending.id}/approve", data={"csrf": csrf(bob.get("/console/").text)}
        ).status_code
        == 303
    )
    assert rows(db, access_requests)[0].status == "pending" and rows(db, grants) == []
    queue = bob.get("/console/approvals").text
    assert "You approved; waiting for others." in queue and "bob: approve" in queue
    again = bob.post(f"/console/requests/{pending.id}/approve", data={"csrf": csrf(queue)})
    assert again.status_code == 409 and "You have already decided this request" in again.text
    dave = world.sign_in("dave")
    assert (
        dave.post(
            f"/console/requests/{pending.id}/approve", data={"csrf": csrf(dave.get("/console/").text)}
        ).status_code
        == 303
    )
    assert rows(db, access_requests)[0].status == "approved" and len(rows(db, grants)) == 1


@pytest.mark.parametrize("policy", [{"auto_approve": {"max_duration": "1h"}}])
def test_auto_approve_from_the_console(db, world):
    alice = world.sign_in("alice")
    filed = file_request(alice)
    assert filed.headers["location"] == "/console/?note=approved"
    (grant,) = rows(db, grants)
    assert grant.created_by == "policy:auto-approve"
    longer = file_request(alice, duration="7200s")  # beyond auto_approve: waits for an approver
    assert longer.headers["location"] == "/console/?note=requested"
    assert "Done: access approved." in alice.get("/console/?note=approved").text
