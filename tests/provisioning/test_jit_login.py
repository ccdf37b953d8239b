"""The login service against a migrated database (SQLite and PostgreSQL), a local issuer and a real webhook
receiver: first login creates, later logins do not, refusals, updates through the outbox, failures."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from scimjit.entitlement import ledger
from scimjit.jiterrors import JitError
from scimjit.store.tables import accounts, audit_log, outbox
from tests.jit_helpers import (
    LocalIssuer,
    WebhookReceiver,
    add_group,
    add_members,
    add_user,
    engine_for,
    remove_members,
    update_user,
    wiki_config,
)


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@pytest.fixture
def hook():
    with WebhookReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def directory(db):
    """alice: active, in wiki-users and wiki-admins; bob: active, in no group; carol: inactive, in wiki-users."""
    alice = add_user(db, "alice", emails=["Alice@Example.com"], external_id="ext-alice", displayName="Alice")
    bob = add_user(db, "bob")
    carol = add_user(db, "carol", active=False)
    users = add_group(db, "wiki-users", [alice, carol])
    admins = add_group(db, "wiki-admins", [alice])
    return {"alice": alice, "bob": bob, "carol": carol, "wiki-users": users, "wiki-admins": admins}


def make_engine(db, clock, issuer, hook, extra: str = "", jit: str = ""):
    return engine_for(db, clock, wiki_config(issuer.url, hook.url, extra=extra, jit=jit))


@pytest.fixture
def wiki(db, clock, issuer, hook):
    return make_engine(db, clock, issuer, hook)


def login(engine, issuer, clock, username="alice", app="wiki", **claims):
    token = issuer.token(clock.now().timestamp(), preferred_username=username, **claims)
    return asyncio.run(engine.login(app, token, caller="wiki-token"))


def refused(engine, issuer, clock, username="alice", **claims) -> JitError:
    with pytest.raises(JitError) as excinfo:
        login(engine, issuer, clock, username, **claims)
    return excinfo.value


def account_row(db, user_id):
    with db.read() as conn:
        return ledger.get(conn, "wiki", user_id)


def outbox_rows(db):
    with db.read() as conn:
        return conn.execute(sa.select(outbox).order_by(outbox.c.id)).all()


def test_first_login_creates_the_account_and_the_second_does_not(db, clock, issuer, hook, wiki, directory):
    first = login(wiki, issuer, clock)
    assert first.status_code == 200
    assert first.body["account"] == {"status": "created", "downstreamId": "wiki-alice", "application": "wiki"}
    assert first.body["user"]["id"] == directory["alice"]
    assert first.body["user"]["userName"] == "alice"
    assert first.body["roles"] == ["admin"]
    created = hook.of_type("account.create")
    assert len(created) == 1
    event = created[0]
    assert event["application"] == "wiki" and event["roles"] == ["admin"]
    assert event["user"]["userName"] == "alice" and event["user"]["emails"][0]["value"] == "Alice@Example.com"
    assert event["occurredAt"] == "2030-01-01T00:00:00Z"

    clock.advance(5)
    second = login(wiki, issuer, clock)
    assert second.body["account"]["status"] == "existing"
    assert second.body["account"]["downstreamId"] == "wiki-alice"
    assert len(hook.requests) == 1  # no connector call at all on the existing-account path

    row = account_row(db, directory["alice"])
    assert (row.status, row.downstream_id, row.roles, row.user_name) == (
        "active",
        "wiki-alice",
        ["admin"],
        "alice",
    )
    assert row.first_login_at == row.created_at
    assert [r.status for r in outbox_rows(db)] == ["done"]
    with db.read() as conn:
        actions = [r.action for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.id))]
    assert actions == ["connector.call", "login.allowed"]


def logins_counted(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("scimjit_logins_total", {"application": "wiki", "outcome": outcome}) or 0.0
    )


def test_refusals_have_reason_codes_and_are_audited(db, clock, issuer, hook, wiki, directory):
    refused_before, allowed_before = logins_counted("refused"), logins_counted("allowed")
    unknown = refused(wiki, issuer, clock, "nobody")
    assert (unknown.status, unknown.reason) == (403, "unknown_user")
    assert refused(wiki, issuer, clock, "carol").reason == "inactive"
    assert refused(wiki, issuer, clock, "bob").reason == "not_entitled"
    assert refused(wiki, issuer, clock, "alice", aud="other").reason == "wrong_audience"
    assert refused(wiki, issuer, clock, None).reason == "missing_claim"
    with pytest.raises(JitError) as excinfo:
        asyncio.run(wiki.login("nope", "x"))
    assert (excinfo.value.status, excinfo.value.reason) == (404, "unknown_application")
    assert hook.requests == []
    assert outbox_rows(db) == []
    with db.read() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.action == "login.refused")).all()
    reasons = [r.details["reason"] for r in rows]
    assert reasons == ["unknown_user", "inactive", "not_entitled", "wrong_audience", "missing_claim"]
    carol = next(r for r in rows if r.details["reason"] == "inactive")
    assert (carol.resource_type, carol.resource_id, carol.actor) == ("User", directory["carol"], "oidc:sub-1")
    assert carol.details["via"] == "wiki-token"
    assert logins_counted("refused") - refused_before == 5  # unknown_application is not counted
    login(wiki, issuer, clock)
    assert logins_counted("allowed") - allowed_before == 1


def test_expired_membership_is_not_entitlement(db, clock, issuer, hook, wiki, directory):
    with db.write() as conn:
        conn.execute(
            sa.text("UPDATE memberships SET expires_at = 5 WHERE member_id = :m"), {"m": directory["alice"]}
        )
    assert refused(wiki, issuer, clock).reason == "not_entitled"


@pytest.mark.parametrize(
    ("rule", "claims"),
    [
        (
            '{ claim = "email", attribute = "emails.value" }',
            {"email": "alice@EXAMPLE.com", "email_verified": True},
        ),
        ('{ claim = "sub", attribute = "externalId" }', {"sub": "ext-alice"}),
        ('{ claim = "oid", attribute = "externalId" }', {"oid": "ext-alice"}),
        ('{ claim = "preferred_username", attribute = "userName" }', {"preferred_username": "ALICE"}),
    ],
)
def test_match_rules(db, clock, issuer, hook, directory, rule, claims):
    raw = wiki_config(issuer.url, hook.url)
    raw["applications"][0]["match"] = __import__("tomllib").loads(f"m = {rule}")["m"]
    engine = engine_for(db, clock, raw)
    token = issuer.token(clock.now().timestamp(), **claims)
    result = asyncio.run(engine.login("wiki", token))
    assert result.body["user"]["id"] == directory["alice"]


def test_matching_on_email_requires_email_verified(db, clock, issuer, hook, directory):
    """Issue 11 §3: matching on `email` ignored `email_verified`, so anyone who could put alice's address
    into an account at the issuer (unverified) signed in as alice."""
    raw = wiki_config(issuer.url, hook.url)
    raw["applications"][0]["match"] = {"claim": "email", "attribute": "emails.value"}
    engine = engine_for(db, clock, raw)
    assert engine.apps["wiki"].require_email_verified  # the default with an `email` match
    now = clock.now().timestamp()
    for claims in ({}, {"email_verified": False}, {"email_verified": "false"}, {"email_verified": 1}):
        token = issuer.token(now, email="alice@example.com", **claims)
        with pytest.raises(JitError) as excinfo:
            asyncio.run(engine.login("wiki", token))
        assert (excinfo.value.status, excinfo.value.reason) == (403, "email_not_verified")
    with db.read() as conn:
        refusals = conn.execute(
            sa.select(audit_log.c.details).where(audit_log.c.action == "login.refused")
        ).scalars()
        assert [d["reason"] for d in refusals].count("email_not_verified") == 4
        assert conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one() == 0
    # some issuers send the claim as a string
    token = issuer.token(now, email="alice@example.com", email_verified="true")
    assert asyncio.run(engine.login("wiki", token)).body["user"]["id"] == directory["alice"]
    # an application that knows its issuer verifies every address can turn the check off
    raw["applications"][0]["require_email_verified"] = False
    relaxed = engine_for(db, clock, raw)
    token = issuer.token(now, email="alice@example.com")
    assert asyncio.run(relaxed.login("wiki", token)).body["user"]["id"] == directory["alice"]
    # and one matching on another claim can turn it on
    raw["applications"][0]["match"] = {"claim": "preferred_username", "attribute": "userName"}
    del raw["applications"][0]["require_email_verified"]
    assert not engine_for(db, clock, raw).apps["wiki"].require_email_verified
    raw["applications"][0]["require_email_verified"] = True
    strict = engine_for(db, clock, raw)
    with pytest.raises(JitError) as excinfo:
        asyncio.run(strict.login("wiki", issuer.token(now, preferred_username="alice")))
    assert excinfo.value.reason == "email_not_verified"


def test_groups_by_id_and_empty_groups_mean_every_active_user(db, clock, issuer, hook, directory):
    raw = wiki_config(issuer.url, hook.url)
    raw["applications"][0]["groups"] = [directory["wiki-users"]]
    raw["applications"][0]["roles"] = {directory["wiki-admins"]: "admin"}
    by_id = engine_for(db, clock, raw)
    assert login(by_id, issuer, clock).body["roles"] == ["admin"]
    raw["applications"][0]["groups"] = []
    everyone = engine_for(db, clock, raw)
    assert login(everyone, issuer, clock, "bob").body["account"]["status"] == "created"
    assert refused(everyone, issuer, clock, "carol").reason == "inactive"


def test_profile_and_role_changes_go_through_the_outbox(db, clock, issuer, hook, wiki, directory):
    login(wiki, issuer, clock)
    update_user(db, directory["alice"], displayName="Alice Liddell")
    remove_members(db, directory["wiki-admins"], [directory["alice"]])
    result = login(wiki, issuer, clock)
    assert result.body["account"]["status"] == "existing"
    assert result.body["roles"] == []
    assert len(hook.requests) == 1  # nothing delivered inline: updates are the worker's
    pending = [r for r in outbox_rows(db) if r.status == "pending"]
    assert [(r.type, r.payload.get("role")) for r in pending] == [
        ("account.update", None),
        ("role.revoke", "admin"),
    ]
    assert pending[0].payload["user"]["displayName"] == "Alice Liddell"

    reports = asyncio.run(wiki.deliverer.drain())
    assert [r.status for r in reports] == ["done", "done"]
    assert [e["type"] for e in hook.events] == ["account.create", "account.update", "role.revoke"]
    assert hook.events[1]["downstreamId"] == "wiki-alice"  # the ledger's downstream id travels with updates

    # unchanged profile: the next login enqueues nothing
    login(wiki, issuer, clock)
    assert len(outbox_rows(db)) == 3
    add_members(db, directory["wiki-admins"], [directory["alice"]])
    login(wiki, issuer, clock)
    assert [r.type for r in outbox_rows(db)][3:] == ["account.update", "role.grant"]


def test_last_login_is_written_at_most_once_a_minute(db, clock, issuer, hook, wiki, directory):
    login(wiki, issuer, clock)
    version = account_row(db, directory["alice"]).version
    for _ in range(5):
        clock.advance(10)
        login(wiki, issuer, clock)
    assert account_row(db, directory["alice"]).version == version  # no write on the hot path
    clock.advance(11)  # 61 s after the first login
    login(wiki, issuer, clock)
    row = account_row(db, directory["alice"])
    assert row.version == version + 1
    assert row.last_login_at - row.first_login_at == 61_000_000


def test_transient_failure_answers_503_and_a_later_login_finishes(db, clock, issuer, hook, wiki, directory):
    hook.fail_next(503)
    failure = refused(wiki, issuer, clock)
    assert (failure.status, failure.reason) == (503, "downstream_unavailable")
    assert int(failure.headers["Retry-After"]) >= 1
    assert account_row(db, directory["alice"]).status == "pending"
    result = login(wiki, issuer, clock)  # the user retries at once: the login delivers the queued create
    assert result.body["account"]["status"] == "created"
    assert len(hook.of_type("account.create")) == 1
    keys = {r["key"] for r in hook.requests}
    assert len(keys) == 1  # the retry carried the same idempotency key
    assert login(wiki, issuer, clock).body["account"]["status"] == "existing"


def test_async_create_answers_202_and_the_worker_finishes(db, clock, issuer, hook, directory):
    wiki = make_engine(db, clock, issuer, hook, extra="async_create = true")
    hook.fail_next(503, 429)
    pending = login(wiki, issuer, clock)
    assert pending.status_code == 202
    assert pending.body["account"]["status"] == "pending"
    assert "Retry-After" in pending.headers
    assert asyncio.run(wiki.deliver_due()) == []  # not due yet: backoff
    clock.advance(2)
    reports = asyncio.run(wiki.deliver_due())
    assert [r.status for r in reports] == ["pending"]  # 429: still transient
    clock.advance(10)
    reports = asyncio.run(wiki.deliver_due())
    assert [r.status for r in reports] == ["done"]
    assert account_row(db, directory["alice"]).status == "active"
    assert login(wiki, issuer, clock).body["account"] == {
        "status": "existing",
        "downstreamId": "wiki-alice",
        "application": "wiki",
    }


def test_permanent_failure_is_dead_visible_and_retryable(db, clock, issuer, hook, wiki, directory):
    hook.fail_next((400, {"error": "bad user"}))
    failure = refused(wiki, issuer, clock)
    assert (failure.status, failure.reason) == (502, "provisioning_failed")
    assert account_row(db, directory["alice"]).status == "failed"
    assert [r.status for r in outbox_rows(db)] == ["dead"]
    assert refused(wiki, issuer, clock).reason == "provisioning_failed"
    assert len(hook.requests) == 1  # a failed account does not hammer the downstream on every login

    rows = wiki.deliverer.retry(all_dead=True)
    assert len(rows) == 1
    assert account_row(db, directory["alice"]).status == "pending"
    assert [r.status for r in asyncio.run(wiki.deliver_due())] == ["done"]
    assert login(wiki, issuer, clock).body["account"]["status"] == "existing"


def test_link_mode_never_creates(db, clock, issuer, hook, directory):
    raw = wiki_config(issuer.url, hook.url)
    raw["applications"][0]["on_first_login"] = "link"
    engine = engine_for(db, clock, raw)
    hook.fail_next(404)
    assert refused(engine, issuer, clock).reason == "no_downstream_account"
    assert account_row(db, directory["alice"]) is None
    assert hook.requests[0]["event"]["mode"] == "link"
    result = login(engine, issuer, clock)
    assert result.body["account"]["status"] == "linked"
    assert account_row(db, directory["alice"]).status == "active"


def test_a_disabled_account_is_enabled_and_a_deleted_one_recreated(db, clock, issuer, hook, wiki, directory):
    login(wiki, issuer, clock)
    with db.write() as conn:
        conn.execute(accounts.update().values(status="disabled"))
    assert login(wiki, issuer, clock).body["account"]["status"] == "existing"
    assert account_row(db, directory["alice"]).status == "active"
    assert [r.type for r in outbox_rows(db) if r.status == "pending"] == ["account.enable"]
    asyncio.run(wiki.deliverer.drain())
    with db.write() as conn:
        conn.execute(accounts.update().values(status="deleted"))
    result = login(wiki, issuer, clock)
    assert result.body["account"]["status"] == "created"
    assert [e["type"] for e in hook.events] == ["account.create", "account.enable", "account.create"]
    assert hook.events[0]["id"] != hook.events[2]["id"]


def test_concurrent_first_logins_create_exactly_one_account(db, clock, issuer, hook, directory):
    """Two replicas (two engines), three tabs each, all at once; the downstream is slow."""
    hook.delay = 0.3
    replicas = [make_engine(db, clock, issuer, hook, jit='login_wait = "10s"') for _ in range(2)]
    token = issuer.token(clock.now().timestamp(), preferred_username="alice")
    results: list = []
    barrier = threading.Barrier(2)

    def replica(engine):
        async def tabs():
            return await asyncio.gather(
                *(engine.login("wiki", token) for _ in range(3)), return_exceptions=True
            )

        barrier.wait()
        results.extend(asyncio.run(tabs()))

    threads = [threading.Thread(target=replica, args=(e,)) for e in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(r, BaseException) for r in results), results
    statuses = sorted(r.body["account"]["status"] for r in results)
    assert statuses == ["created"] + ["existing"] * 5
    assert len(hook.of_type("account.create")) == 1
    assert len(hook.requests) == 1
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar() == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 1
