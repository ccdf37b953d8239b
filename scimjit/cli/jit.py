"""`scimjit apps | worker | outbox | accounts | reconcile` commands. `register(subparsers)` is called by scimjit/cli.py."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

import orjson

from scimjit.config import ConfigError, Settings

if TYPE_CHECKING:
    from scimjit.engine import JitEngine


def _engine() -> JitEngine:
    from scimjit.services import Services

    return Services.build(Settings.load()).engine


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def apps_list(args: argparse.Namespace) -> int:
    """List the configured applications (validating the whole configuration, connectors included)."""
    from scimjit.delivery import connectors
    from scimjit.entitlement.apps import build_applications

    try:
        apps = build_applications(Settings.load().applications)
        for app in apps.values():
            connectors.build(app)  # checks the connector's own settings
    except ConfigError:
        raise  # main() prints it as one `config error:` line
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    summaries = [a.summary() for a in apps.values()]
    if args.json:
        _print_json(summaries)
        return 0
    if not summaries:
        print("no applications configured (add [[applications]] tables to the file named by SCIMJIT_CONFIG)")
        return 0
    rows = [
        {
            "name": s["name"],
            "issuer": s["issuer"],
            "audience": ",".join(s["audience"]),
            "match": f"{s['match']['claim']} -> {s['match']['attribute']}",
            "groups": ",".join(s["groups"]) or "(all active users)",
            "first login": s["onFirstLogin"],
            "connector": s["connector"]["type"],
        }
        for s in summaries
    ]
    _table(rows, list(rows[0]))
    return 0


def worker(args: argparse.Namespace) -> int:
    from scimjit.delivery.worker import run_worker

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    engine = _engine()  # a ConfigError is printed by main() as one `config error:` line
    attempts = run_worker(engine, once=args.once)
    if args.once:
        print(f"{attempts} delivery attempt(s)")
    return 0


def outbox_list(args: argparse.Namespace) -> int:
    from scimjit.delivery import outbox
    from scimjit.store.db import Database

    db = Database(Settings.load().database_url)
    with db.read() as conn:
        events = outbox.list_events(
            conn,
            status=args.status,
            application=args.application,
            user_id=args.user,
            limit=args.limit,
            after_id=args.after,
            with_payload=args.json,
        )
    if args.json:
        _print_json(events)
    elif events:
        _table(
            events,
            ["id", "type", "application", "userId", "status", "attempts", "nextAttemptAt", "lastError"],
        )
    else:
        print("no events")
    return 0


def outbox_retry(args: argparse.Namespace) -> int:
    from scimjit.clock import SystemClock
    from scimjit.delivery.deliverer import retry_dead
    from scimjit.store.db import Database

    if not args.all_dead and not args.ids:
        return _fail("name the dead event id(s) to retry, or pass --all-dead")
    db = Database(Settings.load().database_url)
    rows = retry_dead(db, SystemClock().now(), ids=args.ids, all_dead=args.all_dead)
    print(f"re-armed {len(rows)} event(s)" + (": " + ", ".join(str(r.id) for r in rows) if rows else ""))
    return 0


def accounts_list(args: argparse.Namespace) -> int:
    from scimjit.entitlement import ledger
    from scimjit.store.db import Database

    db = Database(Settings.load().database_url)
    with db.read() as conn:
        rows = ledger.list_accounts(
            conn, application=args.application, user_id=args.user, status=args.status, limit=args.limit
        )
    if args.json:
        _print_json(rows)
    elif rows:
        _table(rows, ["application", "userName", "userId", "status", "downstreamId", "roles", "lastLoginAt"])
    else:
        print("no accounts")
    return 0


def reconcile(args: argparse.Namespace) -> int:
    """One reconcile pass now (see scimjit/provisioning/reconcile.py): progress per batch on stderr, a summary (or,
    with --dry-run, the repairs that would be made) on stdout, or everything as JSON with --json."""
    import asyncio

    from scimjit.access.service import Access
    from scimjit.provisioning.reconcile import ReconcileError, ReconcileReport

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        access = Access(_engine())
    except (ConfigError, OSError, ValueError) as exc:
        return _fail(str(exc))

    def progress(report: ReconcileReport) -> None:
        if not args.quiet:
            print(
                f"reconciled {report.accounts:,}/{report.total:,} accounts, {report.repairs:,} repairs",
                file=sys.stderr,
            )

    async def main() -> ReconcileReport:
        try:
            return await access.reconciler.run(
                application=args.application, dry_run=args.dry_run, progress=progress
            )
        finally:
            await access.engine.aclose()

    try:
        report = asyncio.run(main())
    except ReconcileError as exc:
        return _fail(str(exc))
    if args.json:
        _print_json(report.to_json())
        return 0
    if not report.ran:
        print("another process is running the reconcile pass; nothing done")
        return 0
    if report.items:
        rows = [
            {
                "application": r.application,
                "userName": r.user_name,
                "userId": r.user_id,
                "source": r.source,
                "events": ",".join(e["type"] + (f"({e['role']})" if "role" in e else "") for e in r.events),
                "differences": "; ".join(r.differences),
            }
            for r in report.items
        ]
        _table(rows, list(rows[0]))
    verb = "would repair" if report.dry_run else "repaired"
    more = f" (first {len(report.items):,} listed)" if len(report.items) < report.repairs else ""
    print(
        f"{report.accounts:,} account(s) checked, {verb} {report.repairs:,}{more} with {report.events:,} "
        f"event(s); {report.downstream_checked:,} compared downstream, {report.downstream_errors:,} "
        f"downstream error(s), {report.skipped:,} skipped (busy); {report.seconds:.1f}s"
        + (" [dry run: nothing written]" if report.dry_run else "")
    )
    return 0


def register(sub: Any) -> None:
    """Add the JIT commands to the `scimjit` parser's subparsers."""
    apps = sub.add_parser("apps", help="JIT applications").add_subparsers(dest="apps_command", required=True)
    alist = apps.add_parser("list", help="list configured applications (and validate the configuration)")
    alist.add_argument("--json", action="store_true")
    alist.set_defaults(func=apps_list)

    w = sub.add_parser("worker", help="deliver outbox events to connectors (run as many as you like)")
    w.add_argument("--once", action="store_true", help="deliver what is due, then exit")
    w.add_argument("--log-level", default="info")
    w.set_defaults(func=worker)

    ob = sub.add_parser("outbox", help="outbox events").add_subparsers(dest="outbox_command", required=True)
    olist = ob.add_parser("list", help="list events, oldest first")
    olist.add_argument("--status", choices=["pending", "done", "dead"], default=None)
    olist.add_argument("--application", default=None)
    olist.add_argument("--user", default=None, help="SCIM user id")
    olist.add_argument("--limit", type=int, default=100)
    olist.add_argument("--after", type=int, default=0, help="only events with a larger id (paging)")
    olist.add_argument("--json", action="store_true", help="JSON, with each event's payload")
    olist.set_defaults(func=outbox_list)
    oretry = ob.add_parser("retry", help="re-arm dead events for delivery")
    oretry.add_argument("ids", nargs="*", type=int, metavar="ID")
    oretry.add_argument("--all-dead", action="store_true")
    oretry.set_defaults(func=outbox_retry)

    acc = sub.add_parser("accounts", help="the account ledger").add_subparsers(
        dest="accounts_command", required=True
    )
    acl = acc.add_parser("list", help="accounts created or linked by JIT logins")
    acl.add_argument("--application", default=None)
    acl.add_argument("--user", default=None, help="SCIM user id")
    acl.add_argument("--status", default=None)
    acl.add_argument("--limit", type=int, default=100)
    acl.add_argument("--json", action="store_true")
    acl.set_defaults(func=accounts_list)

    rec = sub.add_parser(
        "reconcile",
        help="repair drift now: compare every account with SCIM, the grants and the downstream (run by the "
        "sweeper every [jit] reconcile_interval)",
    )
    rec.add_argument("--application", default=None, help="only this application")
    rec.add_argument("--dry-run", action="store_true", help="list what would be repaired, write nothing")
    rec.add_argument("--json", action="store_true", help="the report as JSON (with the repairs)")
    rec.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    rec.set_defaults(func=reconcile)
