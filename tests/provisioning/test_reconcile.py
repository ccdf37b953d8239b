"""The reconcile pass (scimjit/provisioning/reconcile.py): drift between the ledger, SCIM, the grants and the downstream is
repaired through the outbox, once, on SQLite and PostgreSQL; dry runs write nothing; the schedule follows the
injected clock; `scimjit reconcile` works as a command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from scimjit.clock import FrozenClock, to_micros
from scimjit.config import Settings
from scimjit.delivery import connectors as connector_registry
from scimjit.entitlement import ledger
from scimjit.entitlement.apps import load_applications
from scimjit.http.app import create_app
from scimjit.metrics import RECONCILE_REPAIRS
from scimjit.provisioning.reconcile import REPAIR_ACTION, RUN_ACTION, ReconcileError, Schedule
from scimjit.services import Services
from scimjit.store.db import Database
from scimjit.store.migrate import upgrade
from scimjit.store.tables import accounts, audit_log, groups, memberships, outbox, users
from tests.access_helpers import (
    Directory,
    account,
    clear_outbox,
    config,
    events,
    give_account,
    make_access,
    summary,
)
from tests.jit_helpers import WebhookReceiver
from tests.live_server import serve


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver().running() as rx:
        yield rx


@pytest.fixture
def access(db, clock, receiver):
    return make_access(db, clock, config(receiver.url))


@pytest.fixture
def directory(db, clock, access):
    return Directory(db, clock, access)


def reconcile(access, **kwargs: Any):
    return asyncio.run(access.reconciler.run(**kwargs))


def deliver(access) -> None:
    async def go() -> None:
        try:
            await access.engine.deliverer.drain()
        finally:
            await access.engine.aclose()

    asyncio.run(go())


def repairs_audited(db) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.resource_id, audit_log.c.details)
            .where(audit_log.c.action == REPAIR_ACTION)
            .order_by(audit_log.c.id)
        ).all()
    return [{"user": r.resource_id, **r.details} for r in rows]


def remove_user_row(db, user_id: str) -> None:
    """The state a login racing a DELETE leaves (issue 9): the user is gone, its ledger row is not."""
    with db.write() as conn:
        conn.execute(users.delete().where(users.c.id == user_id))
        conn.execute(memberships.delete().where(memberships.c.member_id == user_id))


def group_pk(db, name: str) -> int:
    with db.read() as conn:
        return conn.execute(sa.select(groups.c.pk).where(groups.c.display_name == name)).scalar_one()


# ---------------------------------------------------------------- ledger vs. SCIM and grants


def test_an_orphaned_row_of_a_deleted_user_is_deleted_downstream_once(db, access, directory, receiver):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    directory.group("wiki-admins", [alice])
    give_account(db, "wiki", alice, ["admin"])
    remove_user_row(db, alice)
    clear_outbox(db)

    report = reconcile(access)
    assert (report.accounts, report.repairs, report.events) == (1, 1, 1)
    assert summary(db) == [("account.delete", "wiki", alice, None)]  # userName from the ledger row
    assert events(db)[0]["user"]["id"] == alice and events(db)[0]["roles"] == []
    row = account(db, "wiki", alice)
    assert (row.status, row.roles) == (ledger.DELETED, [])
    [audited] = repairs_audited(db)
    assert audited["user"] == alice and audited["source"] == "scim"
    assert audited["differences"] == ["user no longer exists"]
    assert [e["type"] for e in audited["events"]] == ["account.delete"]
    assert audited["events"][0]["eventId"] == events(db)[0]["id"]

    deliver(access)
    assert [e["type"] for e in receiver.events] == ["account.delete"]
    again = reconcile(access)
    assert (again.accounts, again.repairs, again.events) == (1, 0, 0)
    assert len(events(db)) == 1 and len(repairs_audited(db)) == 1


def test_roles_that_drifted_are_revoked_and_granted(db, access, directory):
    alice, bob = directory.user("alice"), directory.user("bob")
    directory.group("wiki-users", [alice, bob])
    directory.group("wiki-admins", [alice])
    give_account(db, "wiki", alice, [])  # memberships give admin, the ledger lacks it
    give_account(db, "wiki", bob, ["admin"])  # the ledger has admin, no membership gives it
    clear_outbox(db)

    report = reconcile(access)
    assert sorted(summary(db)) == [
        ("role.grant", "wiki", "alice", "admin"),
        ("role.revoke", "wiki", "bob", "admin"),
    ]
    assert account(db, "wiki", alice).roles == ["admin"] and account(db, "wiki", bob).roles == []
    assert report.repairs == 2
    why = {a["user"]: a["differences"] for a in repairs_audited(db)}
    assert why[alice] == ["live memberships give role 'admin', ledger lacks it"]
    assert why[bob] == ["ledger has role 'admin', live memberships do not give it"]
    assert reconcile(access).repairs == 0
    assert len(events(db)) == 2


def test_an_expired_grant_membership_gives_no_role(db, clock, access, directory):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    directory.group("wiki-admins", [])
    now_us = to_micros(clock.now())
    with db.write() as conn:  # a grant's membership that ran out, not yet swept
        conn.execute(
            memberships.insert().values(
                group_pk=group_pk(db, "wiki-admins"),
                member_id=alice,
                source="grant:g1",
                member_type="User",
                added_at=now_us - 10_000_000,
                expires_at=now_us - 1,
            )
        )
    give_account(db, "wiki", alice, ["admin"])
    clear_outbox(db)
    reconcile(access)
    assert summary(db) == [("role.revoke", "wiki", "alice", "admin")]


def test_an_inactive_user_with_an_active_account_is_disabled(db, access, directory):
    carol = directory.user("carol", active=False)
    directory.group("wiki-users", [carol])
    give_account(db, "wiki", carol)
    clear_outbox(db)
    reconcile(access)
    assert summary(db) == [("account.disable", "wiki", "carol", None)]
    assert account(db, "wiki", carol).status == ledger.DISABLED
    assert reconcile(access).repairs == 0 and len(events(db)) == 1


def test_a_user_who_lost_entitlement_gets_on_unentitled(db, access, directory):
    dave = directory.user("dave")
    give_account(db, "wiki", dave)  # never in wiki-users (a missed membership change, say)
    reconcile(access)
    assert summary(db) == [("account.disable", "wiki", "dave", None)]
    assert account(db, "wiki", dave).status == ledger.DISABLED


def test_a_changed_profile_is_sent_as_an_update(db, access, directory):
    erin = directory.user("erin")
    directory.group("wiki-users", [erin])
    give_account(db, "wiki", erin)
    with db.write() as conn:
        conn.execute(accounts.update().values(profile_hash="stale"))
    clear_outbox(db)
    reconcile(access)
    assert summary(db) == [("account.update", "wiki", "erin", None)]
    assert events(db)[0]["user"]["displayName"] == "Erin"
    assert reconcile(access).repairs == 0


def test_repairs_queue_behind_pending_events_and_are_not_repeated(db, access, directory):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    give_account(db, "wiki", alice, ["admin"])  # a revoke is due
    first = reconcile(access)
    second = reconcile(access)  # its event still pending: the ledger already says what was sent
    assert (first.events, second.events) == (1, 0)
    assert summary(db) == [("role.revoke", "wiki", "alice", "admin")]


def test_dry_run_lists_and_writes_nothing(db, access, directory):
    alice = directory.user("alice")
    give_account(db, "wiki", alice, ["admin"])
    remove_user_row(db, alice)
    clear_outbox(db)
    with db.read() as conn:
        audit_before = conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one()
    counted = RECONCILE_REPAIRS.labels(application="wiki", source="scim", kind="account.delete")._value.get()

    report = reconcile(access, dry_run=True)
    assert report.dry_run and report.repairs == 1 and report.events == 1
    assert report.items[0].differences == ["user no longer exists"]
    assert events(db) == []
    assert account(db, "wiki", alice).status == ledger.ACTIVE
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one() == audit_before
    assert (
        RECONCILE_REPAIRS.labels(application="wiki", source="scim", kind="account.delete")._value.get()
        == counted
    )

    reconcile(access)  # the real run does what the dry run said, and counts it
    assert summary(db) == [("account.delete", "wiki", alice, None)]
    after = RECONCILE_REPAIRS.labels(application="wiki", source="scim", kind="account.delete")._value.get()
    assert after == counted + 1


def test_one_application_only_and_unknown_ones_refused(db, access, directory):
    alice = directory.user("alice")
    give_account(db, "wiki", alice)
    give_account(db, "chat", alice)
    remove_user_row(db, alice)
    clear_outbox(db)
    report = reconcile(access, application="chat")
    assert report.total == 1 and summary(db) == [("account.delete", "chat", alice, None)]
    with pytest.raises(ReconcileError, match="unknown application 'nope'"):
        reconcile(access, application="nope")


def test_pages_through_the_ledger_in_batches(db, access, directory):
    ids = [directory.user(f"u{i}") for i in range(7)]
    for user_id in ids:
        give_account(db, "wiki", user_id)
    access.reconciler.batch_size = 3
    seen: list[tuple[int, int]] = []
    report = asyncio.run(access.reconciler.run(progress=lambda r: seen.append((r.accounts, r.total))))
    assert seen == [(3, 7), (6, 7), (7, 7)]
    assert report.repairs == 7  # none of them is in wiki-users: on_unentitled = disable


@pytest.mark.skipif("not os.environ.get('SCIMJIT_TEST_DATABASE_URL')")
def test_a_second_process_skips_while_one_runs(db, access, directory):
    if db.dialect != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's")
    alice = directory.user("alice")
    give_account(db, "wiki", alice)
    remove_user_row(db, alice)
    clear_outbox(db)
    held = access.reconciler._acquire()  # another process's run in progress
    try:
        report = reconcile(access)
        assert not report.ran and events(db) == []
    finally:
        access.reconciler._release(held)
    assert reconcile(access).ran and len(events(db)) == 1


def test_two_processes_at_once_send_each_repair_once(db, clock, access, directory):
    ids = [directory.user(f"o{i}") for i in range(40)]
    for user_id in ids:
        give_account(db, "wiki", user_id)
        remove_user_row(db, user_id)
    clear_outbox(db)
    other = make_access(db, clock, config())  # a second process: its own engine, connections, lock attempt
    access.reconciler.batch_size = other.reconciler.batch_size = 7

    async def both() -> list[Any]:
        return list(await asyncio.gather(access.reconciler.run(), other.reconciler.run()))

    reports = asyncio.run(both())
    assert sum(r.events for r in reports) == 40
    assert sorted(e["user"]["id"] for e in events(db, "account.delete")) == sorted(ids)
    assert len(events(db)) == 40


# ---------------------------------------------------------------- the schedule


def test_the_schedule_follows_the_clock_and_is_shared(db, clock, directory):
    access = make_access(db, clock, config(jit='reconcile_interval = "1h"'))
    assert access.sweeper.schedule is not None and access.sweeper.schedule.interval == 3600
    alice = Directory(db, clock, access).user("alice")
    give_account(db, "wiki", alice)
    remove_user_row(db, alice)

    schedule = access.sweeper.schedule
    assert asyncio.run(schedule.tick()) is None  # just started, nothing recorded: one interval from now
    clock.advance(3599)
    assert asyncio.run(schedule.tick()) is None and events(db) == []
    clock.advance(2)
    report = asyncio.run(schedule.tick())
    assert report is not None and report.repairs == 1
    assert summary(db) == [("account.delete", "wiki", alice, None)]
    assert asyncio.run(schedule.tick()) is None

    other = Schedule(make_access(db, clock, config()).reconciler, 3600)  # another process
    assert asyncio.run(other.tick()) is None  # the run recorded in the audit trail counts for it too
    clock.advance(3601)
    assert asyncio.run(other.tick()) is not None
    with db.read() as conn:
        runs = conn.execute(sa.select(sa.func.count()).where(audit_log.c.action == RUN_ACTION)).scalar_one()
    assert runs == 2


def test_the_schedule_runs_beside_the_sweeper_loop(db, clock, directory):
    from scimjit.access.sweeper import run

    access = make_access(db, clock, config(jit='reconcile_interval = "1h"'))
    alice = Directory(db, clock, access).user("alice")
    give_account(db, "wiki", alice)
    remove_user_row(db, alice)
    clock.advance(7200)
    with db.write() as conn:  # a run recorded two hours ago: due now
        conn.execute(
            audit_log.insert().values(
                at=to_micros(clock.now()) - 7_200_000_000,
                actor="reconcile",
                action=RUN_ACTION,
                outcome="success",
                details={},
            )
        )

    schedule = access.sweeper.schedule
    tick = schedule.tick
    ran = asyncio.Event()

    async def observed() -> Any:  # the real tick, telling the test when it has run the pass
        report = await tick()
        if report is not None:
            ran.set()
        return report

    schedule.tick = observed

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run(access.sweeper, stop, 3600))  # sweeps once, then waits on `stop`
        await asyncio.wait_for(ran.wait(), 60)  # the first tick finds the run due (by the clock) at once
        stop.set()
        await task

    asyncio.run(go())
    assert summary(db) == [("account.delete", "wiki", alice, None)]


def test_reconcile_interval_zero_disables_the_schedule(db, clock):
    access = make_access(db, clock, config(jit="reconcile_interval = 0"))
    assert access.sweeper.schedule is None


# ---------------------------------------------------------------- the downstream's report


class Downstream:
    """A second, real scimjit as the application's SCIM service provider."""

    def __init__(self, url: str, token: str) -> None:
        self.scim = f"{url}/scim/v2"
        self.token = token
        self.client = httpx.Client(
            base_url=self.scim, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def create_user(self, user_name: str, *, active: bool = True) -> str:
        doc = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "active": active,
        }
        response = self.client.post("/Users", json=doc)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def create_group(self, name: str, members: list[str]) -> str:
        doc = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "members": [{"value": m} for m in members],
        }
        response = self.client.post("/Groups", json=doc)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def user(self, user_id: str) -> dict[str, Any]:
        return self.client.get(f"/Users/{user_id}").json()


@pytest.fixture
def downstream(tmp_path) -> Iterator[Downstream]:
    ddb = Database(f"sqlite:///{tmp_path}/downstream.db")
    upgrade(ddb)
    settings = Settings.load(environ={}, database_url=ddb.url, token_cache_seconds=0)
    services = Services.build(settings, db=ddb, clock=FrozenClock())
    token = services.tokens.create("upstream", ["scim:read", "scim:write"])
    with serve(create_app(services=services)) as url:
        ds = Downstream(url, token)
        yield ds
        ds.client.close()
    ddb.dispose()


def crm_config(downstream: Downstream) -> dict[str, Any]:
    return {
        "applications": [
            {
                "name": "crm",
                "issuer": "http://127.0.0.1:9",
                "audience": ["crm"],
                "match": {"claim": "preferred_username", "attribute": "userName"},
                "groups": ["crm-users"],
                "roles": {"crm-admins": "admin", "crm-users": "member"},
                "connector": {"type": "scim", "url": downstream.scim, "token": downstream.token},
            }
        ]
    }


def test_downstream_state_that_differs_is_repaired(db, clock, downstream):
    access = make_access(db, clock, crm_config(downstream))
    directory = Directory(db, clock, access)
    alice = directory.user("alice")
    directory.group("crm-users", [alice])  # gives entitlement and role `member`; not in crm-admins
    bob = directory.user("bob")
    # downstream: alice exists, enabled, in `admin` (not ours to give) and not in `member` (ours)
    alice_down = downstream.create_user("alice")
    downstream.create_group("admin", [alice_down])
    downstream.create_group("member", [])
    downstream.create_group("sales", [alice_down])  # not a role scimjit manages: left alone
    bob_down = downstream.create_user("bob")  # enabled downstream, disabled in the ledger
    with db.write() as conn:
        for user_id, down, status in ((alice, alice_down, "active"), (bob, bob_down, "disabled")):
            conn.execute(
                accounts.insert().values(
                    application="crm",
                    user_id=user_id,
                    user_name=user_id,
                    downstream_id=down,
                    status=status,
                    roles=["member"] if user_id == alice else [],
                    created_at=1,
                    updated_at=1,
                    version=1,
                )
            )
    clear_outbox(db)

    report = reconcile(access)
    assert report.downstream_checked == 2 and report.downstream_errors == 0
    assert sorted(summary(db)) == [
        ("account.disable", "crm", "bob", None),
        ("role.grant", "crm", "alice", "member"),
        ("role.revoke", "crm", "alice", "admin"),
    ]
    sources = {a["user"]: a["source"] for a in repairs_audited(db)}
    assert sources == {alice: "downstream", bob: "downstream"}
    assert reconcile(access).events == 0  # still pending: not compared again

    deliver(access)  # the real SCIM connector changes the downstream
    groups_of_alice = sorted(g["display"] for g in downstream.user(alice_down).get("groups", []))
    assert groups_of_alice == ["member", "sales"]
    assert downstream.user(bob_down)["active"] is False
    after = reconcile(access)
    assert (after.downstream_checked, after.repairs) == (2, 0)
    assert len(events(db)) == 3


def test_an_account_missing_downstream_is_created_again(db, clock, downstream):
    access = make_access(db, clock, crm_config(downstream))
    directory = Directory(db, clock, access)
    alice = directory.user("alice")
    directory.group("crm-users", [alice])
    with db.write() as conn:
        conn.execute(
            accounts.insert().values(
                application="crm",
                user_id=alice,
                user_name="alice",
                downstream_id="gone",
                status="active",
                roles=["member"],
                created_at=1,
                updated_at=1,
                version=1,
            )
        )
    clear_outbox(db)
    reconcile(access)
    assert summary(db) == [("account.create", "crm", "alice", None)]
    assert events(db)[0]["mode"] == "create"
    assert account(db, "crm", alice).status == ledger.PENDING
    deliver(access)
    row = account(db, "crm", alice)
    assert row.status == ledger.ACTIVE and row.downstream_id != "gone"
    assert downstream.user(row.downstream_id)["userName"] == "alice"
    assert reconcile(access).repairs == 0


def test_a_webhook_is_compared_with_the_ledger_only(db, access, directory):
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    give_account(db, "wiki", alice)
    report = reconcile(access)
    assert (report.downstream_checked, report.repairs) == (0, 0)


def test_a_plugin_without_reconcile_still_loads(tmp_path, monkeypatch):
    (tmp_path / "bare_connector.py").write_text(
        "from scimjit.delivery.connectors import Outcome, Result\n"
        "class Bare:\n"
        "    def __init__(self, settings, application): pass\n"
        + "".join(
            f"    async def {m}(self, call): return Result(Outcome.UPDATED)\n"
            for m in (
                "create_account",
                "update_account",
                "disable_account",
                "enable_account",
                "delete_account",
                "grant",
                "revoke",
            )
        )
        + "    async def aclose(self): pass\n"
    )
    dist = tmp_path / "bare_connector-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bare-connector\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[scimjit.connectors]\nbare = bare_connector:Bare\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    table = {
        "name": "x",
        "issuer": "http://127.0.0.1:9",
        "audience": ["x"],
        "match": {"claim": "sub", "attribute": "userName"},
        "connector": {"type": "bare"},
    }
    connector = connector_registry.build(load_applications({"applications": [table]})["x"])
    assert not hasattr(connector, "reconcile")
    sys.modules.pop("bare_connector", None)


# ---------------------------------------------------------------- the command


def test_the_command_in_a_subprocess(db, tmp_path, access, directory):
    alice = directory.user("alice")
    give_account(db, "wiki", alice, ["admin"])
    bob = directory.user("bob")
    directory.group("wiki-users", [bob])
    give_account(db, "wiki", bob)
    remove_user_row(db, alice)
    clear_outbox(db)
    cfg = tmp_path / "scimjit.toml"
    cfg.write_text(
        '[[applications]]\nname = "wiki"\nissuer = "http://127.0.0.1:9"\naudience = ["wiki"]\n'
        'match = { claim = "preferred_username", attribute = "userName" }\ngroups = ["wiki-users"]\n'
        '[applications.connector]\ntype = "webhook"\nurl = "http://127.0.0.1:9/events"\nsecret = "s"\n'
    )
    env = {**os.environ, "SCIMJIT_CONFIG": str(cfg), "SCIMJIT_DATABASE_URL": db.url}
    scimjit = str(Path(sys.executable).with_name("scimjit"))

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([scimjit, *argv], env=env, capture_output=True, text=True, timeout=60)

    dry = cli("reconcile", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "reconciled 2/2 accounts, 1 repairs" in dry.stderr
    assert "account.delete" in dry.stdout and alice in dry.stdout and "dry run: nothing written" in dry.stdout
    assert events(db) == [] and account(db, "wiki", alice).status == ledger.ACTIVE

    real = cli("reconcile", "--json", "--quiet")
    assert real.returncode == 0, real.stderr
    doc = json.loads(real.stdout)
    assert (doc["accounts"], doc["repairs"], doc["events"], doc["dry_run"]) == (2, 1, 1, False)
    assert doc["items"][0]["userId"] == alice and real.stderr == ""
    assert summary(db) == [("account.delete", "wiki", alice, None)]

    bad = cli("reconcile", "--application", "nope")
    assert (
        bad.returncode == 2 and "unknown application 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    )
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one() == 1
