"""`scimjit apps list | worker | outbox list|retry`: the JIT applications and the delivery of their events.

`accounts list` (the ledger) is an admin view (scimjit/cli/admin.py); `reconcile` has its own module
(scimjit/cli/reconcile.py).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from scimjit.cli import context
from scimjit.cli.output import LOG_FORMAT, fail, print_json, print_table
from scimjit.config import ConfigError, Settings


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
        return fail(str(exc))
    summaries = [a.summary() for a in apps.values()]
    if args.json:
        print_json(summaries)
        return 0
    if not summaries:
        print("no applications configured (add [[applications]] tables to the file named by SCIMJIT_CONFIG)")
        return 0
    rows = [
        {
            "name": s["name"],
            "issuer": s["issuer"] or f"saml: {s['saml']['idpEntityId']}",  # a SAML-only application
            "audience": ",".join(s["audience"]),
            "match": f"{s['match']['claim']} -> {s['match']['attribute']}",
            "groups": ",".join(s["groups"]) or "(all active users)",
            "first login": s["onFirstLogin"],
            "connector": s["connector"]["type"],
        }
        for s in summaries
    ]
    if any(s["conditions"] for s in summaries):  # the column only where some application has them
        for row, s in zip(rows, summaries, strict=True):
            row["conditions"] = conditions_text(s["conditions"])
    print_table(rows, rows[0], rule=False)
    return 0


def conditions_text(summary: dict[str, Any] | None) -> str:
    """A `conditions` summary in one table cell: `Mon-Fri 07:00-19:00 Europe/Amsterdam; 10.0.0.0/8`."""
    if not summary:
        return "-"
    return (
        windows_text(summary["windows"])
        + ("; " if summary["windows"] and summary["networks"] else "")
        + (",".join(summary["networks"]))
    )


def windows_text(windows: list[dict[str, str]]) -> str:
    return ", ".join(f"{w['days']} {w['from']}-{w['to']} {w['tz']}" for w in windows)


def worker(args: argparse.Namespace) -> int:
    from scimjit.delivery.worker import run_worker

    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), format=LOG_FORMAT)
    engine = context.engine()  # a ConfigError is printed by main() as one `config error:` line
    attempts = run_worker(engine, once=args.once)
    if args.once:
        print(f"{attempts} delivery attempt(s)")
    return 0


def outbox_list(args: argparse.Namespace) -> int:
    from scimjit.delivery import outbox

    with context.database().read() as conn:
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
        print_json(events)
    elif events:
        columns = ["id", "type", "application", "userId", "status", "attempts", "nextAttemptAt", "lastError"]
        print_table(events, columns, rule=False)
    else:
        print("no events")
    return 0


def outbox_retry(args: argparse.Namespace) -> int:
    from scimjit.clock import SystemClock
    from scimjit.delivery.deliverer import retry_dead

    if not args.all_dead and not args.ids:
        return fail("name the dead event id(s) to retry, or pass --all-dead")
    rows = retry_dead(context.database(), SystemClock().now(), ids=args.ids, all_dead=args.all_dead)
    print(f"re-armed {len(rows)} event(s)" + (": " + ", ".join(str(r.id) for r in rows) if rows else ""))
    return 0


def register(sub: Any) -> None:
    """Add `apps`, `worker` and `outbox` to the `scimjit` parser's subparsers."""
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
