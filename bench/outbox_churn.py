"""The outbox's claim while the queue churns: sweepers queue 500-event batches, a worker claims 64 and
completes each, on an outbox table created for the run (so its statistics are as young as a new
deployment's).

`python -m bench.outbox_churn [--database-url URL] [--events 10000]` prints each claim's time (`claim_due`,
its SELECT and its lease UPDATE) as p50 / p90 / max and the total, and on PostgreSQL the plan of the slowest
claim (EXPLAIN ANALYZE, as the planner chose it then). Without a URL it uses a SQLite file in a temporary
directory. The URL must name a scratch database: the run drops and recreates `outbox` there, and refuses a
database that holds scimjit's other tables.

This is how issue 13's eighth round found the claim planned as a scan of every pending event per candidate
(PostgreSQL, 622 ms p50 per claim of 64 at 10,000 events) and measured its fix (3.4 ms); see
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from scimjit.clock import to_micros
from scimjit.delivery import outbox as queue
from scimjit.store.tables import outbox

BATCH = 500  # a sweeper's batch (`sweep_batch_size` in the concurrency test that first showed it)
CLAIM = 64  # a worker's claim (`worker_batch_size`)


def churn(url: str, events: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if sa.inspect(conn).has_table("users"):
            raise SystemExit(f"{url} holds scimjit's tables: give a scratch database")
        outbox.drop(conn, checkfirst=True)
        outbox.create(conn)
    now = datetime.now(UTC)
    times: list[float] = []
    slowest = (0.0, "")
    queued = 0
    while True:
        if queued < events:
            with engine.begin() as conn:
                users = [f"u{queued + i}" for i in range(BATCH)]
                queue.enqueue_many(
                    conn,
                    [
                        (queue.new_event("role.revoke", "wiki", {"userName": u}, ["admin"], now), u)
                        for u in users
                    ],
                    now=now,
                )
            queued += BATCH
        claimed: list[queue.Claimed] = []
        for _ in range(4):  # the worker's rounds while the next batch is swept
            with engine.begin() as conn:
                started = time.perf_counter()
                claimed = queue.claim_due(conn, worker="w", now=now, lease=300, limit=CLAIM)
                took = (time.perf_counter() - started) * 1000
                times.append(took)
                if took > slowest[0] and engine.dialect.name == "postgresql":
                    slowest = (took, _plan(conn, now))
            for event in claimed:
                with engine.begin() as conn:
                    queue.complete(conn, event, worker="w", result={}, now=now)
            if not claimed:
                break
        if queued >= events and not claimed:
            break
    times.sort()
    print(
        f"{engine.dialect.name}: {len(times)} claims of up to {CLAIM} over {events} events: "
        f"p50 {statistics.median(times):.2f} ms, p90 {times[int(len(times) * 0.9)]:.2f} ms, "
        f"max {times[-1]:.2f} ms, total {sum(times):.0f} ms"
    )
    if slowest[1]:
        print(f"slowest claim's plan ({slowest[0]:.1f} ms):\n{slowest[1]}")
    with engine.begin() as conn:
        outbox.drop(conn)


def _plan(conn: sa.Connection, now: datetime) -> str:
    """The claim's SELECT explained with its values inlined (the plan of that moment's statistics)."""
    stmt = queue.due_heads(to_micros(now), CLAIM)
    sql = str(stmt.compile(conn.engine, compile_kwargs={"literal_binds": True}))
    return "\n".join(conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql).scalars())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a scratch database (default: a temporary SQLite file)")
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    if args.database_url:
        churn(args.database_url, args.events)
        return
    with tempfile.TemporaryDirectory() as tmp:
        churn(f"sqlite:///{Path(tmp) / 'churn.db'}", args.events)


if __name__ == "__main__":
    main()
