"""Shifts from a schedule (issue 15 §4): a scheduling system's complete plan, sent again and again, becomes
scheduled grants — new shifts created, changed ones updated, missing ones revoked — idempotently, all or
nothing, with a frozen clock on SQLite and PostgreSQL; and over HTTP with the `schedules` scope."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from scimjit.clock import isoformat
from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.jiterrors import JitError
from scimjit.services import compose
from scimjit.store.tables import audit_log, grants, memberships
from tests.access_helpers import Directory, account, clear_outbox, config, give_account, make_access, summary
from tests.live_server import serve

HOUR = 3600


@pytest.fixture
def access(db, clock):
    return make_access(db, clock, config(jit='schedule_max_shift = "12h"\nschedule_max_shifts = 5'))


@pytest.fixture
def people(db, clock, access):
    directory = Directory(db, clock, access)
    alice, bob = directory.user("alice"), directory.user("bob")
    directory.group("wiki-users", [alice, bob])
    admins = directory.group("wiki-admins")
    give_account(db, "wiki", alice)
    give_account(db, "wiki", bob)
    clear_outbox(db)
    return {"alice": alice, "bob": bob, "wiki-admins": admins}


def at(clock, hours: float) -> str:
    return isoformat(clock.now() + timedelta(hours=hours))


def shift(clock, ref, user="alice", start=1, end=9, group="wiki-admins"):
    return {"id": ref, "user": user, "group": group, "startsAt": at(clock, start), "endsAt": at(clock, end)}


def rows(db, source="rota"):
    with db.read() as conn:
        return {
            r.source_ref: r
            for r in conn.execute(sa.select(grants).where(grants.c.source == source)).all()
            if r.source_ref is not None
        }


def audits(db, action):
    with db.read() as conn:
        return conn.execute(
            sa.select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id)
        ).all()


def put(access, plan, source="rota"):
    return access.apply_schedule(source, plan, actor="scheduler")


def test_a_plan_becomes_scheduled_grants_and_the_same_plan_again_changes_nothing(db, clock, access, people):
    plan = {"shifts": [shift(clock, "s1"), shift(clock, "s2", user="bob", start=-1, end=3)]}
    assert put(access, plan) == {"created": 2, "updated": 0, "revoked": 0, "unchanged": 0, "skipped": 0}
    got = rows(db)
    assert got["s1"].status == "scheduled" and got["s1"].created_by == "schedule:rota"
    assert got["s2"].status == "active"  # started an hour ago: active at once, with its role
    assert summary(db) == [("role.grant", "wiki", "bob", "admin")]
    audit_count = len(audits(db, "grant.create"))

    assert put(access, plan) == {"created": 0, "updated": 0, "revoked": 0, "unchanged": 2, "skipped": 0}
    assert len(summary(db)) == 1 and len(audits(db, "grant.create")) == audit_count  # no events, no noise
    applied = audits(db, "schedule.apply")
    assert [a.outcome for a in applied] == ["success", "unchanged"]
    assert applied[-1].details["unchanged"] == 2 and applied[-1].resource_id == "rota"

    clock.advance(HOUR)  # s1 starts: the sweeper activates it like any scheduled grant
    assert access.sweeper.sweep_once().activated == 1
    assert summary(db)[1:] == [("role.grant", "wiki", "alice", "admin")]
    assert put(access, plan)["unchanged"] == 2  # still nothing to do after activation


def test_changed_shifts_update_their_grants_and_missing_ones_are_revoked(db, clock, access, people):
    put(
        access,
        {
            "shifts": [
                shift(clock, "s1"),
                shift(clock, "s2", start=-1, end=3),
                shift(clock, "s3", "bob", 2, 4),
            ]
        },
    )
    before = rows(db)
    clear_outbox(db)

    changed = {
        "shifts": [
            shift(clock, "s1", start=2, end=10),  # scheduled: new times
            shift(clock, "s2", start=-1, end=5),  # active: later end, its membership row follows
        ]
    }  # s3 dropped
    assert put(access, changed) == {"created": 0, "updated": 2, "revoked": 1, "unchanged": 0, "skipped": 0}
    after = {r.id: r for r in rows(db).values()}
    s1, s2 = after[before["s1"].id], after[before["s2"].id]
    assert (s1.starts_at, s1.expires_at) == (
        before["s1"].starts_at + HOUR * 10**6,
        before["s1"].expires_at + HOUR * 10**6,
    )
    assert s2.expires_at == before["s2"].expires_at + 2 * HOUR * 10**6
    with db.read() as conn:
        expiry = conn.execute(
            sa.select(memberships.c.expires_at).where(memberships.c.source == f"grant:{s2.id}")
        ).scalar_one()
    assert expiry == s2.expires_at
    with db.read() as conn:
        s3 = conn.execute(sa.select(grants).where(grants.c.id == before["s3"].id)).one()
    assert s3.status == "revoked" and s3.source_ref is None  # released: the shift may come back
    assert summary(db) == []  # s3 never started, s2 still active: nothing downstream

    # the whole plan withdrawn: the active one ends now, its role is revoked through the normal path
    assert put(access, {"shifts": []})["revoked"] == 2
    assert summary(db) == [("role.revoke", "wiki", "alice", "admin")]
    assert account(db, "wiki", people["alice"]).roles == []
    # s3 comes back: a new grant
    assert put(access, {"shifts": [shift(clock, "s3", "bob", 2, 4)]})["created"] == 1


def test_a_new_user_or_group_for_a_shift_ends_the_old_grant_and_makes_a_new_one(db, clock, access, people):
    put(access, {"shifts": [shift(clock, "s1", start=-1, end=3)]})
    old = rows(db)["s1"]
    clear_outbox(db)
    assert put(access, {"shifts": [shift(clock, "s1", user="bob", start=-1, end=3)]})["updated"] == 1
    new = rows(db)["s1"]
    assert new.id != old.id and new.user_id == people["bob"] and new.status == "active"
    assert sorted(summary(db)) == [
        ("role.grant", "wiki", "bob", "admin"),
        ("role.revoke", "wiki", "alice", "admin"),
    ]


def test_a_period_limits_what_missing_shifts_revoke(db, clock, access, people):
    put(access, {"shifts": [shift(clock, "mon", start=1, end=9), shift(clock, "tue", start=25, end=33)]})
    plan = {"period": {"start": at(clock, 24), "end": at(clock, 48)}, "shifts": []}
    assert put(access, plan)["revoked"] == 1  # only Tuesday's lies in the period
    assert rows(db)["mon"].status == "scheduled"


def test_a_bad_shift_refuses_the_whole_plan_and_lists_every_bad_one(db, clock, access, people):
    plan = {
        "shifts": [
            shift(clock, "ok"),
            shift(clock, "nobody", user="nobody"),
            shift(clock, "backwards", start=5, end=4),
            shift(clock, "long", start=0, end=13),  # over schedule_max_shift = 12h
            shift(clock, "ok"),  # the id again
        ]
    }
    with pytest.raises(JitError) as excinfo:
        put(access, plan)
    err = excinfo.value
    assert (err.status, err.reason) == (400, "invalid_schedule")
    assert err.to_json()["shifts"] == [
        {"id": "backwards", "error": "`endsAt` must be after `startsAt`"},
        {"id": "long", "error": "longer than 43200s ([jit] schedule_max_shift)"},
        {"id": "ok", "error": "the id is used by another shift of the plan"},
    ]
    with pytest.raises(JitError) as excinfo:  # unknown names are checked once the shapes are right
        put(access, {"shifts": [shift(clock, "ok"), shift(clock, "nobody", user="nobody")]})
    assert excinfo.value.to_json()["shifts"] == [
        {"id": "nobody", "error": "no user has the id or userName 'nobody'"}
    ]
    assert rows(db) == {} and audits(db, "schedule.apply") == []  # nothing written
    with pytest.raises(JitError) as excinfo:
        put(access, {"shifts": [shift(clock, f"s{i}") for i in range(6)]})
    assert (excinfo.value.status, excinfo.value.reason) == (413, "too_many_shifts")


def test_a_shift_already_over_is_skipped_and_a_revoked_grant_stays_revoked(db, clock, access, people):
    assert put(access, {"shifts": [shift(clock, "past", start=-5, end=-1)]})["skipped"] == 1
    put(access, {"shifts": [shift(clock, "s1")]})
    access.revoke_grant(rows(db)["s1"].id, actor="admin", reason="not this one")
    assert put(access, {"shifts": [shift(clock, "s1")]})["unchanged"] == 1  # a person's revoke stands
    assert rows(db)["s1"].status == "revoked"


# ---------------------------------------------------------------- over HTTP


@pytest.fixture
def api(db, clock) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    settings = Settings.load(
        environ={},
        database_url=db.url,
        token_cache_seconds=0,
        document=config(),
        run_sweeper=False,
        run_worker=False,
    )
    services = compose(settings, db=db, clock=clock)
    directory = Directory(db, clock, services.access)
    directory.user("alice")
    directory.group("wiki-admins")
    scheduler = {"Authorization": f"Bearer {services.tokens.create('rota', ['schedules'])}"}
    bot = {"Authorization": f"Bearer {services.tokens.create('bot', ['requests'])}"}
    with serve(create_app(services=services)) as url:
        yield f"{url}/jit/v1/schedules", scheduler, bot


def test_put_schedule_over_http(api, clock, db):
    url, scheduler, bot = api
    plan = {"shifts": [shift(clock, "s1")]}
    r = httpx.put(f"{url}/rota", json=plan, headers=scheduler, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 1, "updated": 0, "revoked": 0, "unchanged": 0, "skipped": 0}
    assert httpx.put(f"{url}/rota", json=plan, headers=scheduler, timeout=30).json()["unchanged"] == 1
    assert rows(db)["s1"].created_by == "schedule:rota"

    assert httpx.put(f"{url}/rota", json=plan, headers=bot, timeout=30).status_code == 403
    bad = httpx.put(
        f"{url}/rota", json={"shifts": [shift(clock, "x", user="nobody")]}, headers=scheduler, timeout=30
    )
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "invalid_schedule",
        "detail": "1 shift(s) refused; nothing was written",
        "shifts": [{"id": "x", "error": "no user has the id or userName 'nobody'"}],
    }
    assert httpx.put(f"{url}/rota", json=[], headers=scheduler, timeout=30).status_code == 400


def test_two_plans_of_one_source_at_once_never_interleave(db, clock, access, people):
    """A plan giving shift s1 to alice is being applied (its transaction open) when a second plan of the
    same source gives s1 to bob (no user row in common): the second waits for the first and then sees its
    grant (an update), instead of inserting a second s1 and failing on the unique (source, source_ref)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: the second plan cannot start before the first commits")
    import threading

    from scimjit.access import schedules

    results: list[object] = []

    def second() -> None:
        try:
            results.append(put(access, {"shifts": [shift(clock, "s1", user="bob")]}))
        except Exception as exc:  # without the per-source lock: IntegrityError on the unique index
            results.append(exc)

    with db.write() as conn:
        period, shifts = schedules.parse({"shifts": [shift(clock, "s1")]}, 5, 43200)
        first = schedules.apply(
            conn, access.deprovisioner, "rota", period, shifts, actor="a", now=clock.now()
        )
        assert first.created == 1
        me = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        thread = threading.Thread(target=second)
        thread.start()
        with db.engine.connect() as probe:  # until the second plan waits on a lock held by this transaction
            waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE :me = ANY(pg_blocking_pids(pid))")
            for _ in range(100_000):
                if probe.execute(waiting, {"me": me}).scalar_one():
                    break
                probe.rollback()
            else:
                raise AssertionError("the second plan never waited")
    thread.join()
    assert len(results) == 1 and isinstance(results[0], dict), results
    assert (results[0]["created"], results[0]["updated"]) == (0, 1)
    with db.read() as conn:
        s1 = conn.execute(sa.select(grants).where(grants.c.source == "rota")).all()
    assert sorted((g.status, g.user_id) for g in s1) == [
        ("revoked", people["alice"]),
        ("scheduled", people["bob"]),
    ]
