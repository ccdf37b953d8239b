"""Expiry workloads: how fast the sweeper ends access, and how soon downstream hears about it.

- X1 (target 10,000/s on SQLite): memberships expired per second by one sweeper. Every expiring membership
  belongs to a user with an account whose role depends on it, so each one costs the whole path: the batch
  DELETE, the reconcile against live memberships, a `role.revoke` in the outbox and the ledger update, in
  the same transaction. The rows expire an hour ahead and the sweep is told it is that time, so the server's
  own sweeper (real time) never touches them.
- X2 (target: p99 <= sweep interval + 1 s): the time from the instant a membership expires to its
  `role.revoke` arriving at a local webhook receiver, with a sweeper and a worker running as
  `scimjit sweep` and `scimjit worker` would (here in threads of this process, real clock), and expiries
  spread over a few seconds so they land anywhere in the sweep cycle.
- X3 (target 250 revokes/s: 10,000 in 40 s): a mass expiry, 10,000 memberships ending at one instant (a
  group's grant window closing, an access review's deadline), with the same sweeper and worker: revokes
  delivered per second from the instant to the last arrival, and the p99 wait. While the sweeper queues
  batches, the worker claims from a queue of thousands of pending events, the case where PostgreSQL once
  planned each claim as a scan of every pending event per candidate (issue 13: 0.6-2.6 s per claim).

Both seed their own users (named after the run's tag), group and accounts with Core bulk inserts, next to the
benchmark's dataset, and read the result straight from the sweeper / the receiver. `expiry_workload` below
is the same X1 measurement as a plain function, for scripts.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import multiprocessing
import threading
import time
import tomllib
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any

from bench.context import Bench
from bench.load import Result, percentile
from bench.registry import workload
from scimjit.access import sweeper as sweep_loop
from scimjit.access.service import Access
from scimjit.clock import SystemClock, from_micros, to_micros
from scimjit.config import Settings
from scimjit.delivery import worker as worker_loop
from scimjit.engine import JitEngine
from scimjit.scim.schema import USER_URN
from scimjit.store.db import Database
from scimjit.store.tables import accounts, groups, memberships, outbox, users

X1_ROWS = 20_000
X2_ROWS = 500
X2_SPREAD = 5.0  # seconds over which X2's memberships expire: 100 revokes/s, a burst a sweep must absorb
X3_ROWS = 10_000
SECRET = "bench-expiry"

APP_TOML = """
[[applications]]
name = "{app}"
issuer = "http://127.0.0.1:9"
audience = ["{app}"]
match = {{ claim = "preferred_username", attribute = "userName" }}
groups = ["{base}"]
roles = {{ "{group}" = "admin" }}

[applications.connector]
type = "webhook"
url = "{url}"
secret = "{secret}"
"""
JIT_TOML = """
[jit]
sweep_batch_size = {batch}
worker_batch_size = 64
worker_poll_interval = "{poll}"
"""


def seed(db: Database, prefix: str, expiries: list[int], now_us: int) -> tuple[str, str]:
    """Users `<prefix>-<i>`, each in a permanent base group and in a role group until `expiries[i]`, each with
    an account holding the role. Returns (base group, role group) names."""
    base, group = f"{prefix}-users", f"{prefix}-admins"
    ids = [f"{prefix}-{i:06d}" for i in range(len(expiries))]
    with db.write() as conn:
        conn.execute(
            users.insert(),
            [
                {
                    "id": uid,
                    "user_name": uid,
                    "user_name_ci": uid,
                    "active": True,
                    "data": {"schemas": [USER_URN], "userName": uid, "active": True},
                    "version": 1,
                    "created": now_us,
                    "last_modified": now_us,
                }
                for uid in ids
            ],
        )
        pks = {}
        for name in (base, group):
            pks[name] = conn.execute(
                groups.insert()
                .values(
                    id=name,
                    display_name=name,
                    display_name_ci=name,
                    data={"displayName": name},
                    version=1,
                    created=now_us,
                    last_modified=now_us,
                )
                .returning(groups.c.pk)
            ).scalar_one()
        rows = [(pks[base], uid, None) for uid in ids] + [
            (pks[group], uid, until) for uid, until in zip(ids, expiries, strict=True)
        ]
        conn.execute(
            memberships.insert(),
            [
                {"group_pk": pk, "member_id": uid, "source": "scim", "added_at": now_us, "expires_at": until}
                for pk, uid, until in rows
            ],
        )
        conn.execute(
            accounts.insert(),
            [
                {
                    "application": f"{prefix}-app",
                    "user_id": uid,
                    "user_name": uid,
                    "status": "active",
                    "roles": ["admin"],
                    "created_at": now_us,
                    "updated_at": now_us,
                    "version": 1,
                }
                for uid in ids
            ],
        )
    if not db.is_sqlite:  # a live database has planner statistics; a freshly bulk-loaded one not yet
        with db.write() as conn:
            conn.exec_driver_sql("ANALYZE users, groups, memberships, accounts")
    return base, group


def app_toml(prefix: str, url: str) -> str:
    """The `[[applications]]` entry whose role group is the seeded one (also given to the server)."""
    return APP_TOML.format(
        app=f"{prefix}-app", base=f"{prefix}-users", group=f"{prefix}-admins", url=url, secret=SECRET
    )


def access(db: Database, prefix: str, url: str, *, batch: int = 1000, poll: str = "1s") -> Access:
    text = app_toml(prefix, url) + JIT_TOML.format(batch=batch, poll=poll)
    return Access(JitEngine(Settings.load(environ={}, document=tomllib.loads(text)), db, SystemClock()))


def expiry_workload(db: Database, prefix: str, rows: int = X1_ROWS, batch: int = 1000) -> tuple[int, float]:
    """X1 as a function: seed `rows` memberships expiring an hour from now, sweep them as of that hour with
    one sweeper; returns (memberships expired, seconds)."""
    now_us = to_micros(SystemClock().now())
    at = now_us + 3_600_000_000
    seed(db, prefix, [at] * rows, now_us)
    sweeper = access(db, prefix, "http://127.0.0.1:9/unused", batch=batch).sweeper
    started = time.perf_counter()
    report = sweeper.sweep_once(from_micros(at))
    return report.memberships_expired, time.perf_counter() - started


@workload("X1", "sweep: memberships expired/s (+ revokes)", target_rps=10_000)
def sweep_throughput(b: Bench) -> Result:
    prefix = f"x1-{b.tag}"
    swept, seconds = expiry_workload(b.target.db, prefix)
    with b.target.db.write() as conn:  # no server knows this application: its revokes go nowhere
        conn.execute(outbox.delete().where(outbox.c.application == f"{prefix}-app"))
    return Result(requests=swept, seconds=seconds)


def _receive(ready: Connection) -> None:
    """The receiver's own process: records the first arrival of each user's revoke, answers `GET /` with them
    (JSON, userName -> time) and `GET /count` with how many (HTTP/1.1 keep-alive; signatures not checked)."""
    arrived: dict[str, float] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            now = time.time()
            event = json.loads(body)
            if event.get("type") == "role.revoke":
                with lock:
                    arrived.setdefault(event["user"]["userName"], now)
            self._answer(b"{}")

        def do_GET(self) -> None:
            with lock:
                self._answer(json.dumps(len(arrived) if self.path == "/count" else arrived).encode())

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 512
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    ready.send(server.server_address[1])
    server.serve_forever()


class _Receiver:
    """A webhook receiver in a process of its own, so that its HTTP server's CPU is not taken from the worker
    it measures (in this process it took 40% of the process's samples, GIL included)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(target=_receive, args=(child,), daemon=True)
        self.process.start()
        self.base = f"http://127.0.0.1:{parent.recv()}"
        self.url = f"{self.base}/events"
        atexit.register(self.stop)

    def count(self) -> int:
        with urllib.request.urlopen(f"{self.base}/count", timeout=10) as answer:
            return int(json.loads(answer.read()))

    def arrived(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.base}/", timeout=60) as answer:
            found: dict[str, float] = json.loads(answer.read())
            return found

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


_RECEIVERS: dict[str, _Receiver] = {}


def _receiver(b: Bench, workload: str) -> _Receiver:
    """The run's receiver for `workload`, started on first use (a `setdefault` would spawn one per call)."""
    key = f"{workload}-{b.tag}"
    if key not in _RECEIVERS:
        _RECEIVERS[key] = _Receiver()
    return _RECEIVERS[key]


def _x2_server_config(b: Bench) -> str:
    """Every sweeper of one database must know the same applications: the server's (if `serve` runs one)
    reconciles X2's expiries as well as ours would, so it gets the application too, with our receiver."""
    return app_toml(f"x2-{b.tag}", _receiver(b, "x2").url)


def _x3_server_config(b: Bench) -> str:
    return app_toml(f"x3-{b.tag}", _receiver(b, "x3").url)


@workload("X2", "expiry -> revoke arrives (p50/p99 ms)", server_config=_x2_server_config)
def revoke_latency(b: Bench) -> Result:
    prefix = f"x2-{b.tag}"
    receiver = _receiver(b, "x2")
    interval = Settings.load(environ={}).sweep_interval
    waits, missing, seconds = latency(b.target.db, prefix, receiver, interval)
    p99 = percentile(waits, 0.99)
    goal = (interval + 1) * 1000
    b.notes.append(
        f"X2: expiry -> revoke p50 {percentile(waits, 0.5)} ms, p99 {p99} ms, max {waits[-1] if waits else 0} ms "
        f"(target p99 <= {goal:.0f} ms = sweep_interval {interval:g}s + 1s; worker poll 1s): "
        f"{'PASS' if waits and p99 <= goal and not missing else 'FAIL'}"
        + (f"; {missing} revokes never arrived" if missing else "")
    )
    return Result(
        requests=len(waits),
        seconds=seconds,
        p50_ms=float(percentile(waits, 0.5)),
        p90_ms=float(percentile(waits, 0.9)),
        p99_ms=float(p99),
        max_ms=float(waits[-1] if waits else 0),
        errors=missing,
    )


@workload("X3", "mass expiry: revokes delivered/s", target_rps=250, server_config=_x3_server_config)
def mass_expiry(b: Bench) -> Result:
    prefix = f"x3-{b.tag}"
    interval = Settings.load(environ={}).sweep_interval
    waits, missing, _ = latency(
        b.target.db, prefix, _receiver(b, "x3"), interval, rows=X3_ROWS, spread=0.0, timeout=300
    )
    last = waits[-1] if waits else 0
    b.notes.append(
        f"X3: {len(waits)} revokes of one instant delivered in {last} ms"
        f" (p50 wait {percentile(waits, 0.5)} ms, p99 {percentile(waits, 0.99)} ms)"
        + (f"; {missing} revokes never arrived" if missing else "")
    )
    return Result(
        requests=len(waits),
        seconds=max(last, 1) / 1000,  # from the instant they expired to the last arrival
        p50_ms=float(percentile(waits, 0.5)),
        p90_ms=float(percentile(waits, 0.9)),
        p99_ms=float(percentile(waits, 0.99)),
        max_ms=float(last),
        errors=missing,
    )


def latency(
    db: Database,
    prefix: str,
    receiver: _Receiver,
    interval: float,
    rows: int = X2_ROWS,
    *,
    spread: float = X2_SPREAD,
    timeout: float = 30.0,
) -> tuple[list[int], int, float]:
    """X2 (and X3) as a function: `rows` memberships expiring over `spread` seconds from now (all at once for
    0), one sweeper every `interval` and one worker (1 s poll) running until every revoke arrived (or
    `timeout` s past the last expiry). Returns the sorted expiry-to-arrival times in ms, how many never
    arrived, and the wall time."""
    svc = access(db, prefix, receiver.url, batch=1000, poll="1s")
    start_us = to_micros(SystemClock().now()) + 1_000_000
    step = int(spread * 1_000_000 / rows)
    expiries = [start_us + i * step for i in range(rows)]
    seed(db, prefix, expiries, start_us - 1_000_000)
    stop = asyncio.Event()

    async def run() -> None:
        tasks = [
            asyncio.create_task(sweep_loop.run(svc.sweeper, stop, interval)),
            asyncio.create_task(worker_loop.run(svc.engine, stop, worker=f"{prefix}-worker")),
        ]
        deadline = time.monotonic() + spread + interval + timeout
        while await asyncio.to_thread(receiver.count) < rows and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
        await svc.engine.aclose()

    began = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - began
    by_user = {f"{prefix}-{i:06d}": expiries[i] / 1e6 for i in range(rows)}
    waits = sorted(int((at - by_user[u]) * 1000) for u, at in receiver.arrived().items() if u in by_user)
    return waits, rows - len(waits), seconds
