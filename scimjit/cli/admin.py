"""`scimjit audit`, `scimjit audit purge`, and `scimjit accounts|grants|requests list`: the admin views
(`scimjit.store.admin`) on the command line, as readable tables or, with `--json`, for machines.

scimjit/cli/main.py puts each `list` under its command (`accounts`, and the `grants` / `requests` commands
whose other subcommands are in scimjit/cli/access.py). `accounts list` keeps the ledger's first options
(`--application/--user/--status/--limit`, from before the admin views) next to the SCIM-filter ones.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

import orjson

from scimjit.cli import context
from scimjit.cli.output import Progress, fail, print_json, print_table, write_jsonl
from scimjit.config import Settings, parse_duration

COLUMNS = {
    "audit": ["at", "actor", "action", "outcome", "resourceType", "resourceId", "details"],
    "accounts": ["id", "application", "userName", "userId", "status", "downstreamId", "roles", "lastLoginAt"],
    "grants": ["id", "userId", "groupId", "status", "startsAt", "expiresAt", "createdBy"],
    "requests": ["id", "userId", "groupId", "status", "durationSeconds", "requestedBy", "createdAt"],
}
SHORTHANDS = {"application": "application", "user": "userId", "status": "status", "action": "action"}


def _filter(args: argparse.Namespace, view: str, now: Any = None) -> str | None:
    """`--filter` ANDed with the shorthand options and `--since`, as one SCIM filter."""
    from scimjit.clock import SystemClock, isoformat
    from scimjit.store.admin import VIEWS, attribute_names

    names = attribute_names(VIEWS[view])
    terms = [f"({args.filter})"] if args.filter else []
    for option, attribute in SHORTHANDS.items():
        value = getattr(args, option, None)
        if value is not None and attribute in names:
            terms.append(f"{attribute} eq {orjson.dumps(value).decode()}")
    since = getattr(args, "since", None)
    if since:
        start = (now or SystemClock().now()) - timedelta(seconds=parse_duration(since))
        terms.append(f'at ge "{isoformat(start)}"')
    return " and ".join(terms) or None


def duration_arg(value: str) -> str:
    """argparse `type` for `--since`/`--older-than`: a bad duration is a usage error (one line, exit 2)."""
    try:
        parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def cmd_list(args: argparse.Namespace) -> int:
    """A page of one admin view: a table (with `n of total` on stderr) or, with --json, the ListResponse."""
    from scimjit.scim.errors import ScimError
    from scimjit.store import admin

    settings = Settings.load()
    view = admin.VIEWS[args.view]
    count = args.count if args.count is not None else (args.limit if getattr(args, "limit", None) else 100)
    db = context.database(settings)
    try:
        with db.read() as conn:
            page = admin.query(
                conn,
                view,
                filter=_filter(args, args.view),
                sort_by=args.sort_by,
                sort_order=args.sort_order,
                start_index=args.start_index,
                count=count,
                max_filter_length=settings.max_filter_length,
                max_filter_depth=settings.max_filter_depth,
                max_filter_terms=settings.filter_max_terms,
            )
    except ScimError as exc:
        return fail(exc.detail)
    finally:
        db.dispose()
    if args.json:
        print_json({"totalResults": page.total, "startIndex": page.start_index, "Resources": page.resources})
        return 0
    print_table(page.resources, COLUMNS[args.view])
    print(f"({len(page.resources)} of {page.total})", file=sys.stderr)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """The audit trail: a table of one page, or with --json every match as JSON lines (the export)."""
    if not args.json:
        args.view = "audit"
        return cmd_list(args)
    from scimjit.scim.errors import ScimError
    from scimjit.store import admin

    settings = Settings.load()
    db = context.database(settings)
    progress = Progress("exported")
    try:
        records = admin.stream(
            db,
            admin.VIEWS["audit"],
            filter=_filter(args, "audit"),
            max_filter_length=settings.max_filter_length,
            max_filter_depth=settings.max_filter_depth,
            max_filter_terms=settings.filter_max_terms,
        )
        write_jsonl(records, sys.stdout, progress)
    except ScimError as exc:
        return fail(exc.detail)
    finally:
        db.dispose()
    progress.done(f"{progress.count} audit record(s) exported")
    return 0


def cmd_audit_purge(args: argparse.Namespace) -> int:
    """Delete audit records older than --older-than (default: the `audit_retention` setting)."""
    from scimjit.clock import SystemClock, to_micros
    from scimjit.store import audit

    settings = Settings.load()
    retention = parse_duration(args.older_than) if args.older_than else settings.audit_retention
    if retention <= 0:
        print("audit_retention is 0 (keep forever): nothing purged", file=sys.stderr)
        return 0
    now = SystemClock().now()
    db = context.database(settings)
    progress = Progress("purged", every=5000)
    try:
        deleted = audit.purge(db, now - timedelta(seconds=retention), progress=progress.add)
        with db.write() as conn:  # the purge itself is on the record
            audit.record(
                conn,
                actor=f"cli:{context.login_name() or 'unknown'}",
                action="audit.purge",
                outcome="success",
                details={"deleted": deleted, "olderThanSeconds": retention},
                at_micros=to_micros(now),
            )
    finally:
        db.dispose()
    progress.done(f"purged {deleted} audit record(s) older than {args.older_than or 'audit_retention'}")
    return 0


# ---------------------------------------------------------------- parser


def _scim_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--filter", default=None, help='SCIM filter, e.g. \'status eq "active" and application eq "wiki"\''
    )
    parser.add_argument("--sort-by", default=None, help="attribute to sort by, e.g. createdAt")
    parser.add_argument("--sort-order", default=None, choices=["ascending", "descending"])
    parser.add_argument("--start-index", type=int, default=1)
    parser.add_argument("--count", type=int, default=None, help="page size (default 100)")


def register_accounts_list(commands: Any) -> None:
    """Add `list` to the subparsers of `scimjit accounts`: the ledger's options, then the SCIM-filter ones.

    `--limit` is the page size when `--count` is not given (it predates `--count`)."""
    parser = commands.add_parser("list", help="accounts created or linked by JIT logins")
    parser.add_argument("--application", default=None)
    parser.add_argument("--user", default=None, help="SCIM user id")
    parser.add_argument("--status", default=None)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    _scim_list_options(parser)
    parser.set_defaults(func=cmd_list, view="accounts")


def register_list(commands: Any, view: str) -> None:
    """Add `list` (SCIM filters, `--user`/`--status` shorthands) to the subparsers of `scimjit <view>`."""
    parser = commands.add_parser("list", help=f"list {view} with SCIM filters")
    _scim_list_options(parser)
    parser.add_argument("--json", action="store_true", help="JSON for machines")
    parser.add_argument("--user", default=None, help="shorthand for userId eq ... (SCIM user id)")
    parser.add_argument("--status", default=None, help="shorthand for status eq ...")
    parser.set_defaults(func=cmd_list, view=view)


def register_audit(sub: Any) -> None:
    """Add `audit` (itself a listing) and `audit purge` to the `scimjit` parser's subparsers."""
    audit = sub.add_parser(
        "audit",
        help="the audit trail: query with SCIM filters, export as JSON lines, purge",
        description="Without a subcommand: list audit records (a table; --json exports every match as JSON lines).",
    )
    audit.add_argument(
        "--filter", default=None, help='SCIM filter, e.g. \'action sw "login." and outcome eq "refused"\''
    )
    audit.add_argument(
        "--since", default=None, type=duration_arg, help="only records of the last 24h, 30m, 7d, ..."
    )
    audit.add_argument("--action", default=None, help="shorthand for action eq ...")
    audit.add_argument("--sort-by", default=None)
    audit.add_argument("--sort-order", default=None, choices=["ascending", "descending"])
    audit.add_argument("--start-index", type=int, default=1)
    audit.add_argument("--count", type=int, default=None, help="rows in the table (default 100)")
    audit.add_argument("--json", action="store_true", help="every matching record as JSON lines (export)")
    audit.set_defaults(func=cmd_audit)
    audit_sub = audit.add_subparsers(dest="audit_command")
    purge = audit_sub.add_parser("purge", help="delete audit records older than the retention period")
    purge.add_argument(
        "--older-than",
        default=None,
        type=duration_arg,
        help="e.g. 90d (default: the audit_retention setting)",
    )
    purge.set_defaults(func=cmd_audit_purge)
