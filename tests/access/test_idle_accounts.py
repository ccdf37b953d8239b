"""Idle accounts reclaimed (issue 15 §2): an application's `idle_after` and `on_idle`, applied by the sweeper
through the outbox with the deprovisioning events, audited, counted, listed by `scimjit accounts idle`, and
undone by the next login. Frozen clock, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from scimjit.clock import to_micros
from scimjit.config import ConfigError, Settings
from scimjit.entitlement import ledger
from scimjit.store.tables import accounts, audit_log
from tests.access_helpers import Directory, account, clear_outbox, config, give_account, make_access, summary
from tests.jit_helpers import LocalIssuer, WebhookReceiver

DAY = 86400


def idle_config(on_idle: str = "disable", idle_after: str | None = "30d", **kwargs):
    raw = config(**kwargs)
    if idle_after is not None:
        raw["applications"][0]["idle_after"] = idle_after
    raw["applications"][0]["on_idle"] = on_idle
    return raw


def seen(db, app: str, user_id: str, at_us: int | None) -> None:
    """The ledger's last login of the account (None: never logged in; it counts from created_at)."""
    with db.write() as conn:
        conn.execute(
            accounts.update()
            .where(accounts.c.application == app, accounts.c.user_id == user_id)
            .values(last_login_at=at_us, created_at=at_us if at_us is not None else 1)
        )


def reclaimed_count(action: str) -> float:
    labels = {"application": "wiki", "action": action}
    return REGISTRY.get_sample_value("scimjit_idle_accounts_reclaimed_total", labels) or 0.0


def idle_audits(db):
    with db.read() as conn:
        return conn.execute(
            sa.select(audit_log).where(audit_log.c.action == "account.idle").order_by(audit_log.c.id)
        ).all()


@pytest.fixture
def people(db, clock):
    """alice logged in 31 days ago, bob 29 days ago; both have wiki and chat accounts."""
    access = make_access(db, clock, idle_config())
    directory = Directory(db, clock, access)
    alice, bob = directory.user("alice"), directory.user("bob")
    directory.group("wiki-users", [alice, bob])
    directory.group("wiki-admins", [alice])
    directory.group("chat-users", [alice, bob])
    now_us = to_micros(clock.now())
    for user, days in ((alice, 31), (bob, 29)):
        give_account(db, "wiki", user, ["admin"] if user == alice else [])
        give_account(db, "chat", user)
        seen(db, "wiki", user, now_us - days * DAY * 1_000_000)
        seen(db, "chat", user, now_us - 400 * DAY * 1_000_000)  # chat has no idle_after: never reclaimed
    clear_outbox(db)
    return access, alice, bob


def test_idle_after_is_off_by_default_and_must_be_positive():
    plain = Settings.load(environ={}, document=config())
    assert plain.applications[0].idle_after is None and plain.applications[0].on_idle == "disable"
    assert Settings.load(environ={}, document=idle_config("delete", "30d")).applications[0].idle_after == (
        30 * DAY
    )
    with pytest.raises(ConfigError, match="idle_after"):
        Settings.load(environ={}, document=idle_config(idle_after="0s"))
    with pytest.raises(ConfigError, match="on_idle"):
        Settings.load(environ={}, document=idle_config(on_idle="keep"))


def test_sweep_disables_accounts_idle_past_idle_after_with_the_deprovisioning_event(db, clock, people):
    access, alice, bob = people
    before = reclaimed_count("disable")
    report = access.sweeper.sweep_once()
    assert report.idle_reclaimed == 1 and report.events == 1
    assert summary(db) == [("account.disable", "wiki", "alice", None)]  # bob: 29 days; chat: no idle_after
    assert account(db, "wiki", alice).status == ledger.DISABLED
    assert account(db, "wiki", alice).roles == ["admin"]  # as a deactivation leaves them
    assert account(db, "wiki", bob).status == ledger.ACTIVE
    assert account(db, "chat", alice).status == ledger.ACTIVE
    assert reclaimed_count("disable") - before == 1
    (record,) = idle_audits(db)
    assert (record.actor, record.resource_id) == ("sweeper", "wiki")
    assert record.details["reason"] == "idle" and record.details["userIds"] == [alice]
    assert record.details["idleSince"] == "2029-12-02T00:00:00Z"  # 30 days before the frozen now
    assert record.details["lastSeen"] == ["2029-12-01T00:00:00Z"]

    assert access.sweeper.sweep_once().idle_reclaimed == 0  # nothing twice
    clock.advance(DAY + 1)  # bob's turn
    assert access.sweeper.sweep_once().idle_reclaimed == 1
    assert summary(db)[1:] == [("account.disable", "wiki", "bob", None)]


def test_on_idle_delete_sends_account_delete_and_clears_the_roles(db, clock):
    access = make_access(db, clock, idle_config("delete"))
    directory = Directory(db, clock, access)
    alice = directory.user("alice")
    give_account(db, "wiki", alice, ["admin"])
    seen(db, "wiki", alice, None)  # never logged in: idle since the account was made (long ago)
    clear_outbox(db)
    before = reclaimed_count("delete")
    assert access.sweeper.sweep_once().idle_reclaimed == 1
    assert summary(db) == [("account.delete", "wiki", "alice", None)]
    row = account(db, "wiki", alice)
    assert (row.status, row.roles) == (ledger.DELETED, [])
    assert reclaimed_count("delete") - before == 1
    assert idle_audits(db)[0].details["deleted"] == 1


def test_the_idle_sweep_works_in_batches(db, clock):
    raw = idle_config(jit="sweep_batch_size = 2")
    access = make_access(db, clock, raw)
    directory = Directory(db, clock, access)
    users = [directory.user(f"user{i}") for i in range(5)]
    for u in users:
        give_account(db, "wiki", u)
    clear_outbox(db)
    assert access.sweeper.sweep_once().idle_reclaimed == 5
    assert len(summary(db, "account.disable")) == 5
    assert len(idle_audits(db)) == 3  # one record per batch of 2


def test_the_idle_scan_is_an_index_range_scan(db, clock, people):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the plan is read from SQLite's EXPLAIN QUERY PLAN")
    with db.read() as conn:
        query = str(
            sa.select(accounts.c.id)
            .where(
                accounts.c.application == "wiki",
                accounts.c.status == "active",
                accounts.c.last_login_at < 5,
            )
            .compile(compile_kwargs={"literal_binds": True})
        )
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + query))
    assert "ix_accounts_application_status_last_login_at" in plan


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@pytest.mark.parametrize(("on_idle", "back"), [("disable", "account.enable"), ("delete", "account.create")])
def test_the_next_login_after_idle_reenables_or_recreates_end_to_end(db, clock, issuer, on_idle, back):
    """Through the webhook: disabled for idle, the next login enables; deleted for idle, it re-creates."""
    with WebhookReceiver().running() as hook:
        raw = idle_config(on_idle, webhook=hook.url, issuer=issuer.url)
        raw["applications"][0]["groups"] = []  # every active user is entitled
        access = make_access(db, clock, raw)
        user = Directory(db, clock, access).user("carol")

        def login():
            token = issuer.token(clock.now().timestamp(), preferred_username="carol", aud="wiki")
            return asyncio.run(access.engine.login("wiki", token, caller="t"))

        assert login().body["account"]["status"] == "created"
        clock.advance(31 * DAY)
        assert access.sweeper.sweep_once().idle_reclaimed == 1
        asyncio.run(access.engine.deliverer.drain())
        assert [e["type"] for e in hook.events] == ["account.create", f"account.{on_idle}"]
        assert hook.events[-1]["user"]["userName"] == "carol"

        assert login().status_code == 200
        asyncio.run(access.engine.deliverer.drain())
        assert hook.events[-1]["type"] == back
        assert account(db, "wiki", user).status == ledger.ACTIVE
        assert account(db, "wiki", user).last_login_at == to_micros(clock.now())
        assert access.sweeper.sweep_once().idle_reclaimed == 0  # just logged in: not idle


def test_cli_accounts_idle_dry_run_lists_and_writes_nothing_then_reclaims(
    db, clock, people, capsys, monkeypatch
):
    from scimjit.cli import context
    from scimjit.cli.main import main

    access, alice, _bob = people
    monkeypatch.setattr(context, "access", lambda: access)
    assert main(["accounts", "idle", "--application", "wiki", "--dry-run", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["dryRun"] is True and doc["reclaimed"] == 0
    assert [(a["userName"], a["action"], a["lastSeen"]) for a in doc["accounts"]] == [
        ("alice", "disable", "2029-12-01T00:00:00Z")
    ]
    assert account(db, "wiki", alice).status == ledger.ACTIVE and summary(db) == [] and idle_audits(db) == []

    assert main(["accounts", "idle", "--application", "wiki"]) == 0
    captured = capsys.readouterr()
    assert "alice" in captured.out and "1 idle account(s) reclaimed" in captured.err
    assert account(db, "wiki", alice).status == ledger.DISABLED
    assert summary(db) == [("account.disable", "wiki", "alice", None)]
    assert idle_audits(db)[0].actor.startswith("cli")


def test_cli_accounts_idle_refuses_an_unknown_application_or_one_without_idle_after(
    db, clock, people, capsys, monkeypatch
):
    from scimjit.cli import context
    from scimjit.cli.main import main

    access, _alice, _bob = people
    monkeypatch.setattr(context, "access", lambda: access)
    assert main(["accounts", "idle", "--application", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: no application 'nope'")
    assert main(["accounts", "idle", "--application", "chat", "--dry-run"]) == 2
    assert "has no idle_after" in capsys.readouterr().err
