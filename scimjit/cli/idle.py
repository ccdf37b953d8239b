"""`scimjit accounts idle --application A [--dry-run] [--json]`: the accounts nobody used for the
application's `idle_after`, listed (--dry-run) or reclaimed now with its `on_idle`, exactly as the sweeper's
idle step does (scimjit/access/sweeper.py `reclaim_idle`; the events and the `account.idle` audit record are
the same, with the operator as actor).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from scimjit.cli import context
from scimjit.cli.output import LOG_FORMAT, Progress, fail, print_json, print_table

COLUMNS = ["application", "userName", "userId", "lastSeen", "action"]


def idle(args: argparse.Namespace) -> int:
    from scimjit.config import ConfigError

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        access = context.access()
    except (ConfigError, OSError, ValueError) as exc:
        return fail(str(exc))
    app = access.engine.apps.get(args.application)
    if app is None:
        known = ", ".join(sorted(access.engine.apps)) or "none configured"
        return fail(f"no application {args.application!r} (known: {known})")
    if app.idle_after is None:
        return fail(f"application {app.name!r} has no idle_after: its accounts are never reclaimed")
    sweeper = access.sweeper
    now = sweeper.clock.now()
    progress = Progress("listed")
    found: list[dict[str, Any]] = []
    for row in sweeper.idle_accounts(app.name, now):
        found.append(row)
        progress.add()
    reclaimed = 0
    if not args.dry_run:
        name = context.login_name()
        reclaimed = sweeper.reclaim_idle(now, application=app.name, actor=f"cli:{name}" if name else "cli")
    if args.json:
        print_json(
            {"application": app.name, "dryRun": args.dry_run, "reclaimed": reclaimed, "accounts": found}
        )
        return 0
    if found:
        print_table(found, COLUMNS)
    verb = "would be reclaimed" if args.dry_run else "reclaimed"
    count = len(found) if args.dry_run else reclaimed
    progress.done(f"{count:,} idle account(s) {verb} ({app.on_idle}, idle_after {app.idle_after:g}s)")
    return 0


def register(commands: Any) -> None:
    """Add `idle` to the subparsers of `scimjit accounts`."""
    parser = commands.add_parser(
        "idle",
        help="accounts with no login for the application's idle_after: list them (--dry-run) or reclaim "
        "them now with its on_idle (the sweeper does it on its own every sweep)",
    )
    parser.add_argument("--application", required=True, help="the application whose idle accounts to take")
    parser.add_argument("--dry-run", action="store_true", help="list what would be reclaimed, write nothing")
    parser.add_argument("--json", action="store_true", help="the result as JSON (with the accounts)")
    parser.set_defaults(func=idle)
