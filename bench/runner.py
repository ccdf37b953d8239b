"""`python -m bench`: the order of a run.

1. The load generator's own ceiling (against `bench.trivial`) and the hello-world ceiling (`bench.hello` on
   the same uvicorn settings as scimjit): the scale every other figure is read against.
2. A fresh database, migrated and seeded (`bench.seed`), and an admin token.
3. `scimjit serve --workers W` with production settings (no access log; outbox worker and sweeper off: they
   are separate `scimjit worker` / `scimjit sweep` processes in production and would compete for the cores).
4. Each workload in turn, its row printed as it finishes; then the summary and bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import report
from bench import server as servers
from bench.context import Bench, Options, measure
from bench.load import LoadGenerator, LoadSpec
from bench.registry import Workload, load_all, select
from bench.report import Row
from bench.seed import Dataset, Seeder, Target, create_target, create_token
from bench.workloads import GROUP_SIZES, SAME_COST


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="scimjit HTTP benchmark (`make bench`)")
    p.add_argument("--users", type=int, default=10_000, help="users to seed (default 10,000)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per workload (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    p.add_argument(
        "--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)"
    )
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    p.add_argument("--max-requests", type=int, default=None, help="also stop a workload after this many")
    p.add_argument(
        "--cycle-users",
        type=int,
        default=100_000,
        metavar="N",
        help="users I1 provisions in its initial Entra cycle (default 100,000)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="on a shared machine: before each workload wait up to S seconds for other processes to go quiet",
    )
    p.add_argument("--only", default=None, help="comma-separated workloads, e.g. W1,W3 (W6 includes W6a/W6b)")
    p.add_argument("--profile", default="", help="run these workloads under py-spy, e.g. W1,W6")
    p.add_argument("--database-url", default=None, help="a PostgreSQL URL: seed a schema of its own there")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server under test, e.g. SCIMJIT_REQUEST_LOG=0 (repeatable)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (database, server logs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a workload misses its target")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for w in load_all():
            print(f"{w.name:5} {w.title:45} {w.goal()}{'' if w.default else '  (only with --only)'}")
        return 0
    workloads = select(args.only)
    options = Options(
        args.users,
        args.duration,
        args.warmup,
        args.connections,
        args.workers,
        args.max_requests,
        args.quiet_wait,
        args.cycle_users,
    )
    tmp = Path(tempfile.mkdtemp(prefix="scimjit-bench-"))
    started = datetime.now(UTC)
    loadgen = LoadGenerator()
    target: Target | None = None
    bench: Bench | None = None
    reference: list[Row] = []
    rows: list[Row] = []
    fatal: str | None = None
    try:
        print(f"scimjit bench: {options}\n  temp dir {tmp}\n")
        print(report.header())
        reference = _reference(loadgen, options, tmp)
        target = create_target(args.database_url, tmp)
        bench = _seed(target, options, loadgen, tmp, workloads)
        bench.profile = frozenset(n.strip().upper() for n in args.profile.split(",") if n.strip())
        bench.server = _start_scimjit(bench, workloads, _server_env(args.server_env))
        hello = next((r.result.rps for r in reference if r.name == "HELLO" and r.result), None)
        for w in workloads:
            row = _run(bench, w, hello)
            rows.append(row)
            print(report.line(row), flush=True)
    except (servers.ServerFailed, ConnectionError) as exc:
        fatal = str(exc)
        print(f"\nFATAL: {exc}", file=sys.stderr)
    finally:
        if bench is not None:
            if bench.server is not None:
                bench.server.stop()
            bench.close()
        loadgen.close()
        db_version = _db_version(target) if target else ""
        if target is not None and not args.keep:
            target.drop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return _summarise(args, options, started, target, db_version, bench, reference, rows, fatal, tmp)


def _reference(loadgen: LoadGenerator, options: Options, tmp: Path) -> list[Row]:
    """The two ceilings, measured first in every run."""
    rows = []
    for name, title, argv in (
        ("GEN", "load generator vs canned-response server", [sys.executable, "-m", "bench.trivial"]),
        ("HELLO", f"hello-world Starlette, {options.workers} workers", None),
    ):
        port = servers.free_port()
        if argv is None:
            argv = servers.uvicorn_argv("bench.hello:app", port, options.workers)
        else:
            argv = [*argv, "--port", str(port)]
        server = servers.start(name.lower(), argv, port, tmp / f"{name.lower()}.log", health_path="/")
        try:
            request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            spec = LoadSpec(port, [request], options.connections, options.duration, options.warmup)
            result = measure(loadgen, spec, server, options.quiet_wait)
            result.server_rss_mb, result.server_hwm_mb, result.server_anon_mb = server.memory_mb()
        finally:
            server.stop()
        row = Row(name, title, None, result)
        print(report.line(row), flush=True)
        rows.append(row)
    return rows


def _seed(
    target: Target, options: Options, loadgen: LoadGenerator, tmp: Path, workloads: list[Workload]
) -> Bench:
    seeder = Seeder(target.db)
    dataset = Dataset()
    t0 = time.perf_counter()
    seeder.users(dataset, options.users)
    for size in GROUP_SIZES:
        if (
            options.users >= 2 * size
        ):  # else seeded before its workload, with users of its own (Bench.ensure_group)
            seeder.group(dataset, size)
    seeder.finish()
    bench = Bench(options, target, dataset, seeder, loadgen, tmp, tag=uuid.uuid4().hex[:8])
    bench.token = create_token(target.db)
    groups = ", ".join(f"{s:,}" for s in dataset.groups) or "none"
    print(
        f"\n  seeded {dataset.users:,} users and groups of {groups} members into {target.db.dialect} "
        f"in {time.perf_counter() - t0:.1f}s\n",
        flush=True,
    )
    return bench


# The server's settings besides the defaults an operator starts with. The per-token rate limit is a policy
# (default 1,000/s per token and process), not a capacity: left on, the one bench token would measure the
# limiter, so it is turned off explicitly (docs/benchmarks.md). The per-address limit is left at its default:
# the bench's requests all carry a valid token, which that limit never charges.
SERVER_ENV = {
    "SCIMJIT_RUN_WORKER": "0",
    "SCIMJIT_RUN_SWEEPER": "0",
    "SCIMJIT_RATE_LIMIT_PER_SECOND": "0",
}


def _server_env(pairs: list[str]) -> dict[str, str]:
    env = dict(SERVER_ENV)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--server-env wants NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def _start_scimjit(bench: Bench, workloads: list[Workload], settings: dict[str, str]) -> servers.Server:
    bench.server_env = settings
    env = {"SCIMJIT_DATABASE_URL": bench.target.url, **settings}
    fragments = [w.server_config(bench) for w in workloads if w.server_config is not None]
    if fragments:
        config = bench.tmp / "scimjit.toml"
        config.write_text("\n\n".join(fragments) + "\n")
        env["SCIMJIT_CONFIG"] = str(config)
    port = servers.free_port()
    argv = servers.scimjit_argv(port, bench.options.workers)
    server = servers.start("scimjit", argv, port, bench.tmp / "scimjit.log", env=env)
    print(f"  scimjit serving on 127.0.0.1:{port} with {bench.options.workers} workers\n", flush=True)
    return server


def _run(bench: Bench, w: Workload, hello_rps: float | None) -> Row:
    bench.current = w.name.upper()
    assert bench.server is not None
    try:
        result = w.run(bench)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        traceback.print_exc()
        return Row(w.name, w.title, w.target_rps, None, detail, w.target_share, hello_rps)
    if bench.server.proc.poll() is not None:
        raise servers.ServerFailed(f"scimjit exited during {w.name}:\n{bench.server.log_tail()}")
    result.server_rss_mb, result.server_hwm_mb, result.server_anon_mb = bench.server.memory_mb()
    return Row(w.name, w.title, w.target_rps, result, None, w.target_share, hello_rps)


def _share(row: Row, hello_rps: float) -> str:
    """'W1 12% (target 25%: FAIL)' for a row with a share target, else 'X1 130%'."""
    assert row.result is not None
    got = f"{row.name} {row.result.rps / hello_rps:.0%}"
    if row.target_share:
        return f"{got} (target {row.target_share:.0%}: {row.verdict})"
    return got


def _db_version(target: Target) -> str:
    if target.db.is_sqlite:
        return f"SQLite {sqlite3.sqlite_version}"
    try:
        with target.db.engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version()")).scalar_one()).split(" on ")[0]
    except Exception:
        return "PostgreSQL"


def _summarise(
    args: argparse.Namespace,
    options: Options,
    started: datetime,
    target: Target | None,
    db_version: str,
    bench: Bench | None,
    reference: list[Row],
    rows: list[Row],
    fatal: str | None,
    tmp: Path,
) -> int:
    checks = [c for c in [report.same_cost(rows, *SAME_COST)] if c]
    notes = list(bench.notes) if bench else []
    hello = next((r.result for r in reference if r.name == "HELLO" and r.result), None)
    print()
    print(report.LEGEND)
    noisy = [
        r.name for r in [*reference, *rows] if r.result and (r.result.other_cpu_cores or 0) > report.NOISY
    ]
    if noisy:
        print(f"  WARNING: other processes used the CPU during {', '.join(noisy)}: those figures are low")
    for check in checks:
        print(f"  {check}")
    if hello is not None and rows and hello.rps:
        scale = ", ".join(_share(r, hello.rps) for r in rows if r.result and r.result.requests)
        print(f"  share of the hello-world ceiling ({hello.rps:,.0f} rps): {scale}")
    for row in rows:
        if row.result is not None and row.result.extra.get("summary"):
            print(f"  {row.name}: {row.result.extra['summary']}")
    failures = [(r.name, r.why()) for r in rows if r.verdict in ("FAIL", "ERROR")]
    if failures:
        print(f"  FAILED: {len(failures)} of {len(rows)} workloads")
        for name, why in failures:
            print(f"    {name}: {why}")
    for note in notes:
        print(f"  note: {note}")
    if bench is not None:
        for name, text in bench.profiles.items():
            print(f"\n  where {name}'s server time went (py-spy, all workers):\n{text}")
    machine = report.machine(target.db.dialect if target else "", db_version)
    payload: dict[str, Any] = {
        "started": started.isoformat(),
        "machine": machine,
        "options": vars(options),
        "server_env": bench.server_env if bench else {},
        "seed": {
            "users": bench.dataset.users if bench else 0,
            "groups": sorted(bench.dataset.groups) if bench else [],
            "seconds": bench.dataset.seconds if bench else {},
        },
        "reference": [r.to_json() for r in reference],
        "workloads": [r.to_json() for r in rows],
        "checks": checks,
        "notes": notes,
        "profiles": bench.profiles if bench else {},
        "fatal": fatal,
    }
    path = report.write_json(payload)
    print(f"\n  machine: {machine['cpu']}, {machine['cores']} cores, {db_version}; git {machine['git']}")
    print(f"  results: {path}" + (f"\n  kept: {tmp}" if args.keep else ""))
    if fatal:
        return 2
    failed = any(r.verdict in ("FAIL", "ERROR") for r in rows) or any(c.endswith("FAIL") for c in checks)
    return 1 if failed and args.strict else 0
