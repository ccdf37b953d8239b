"""Outbox mechanics: per-user ordering, leases, backoff with jitter, dead letters, retry, and many workers
claiming side by side without double delivery. Time is a FrozenClock: retries are driven by advancing it."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from scimjit.config import JitSettings
from scimjit.delivery import outbox
from scimjit.delivery.connectors.base import Call, Outcome, Result, TransientError
from scimjit.delivery.deliverer import Deliverer
from scimjit.store.tables import outbox as outbox_table
from tests.jit_helpers import WebhookReceiver, engine_for, wiki_config


def enqueue(db, clock, user_id: str, type_: str = "account.update", app: str = "wiki") -> str:
    event = outbox.new_event(type_, app, {"id": user_id, "userName": user_id}, [], clock.now())
    with db.write() as conn:
        outbox.enqueue(conn, event, user_id=user_id, now=clock.now())
    return event["id"]


def claim(db, clock, worker="w1", lease=60.0, limit=100):
    with db.write() as conn:
        return outbox.claim_due(conn, worker=worker, now=clock.now(), lease=lease, limit=limit)


def statuses(db):
    with db.read() as conn:
        return [r.status for r in conn.execute(sa.select(outbox_table).order_by(outbox_table.c.id))]


def test_only_the_head_of_each_user_is_claimable(db, clock):
    a1, a2, b1 = enqueue(db, clock, "a"), enqueue(db, clock, "a"), enqueue(db, clock, "b")
    other_app = enqueue(db, clock, "a", app="crm")
    first = claim(db, clock)
    assert [c.event_id for c in first] == [a1, b1, other_app]
    assert claim(db, clock, worker="w2") == []  # claimed ones are leased; a2 waits for a1
    with db.write() as conn:
        outbox.complete(conn, first[0], worker="w1", result={"outcome": "updated"}, now=clock.now())
    assert [c.event_id for c in claim(db, clock, worker="w2")] == [a2]


def test_an_event_is_stored_as_given_leased_or_not_and_pending_until_done(db, clock):
    """`enqueue` and `has_pending` run compiled once (`store.prepared`): the row holds the event, its key and
    its lease exactly, and the ledger's slot (`insert_pending`, `get`) reads back as written."""
    from scimjit.clock import to_micros
    from scimjit.entitlement import ledger

    now = clock.now()
    plain = outbox.new_event("account.update", "wiki", {"id": "a", "userName": "a"}, ["r"], now)
    leased = outbox.new_event("account.create", "wiki", {"id": "b", "userName": "b"}, [], now, mode="sync")
    with db.write() as conn:
        assert not outbox.has_pending(conn, "wiki", "a")
        plain_id = outbox.enqueue(conn, plain, user_id="a", now=now)
        leased_id = outbox.enqueue(conn, leased, user_id="b", now=now, lease_to="login-1", lease=30.0)
        assert outbox.has_pending(conn, "wiki", "a") and not outbox.has_pending(conn, "crm", "a")
        account_id = ledger.insert_pending(
            conn, application="wiki", user_id="b", user_name="b", roles=["r"], profile="h", now=now
        )
    with db.read() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(outbox_table))}
        account = ledger.get(conn, "wiki", "b")
        assert ledger.get(conn, "wiki", "a") is None
    first, second = rows[plain_id], rows[leased_id]
    assert (first.event_id, first.ordering_key, first.payload) == (plain["id"], "wiki:a", plain)
    assert (first.attempts, first.claimed_by, first.claimed_until, first.status) == (0, None, None, "pending")
    assert (second.attempts, second.claimed_by) == (1, "login-1")
    assert second.claimed_until == to_micros(now) + 30_000_000 and second.payload["mode"] == "sync"
    assert (account.id, account.status, account.roles, account.version) == (account_id, "pending", ["r"], 1)
    assert account.first_login_at == account.created_at == to_micros(now)
    with db.write() as conn:
        (head,) = [
            c for c in outbox.claim_due(conn, worker="w1", now=now, lease=60, limit=10) if c.id == plain_id
        ]
        assert not outbox.complete(conn, head, worker="w2", result={"outcome": "updated"}, now=now)
        assert outbox.complete(conn, head, worker="w1", result={"outcome": "updated"}, now=now)
        assert not outbox.has_pending(conn, "wiki", "a")
        done = conn.execute(sa.select(outbox_table).where(outbox_table.c.id == plain_id)).one()
    assert (done.status, done.result, done.delivered_at, done.claimed_by) == (
        "done",
        {"outcome": "updated"},
        to_micros(now),
        None,
    )


def test_a_dead_worker_s_lease_runs_out(db, clock):
    enqueue(db, clock, "a")
    (first,) = claim(db, clock, worker="w1", lease=30)
    assert first.attempts == 1
    clock.advance(29)
    assert claim(db, clock, worker="w2") == []
    clock.advance(2)
    (again,) = claim(db, clock, worker="w2")
    assert (again.event_id, again.attempts) == (first.event_id, 2)
    with db.write() as conn:  # the first worker's late result does not count: its lease is gone
        assert not outbox.complete(conn, first, worker="w1", result={}, now=clock.now())
        assert outbox.complete(conn, again, worker="w2", result={}, now=clock.now())


def test_backoff_grows_with_jitter_and_ends_dead():
    policy = outbox.RetryPolicy(max_attempts=5, base=2, cap=60)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (8, 60), (20, 60)]:
        delays = [policy.delay(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


class Flaky:
    """A connector whose update fails transiently `failures` times, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[Call] = []

    async def update_account(self, call: Call) -> Result:
        self.calls.append(call)
        if len(self.calls) <= self.failures:
            raise TransientError("HTTP 503", retry_after=None)
        return Result(Outcome.UPDATED, "d-1")

    async def aclose(self) -> None:
        pass


def deliverer(db, clock, connector, **settings) -> Deliverer:
    return Deliverer(db, clock, JitSettings(**settings), {"wiki": connector}.get, random.Random(1))


def test_retries_follow_the_clock_and_keep_the_idempotency_key(db, clock):
    event_id = enqueue(db, clock, "a")
    flaky = Flaky(failures=3)
    d = deliverer(db, clock, flaky, outbox_backoff_base=2, outbox_max_attempts=10)
    waits = []
    for _ in range(3):
        (report,) = asyncio.run(d.deliver_due())
        assert report.status == "pending"
        waits.append((report.next_attempt_at - clock.now()).total_seconds())
        assert asyncio.run(d.deliver_due()) == []  # not due before the backoff
        clock.set(report.next_attempt_at)
    (report,) = asyncio.run(d.deliver_due())
    assert report.status == "done"
    assert 1 <= waits[0] <= 2 and 2 <= waits[1] <= 4 and 4 <= waits[2] <= 8
    assert {c.idempotency_key for c in flaky.calls} == {event_id}
    assert statuses(db) == ["done"]


def test_max_attempts_then_dead_then_retry(db, clock):
    enqueue(db, clock, "a")
    later = enqueue(db, clock, "a")
    flaky = Flaky(failures=100)
    d = deliverer(db, clock, flaky, outbox_max_attempts=3)
    for _ in range(3):
        reports = asyncio.run(d.deliver_due())
        clock.advance(3600)
    assert reports[0].status == "dead"
    assert statuses(db) == ["dead", "pending"]
    # a dead event does not block its user's later events forever
    flaky.failures = 0
    flaky.calls.clear()
    assert [r.event_id for r in asyncio.run(d.deliver_due())] == [later]
    with db.read() as conn:
        dead = outbox.list_events(conn, status="dead")
    assert len(dead) == 1 and "HTTP 503" in dead[0]["lastError"]
    assert [r.id for r in d.retry(ids=[dead[0]["id"]])] == [dead[0]["id"]]
    assert [r.status for r in asyncio.run(d.deliver_due())] == ["done"]
    assert statuses(db) == ["done", "done"]


def test_a_permanent_error_is_dead_at_once(db, clock):
    with WebhookReceiver().running() as hook:
        engine = engine_for(db, clock, wiki_config("http://127.0.0.1:1", hook.url))
        enqueue(db, clock, "a")
        hook.fail_next(422)
        (report,) = asyncio.run(engine.deliver_due())
        assert report.status == "dead" and "422" in report.error


def test_unknown_application_is_dead(db, clock):
    enqueue(db, clock, "a", app="gone")
    (report,) = asyncio.run(deliverer(db, clock, Flaky(0)).deliver_due())
    assert report.status == "dead" and "not configured" in report.error


def test_many_workers_claim_side_by_side_without_double_delivery(db, clock):
    """Four threads claim from one outbox concurrently (FOR UPDATE SKIP LOCKED on PostgreSQL, BEGIN
    IMMEDIATE on SQLite): every event is claimed by exactly one worker."""
    ids = {enqueue(db, clock, f"user-{i}") for i in range(200)}
    claimed: dict[str, list[str]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def work(name: str) -> None:
        barrier.wait()
        while True:
            batch = claim(db, clock, worker=name, limit=7)
            if not batch:
                return
            with db.write() as conn:
                for c in batch:
                    outbox.complete(conn, c, worker=name, result={}, now=clock.now())
            with lock:
                for c in batch:
                    claimed.setdefault(c.event_id, []).append(name)
            time.sleep(0.002)  # "delivering": lets the other workers in

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(claimed) == ids
    assert all(len(v) == 1 for v in claimed.values())
    assert len({w for v in claimed.values() for w in v}) > 1  # they really shared the work


def test_listing_and_counts(db, clock):
    enqueue(db, clock, "a")
    enqueue(db, clock, "b", type_="role.grant")
    with db.read() as conn:
        events = outbox.list_events(conn, with_payload=True)
        assert outbox.counts(conn) == {"pending": 2}
        assert [e["type"] for e in outbox.list_events(conn, user_id="b")] == ["role.grant"]
        assert outbox.list_events(conn, status="dead") == []
    assert events[0]["event"]["user"]["userName"] == "a"
    assert events[0]["nextAttemptAt"] == "2030-01-01T00:00:00Z"


@pytest.mark.parametrize("retry_after", [None, 120.0])
def test_a_retry_after_hint_is_honoured(db, clock, retry_after):
    enqueue(db, clock, "a")

    class Busy(Flaky):
        async def update_account(self, call: Call) -> Result:
            raise TransientError("HTTP 429", retry_after=retry_after)

    (report,) = asyncio.run(deliverer(db, clock, Busy(0)).deliver_due())
    wait = report.next_attempt_at - clock.now()
    if retry_after:
        assert wait >= timedelta(seconds=120)
    else:
        assert wait <= timedelta(seconds=2)


def test_the_longest_due_event_is_claimed_first(db, clock):
    """Claims go by due time, then queue order: an event whose retry came due long ago is not kept waiting
    behind newer events of other users."""
    late = enqueue(db, clock, "a")
    (first,) = claim(db, clock)
    with db.write() as conn:
        outbox.fail(
            conn,
            first,
            worker="w1",
            error="HTTP 429",
            transient=True,
            now=clock.now(),
            policy=outbox.RetryPolicy(),
            rng=random.Random(1),
            retry_after=100.0,
        )
    clock.advance(1)
    newer = enqueue(db, clock, "b")  # due 99 s before the retry of `late`
    clock.advance(200)
    assert [c.event_id for c in claim(db, clock, limit=1)] == [newer]
    assert [c.event_id for c in claim(db, clock, limit=1)] == [late]


def _claim_statement(db, clock, limit: int) -> tuple[list[outbox.Claimed], str, object]:
    """Claim as a worker does, and the claim's SELECT as the driver received it (statement, parameters)."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT outbox.id"):
            seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        claimed = claim(db, clock, limit=limit)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    ((statement, parameters),) = seen
    return claimed, statement, parameters


def _plan_nodes(node: dict) -> list[dict]:
    return [node, *(n for child in node.get("Plans", ()) for n in _plan_nodes(child))]


def test_a_claim_reads_its_heads_only_whatever_the_statistics_say(db, clock):
    """A mass expiry on a quiet queue: statistics were taken while 20 of 5,020 events were pending, then 3,000
    events arrive. A claim of 64 reads about 64 events in claim order, each head checked through its key's
    index (PostgreSQL planned the old `NOT EXISTS` as a scan of every pending event per candidate: 184 ms at
    1,200 pending, 2.6 s at 10,000)."""
    from scimjit.clock import to_micros

    now_us = to_micros(clock.now())

    def rows(n: int, status: str, prefix: str) -> str:
        payload = "'{}'" if db.is_sqlite else "'{}'::jsonb"
        series = (
            f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s"
            if db.is_sqlite
            else f"SELECT n FROM generate_series(1, {n}) n"
        )
        return (
            "INSERT INTO outbox (event_id, type, application, user_id, ordering_key, payload, status, attempts,"
            " next_attempt_at, created_at)"
            f" SELECT '{prefix}' || n, 'role.revoke', 'wiki', '{prefix}' || n, 'wiki:{prefix}' || n, {payload},"
            f" '{status}', 0, {now_us}, {now_us} FROM ({series}) AS series"
        )

    with db.engine.begin() as conn:
        conn.exec_driver_sql(rows(5000, "done", "old"))
        conn.exec_driver_sql(rows(20, "pending", "quiet"))
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE outbox" if not db.is_sqlite else "ANALYZE")
    with db.engine.begin() as conn:
        conn.exec_driver_sql(rows(3000, "pending", "burst"))

    claimed, statement, parameters = _claim_statement(db, clock, limit=64)
    assert [c.user_id for c in claimed] == [f"quiet{i}" for i in range(1, 21)] + [
        f"burst{i}" for i in range(1, 45)
    ]
    if db.is_sqlite:
        with db.engine.connect() as conn:
            plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
        assert plan[0].startswith("SEARCH outbox USING INDEX ix_outbox_status_next_attempt_at_id"), plan
        assert any("SEARCH head USING INDEX ix_outbox_ordering_key_id" in p for p in plan), plan
        assert not any("TEMP B-TREE" in p for p in plan), plan
        return
    with db.engine.connect() as conn, conn.begin():
        (doc,) = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).scalar_one()
        conn.rollback()
    nodes = _plan_nodes(doc["Plan"])
    assert not [n for n in nodes if n["Node Type"] == "Sort"], doc
    (scan,) = [n for n in nodes if n.get("Alias") == "outbox"]
    assert scan["Index Name"] == "ix_outbox_status_next_attempt_at_id", doc
    assert scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) <= 2 * 64 + 20, doc
    (head,) = [n for n in nodes if n.get("Alias") == "head"]  # an index scan, or a bitmap heap scan over one
    assert {n.get("Index Name") for n in _plan_nodes(head)} - {None} == {"ix_outbox_ordering_key_id"}, doc


def test_a_round_reads_each_account_s_downstream_id_with_its_claim(db, clock):
    """`deliver_due` reads the round's downstream ids with the claim (`ledger.downstream_ids`, one read): each
    call gets its own account's id in its own application, and None where the ledger has no account."""
    from scimjit.entitlement import ledger

    with db.write() as conn:
        for app, user, downstream in [("wiki", "a", "d-a"), ("wiki", "b", "d-b"), ("crm", "c", "crm-c")]:
            ledger.insert_pending(
                conn, application=app, user_id=user, user_name=user, roles=[], profile="h", now=clock.now()
            )
            ledger.record_downstream_id(conn, app, user, downstream)
        assert ledger.downstream_ids(conn, [("wiki", "a"), ("crm", "c"), ("crm", "a"), ("wiki", "a")]) == {
            ("wiki", "a"): "d-a",
            ("crm", "c"): "crm-c",
        }
        assert ledger.downstream_ids(conn, []) == {}
    for user in ("a", "b", "c", "z"):
        enqueue(db, clock, user)
    connector = Flaky(failures=0)
    reports = asyncio.run(deliverer(db, clock, connector).deliver_due())
    assert [r.status for r in reports] == ["done"] * 4
    got = {c.event["user"]["id"]: c.downstream_id for c in connector.calls}
    assert got == {"a": "d-a", "b": "d-b", "c": None, "z": None}  # c's account is crm's, not wiki's


def test_a_round_s_results_are_committed_together_and_a_bad_one_fails_alone(db, clock, monkeypatch):
    """`_GroupCommit`: the results ready together go in one transaction; when that transaction fails, each is
    recorded alone, so only the bad one fails (its event stays leased, to be delivered again) and the others
    are done, each with its `connector.call` audit record."""
    from scimjit.delivery import deliverer as module
    from scimjit.store.tables import audit_log

    for user in ("a", "b", "c"):
        enqueue(db, clock, user)
    d = deliverer(db, clock, Flaky(failures=0))
    claimed = claim(db, clock, worker="w1")
    groups: list[int] = []
    many = d._record_done_many

    def record_many(done):
        groups.append(len(done))
        return many(done)

    def apply(conn, claimed, result, now):
        if claimed.user_id == "b":
            raise RuntimeError("the ledger refused b")

    monkeypatch.setattr(d, "_record_done_many", record_many)
    monkeypatch.setattr(module, "_apply", apply)

    async def run():
        commits = module._GroupCommit(d)
        result = Result(Outcome.UPDATED, None)
        return await asyncio.gather(
            *(commits.record(c, "w1", result, 0.01) for c in claimed), return_exceptions=True
        )

    outcomes = asyncio.run(run())
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "RuntimeError", "NoneType"]
    assert groups == [3]  # all three ready together: one transaction, which failed, then each alone
    with db.read() as conn:
        rows = {r.user_id: r for r in conn.execute(sa.select(outbox_table))}
        audited = set(
            conn.execute(
                sa.select(audit_log.c.resource_id).where(audit_log.c.action == "connector.call")
            ).scalars()
        )
    assert {u: r.status for u, r in rows.items()} == {"a": "done", "b": "pending", "c": "done"}
    assert rows["b"].claimed_by == "w1"  # still leased: delivered again when the lease runs out
    assert audited == {rows["a"].event_id, rows["c"].event_id}
