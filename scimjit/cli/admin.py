"""`scimjit audit`, `scimjit audit purge`, and `scimjit accounts|grants|requests list`: the admin views
(`scimjit.store.admin`) on the command line, as readable tables or, with `--json`, for machines.

`register(subparsers)` is called by scimjit/cli.py after the JIT engine's commands. Where the engine already
registered a `list` command for the same view (`accounts list`), the SCIM-filter options are added to it and
this module's implementation, which also honours the engine's `--application/--user/--status/--limit`
options, takes over; otherwise the command is created here.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import IO, Any

import orjson

from scimjit.config import Settings, parse_duration

COLUMNS = {
    "audit": ["at", "actor", "action", "outcome", "resourceType", "resourceId", "details"],
    "accounts": ["id", "application", "userName", "userId", "status", "downstreamId", "roles", "lastLoginAt"],
    "grants": ["id", "userId", "groupId", "status", "startsAt", "expiresAt", "createdBy"],
    "requests": ["id", "userId", "groupId", "status", "durationSeconds", "requestedBy", "createdAt"],
}
SHORTHANDS = {"application": "application", "user": "userId", "status": "status", "action": "action"}


class Progress:
    """A one-line counter on stderr for long operations, redrawn in place; silent when stderr is no terminal
    (scripts and logs get the final summary line only)."""

    def __init__(self, label: str, stream: IO[str] | None = None, every: int = 1000) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.every = every
        self.count = 0
        self.live = self.stream.isatty()

    def add(self, n: int = 1) -> None:
        before = self.count
        self.count += n
        if self.live and before // self.every != self.count // self.every:
            self.stream.write(f"\r{self.label}: {self.count:,}")
            self.stream.flush()

    def done(self, summary: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
        self.stream.write(summary + "\n")
        self.stream.flush()


def _db(settings: Settings) -> Any:
    from scimjit.store.db import Database

    return Database(settings.database_url)


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


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, dict):
        text = orjson.dumps(value).decode()
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def print_table(rows: Iterable[dict[str, Any]], columns: list[str], out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def cmd_list(args: argparse.Namespace) -> int:
    """A page of one admin view: a table (with `n of total` on stderr) or, with --json, the ListResponse."""
    from scimjit.scim.errors import ScimError
    from scimjit.store import admin

    settings = Settings.load()
    view = admin.VIEWS[args.view]
    count = args.count if args.count is not None else (args.limit if getattr(args, "limit", None) else 100)
    db = _db(settings)
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
            )
    except ScimError as exc:
        return _fail(exc.detail)
    finally:
        db.dispose()
    if args.json:
        body = {"totalResults": page.total, "startIndex": page.start_index, "Resources": page.resources}
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
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
    db = _db(settings)
    progress = Progress("exported")
    try:
        records = admin.stream(
            db,
            admin.VIEWS["audit"],
            filter=_filter(args, "audit"),
            max_filter_length=settings.max_filter_length,
            max_filter_depth=settings.max_filter_depth,
        )
        write_jsonl(records, sys.stdout, progress)
    except ScimError as exc:
        return _fail(exc.detail)
    finally:
        db.dispose()
    progress.done(f"{progress.count} audit record(s) exported")
    return 0


def write_jsonl(records: Iterator[dict[str, Any]], out: IO[str], progress: Progress | None = None) -> int:
    n = 0
    for record in records:
        out.write(orjson.dumps(record).decode() + "\n")
        n += 1
        if progress is not None:
            progress.add()
    out.flush()
    return n


def cmd_audit_purge(args: argparse.Namespace) -> int:
    """Delete audit records older than --older-than (default: the `audit_retention` setting)."""
    from scimjit.clock import SystemClock
    from scimjit.store import audit

    settings = Settings.load()
    retention = parse_duration(args.older_than) if args.older_than else settings.audit_retention
    if retention <= 0:
        print("audit_retention is 0 (keep forever): nothing purged", file=sys.stderr)
        return 0
    now = SystemClock().now()
    db = _db(settings)
    progress = Progress("purged", every=5000)
    try:
        deleted = audit.purge(db, now - timedelta(seconds=retention), progress=progress.add)
        with db.write() as conn:  # the purge itself is on the record
            audit.record(
                conn,
                actor=f"cli:{_user()}",
                action="audit.purge",
                outcome="success",
                details={"deleted": deleted, "olderThanSeconds": retention},
                at_micros=_micros(now),
            )
    finally:
        db.dispose()
    progress.done(f"purged {deleted} audit record(s) older than {args.older_than or 'audit_retention'}")
    return 0


def _micros(when: Any) -> int:
    from scimjit.clock import to_micros

    return to_micros(when)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment (containers): still record that it was the CLI
        return "unknown"


# ---------------------------------------------------------------- parser


def _list_options(parser: argparse.ArgumentParser, view: str) -> None:
    present = {opt for action in parser._actions for opt in action.option_strings}

    def add(flag: str, **kwargs: Any) -> None:
        if flag not in present:
            parser.add_argument(flag, **kwargs)

    add("--filter", default=None, help='SCIM filter, e.g. \'status eq "active" and application eq "wiki"\'')
    add("--sort-by", default=None, help="attribute to sort by, e.g. createdAt")
    add("--sort-order", default=None, choices=["ascending", "descending"])
    add("--start-index", type=int, default=1)
    add("--count", type=int, default=None, help="page size (default 100)")
    add("--json", action="store_true", help="JSON for machines")
    if view == "accounts":
        add("--application", default=None, help="shorthand for application eq ...")
    add("--user", default=None, help="shorthand for userId eq ... (SCIM user id)")
    add("--status", default=None, help="shorthand for status eq ...")
    parser.set_defaults(func=cmd_list, view=view)


def _subcommand(sub: Any, name: str, help: str) -> Any:
    """The subparsers of `scimjit <name>`, creating the command if no one registered it yet."""
    parser = sub.choices.get(name)
    if parser is None:
        return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError(f"`scimjit {name}` exists without subcommands")


def register(sub: Any) -> None:
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

    for view, help in (
        ("accounts", "the account ledger"),
        ("grants", "time-bound access grants"),
        ("requests", "access requests"),
    ):
        commands = _subcommand(sub, view, help)
        lister = commands.choices.get("list") or commands.add_parser(
            "list", help=f"list {view} with SCIM filters"
        )
        _list_options(lister, view)
