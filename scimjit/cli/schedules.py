"""`scimjit schedules import FILE [--source S] [--period-start T --period-end T] [--json]`: a scheduling
system's complete plan from a file, applied exactly as `PUT /jit/v1/schedules/{source}` applies it
(scimjit/access/schedules.py): new shifts become grants, changed ones are updated, missing ones revoked.

FILE is CSV with a header (`id,user,group,startsAt,endsAt`; other columns are ignored) or JSON (the PUT body
`{"source"?, "period"?, "shifts": [...]}`, or a bare list of shifts); `-` reads stdin. The source is
`--source`, else the JSON's `source`. Progress on stderr while a long file is read; the summary on stdout.
A bad file or a bad shift is `error: ...` (each refused shift on its own line) and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

import orjson

from scimjit.cli import context
from scimjit.cli.output import LOG_FORMAT, Progress, fail, print_json

COLUMNS = ("id", "user", "group", "startsAt", "endsAt")


class BadFile(ValueError):
    pass


def read_plan(text: str, name: str, progress: Progress | None = None) -> dict[str, Any]:
    """The plan in `text` (CSV or JSON, told apart by the first character), as the PUT body."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BadFile(f"{name}: not valid JSON ({exc})") from None
        plan = {"shifts": doc} if isinstance(doc, list) else doc
        if not isinstance(plan, dict) or not isinstance(plan.get("shifts"), list):
            raise BadFile(f'{name}: expected {{"shifts": [...]}} or a list of shifts')
        if progress is not None:
            progress.add(len(plan["shifts"]))
        return plan
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise BadFile(f"{name}: the CSV header lacks {', '.join(missing)} (expected {','.join(COLUMNS)})")
    shifts = []
    for row in reader:
        shifts.append({c: (row.get(c) or "").strip() for c in COLUMNS})
        if progress is not None:
            progress.add()
    return {"shifts": shifts}


def import_(args: argparse.Namespace) -> int:
    from scimjit.config import ConfigError
    from scimjit.jiterrors import JitError

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    name = "stdin" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read {name}: {exc}")
    progress = Progress("shifts read")
    try:
        plan = read_plan(text, name, progress)
    except BadFile as exc:
        return fail(str(exc))
    source = args.source or plan.pop("source", None)
    plan.pop("source", None)
    if not source:
        return fail("name the schedule with --source (or a `source` in the JSON file)")
    if (args.period_start is None) != (args.period_end is None):
        return fail("give --period-start and --period-end together")
    if args.period_start is not None:
        plan["period"] = {"start": args.period_start, "end": args.period_end}
    try:
        access = context.access()
        login = context.login_name()
        summary = access.apply_schedule(source, plan, actor=f"cli:{login}" if login else "cli")
    except JitError as exc:
        for bad in exc.extra.get("shifts", []):
            print(f"  shift {bad['id']}: {bad['error']}", file=sys.stderr)
        return fail(exc.detail)
    except ConfigError as exc:
        return fail(str(exc))
    if args.json:
        print_json({"source": source, **summary})
    else:
        progress.done(f"{progress.count:,} shift(s) read from {name}")
        print(", ".join(f"{k} {v:,}" for k, v in summary.items()))
    return 0


def register(sub: Any) -> None:
    """Add `schedules import` to the `scimjit` parser's subparsers."""
    commands = sub.add_parser("schedules", help="shifts from a scheduling system").add_subparsers(
        dest="schedules_command", required=True
    )
    parser = commands.add_parser(
        "import",
        help="apply a complete plan of shifts (CSV or JSON) as grants: new ones created, changed ones "
        "updated, missing ones revoked (as PUT /jit/v1/schedules/{source})",
    )
    parser.add_argument(
        "file", help="CSV with the header id,user,group,startsAt,endsAt, or JSON; - for stdin"
    )
    parser.add_argument("--source", default=None, help="the scheduling system's name (the plan it replaces)")
    parser.add_argument("--period-start", default=None, help="with --period-end: revoke only within it")
    parser.add_argument("--period-end", default=None)
    parser.add_argument("--json", action="store_true", help="the summary as JSON")
    parser.set_defaults(func=import_)
