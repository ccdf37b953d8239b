"""`scimjit reconcile`: one reconcile pass now (the pass itself: scimjit/provisioning/reconcile.py).

Progress per batch on stderr, a summary (or, with --dry-run, the repairs that would be made) on stdout, or
everything as JSON with --json.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from scimjit.cli import context
from scimjit.cli.output import LOG_FORMAT, fail, print_json, print_table
from scimjit.config import ConfigError

if TYPE_CHECKING:
    from scimjit.provisioning.reconcile import ReconcileReport


def reconcile(args: argparse.Namespace) -> int:
    import asyncio

    from scimjit.provisioning.reconcile import ReconcileError

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        access = context.access()
    except (ConfigError, OSError, ValueError) as exc:
        return fail(str(exc))

    def progress(report: ReconcileReport) -> None:
        if not args.quiet:
            print(
                f"reconciled {report.accounts:,}/{report.total:,} accounts, {report.repairs:,} repairs",
                file=sys.stderr,
            )

    async def run() -> ReconcileReport:
        try:
            return await access.reconciler.run(
                application=args.application, dry_run=args.dry_run, progress=progress
            )
        finally:
            await access.engine.aclose()

    try:
        report = asyncio.run(run())
    except ReconcileError as exc:
        return fail(str(exc))
    if args.json:
        print_json(report.to_json())
        return 0
    if not report.ran:
        print("another process is running the reconcile pass; nothing done")
        return 0
    _print_repairs(report)
    print(_summary(report))
    return 0


def _print_repairs(report: ReconcileReport) -> None:
    if not report.items:
        return
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
    print_table(rows, rows[0], rule=False)


def _summary(report: ReconcileReport) -> str:
    verb = "would repair" if report.dry_run else "repaired"
    more = f" (first {len(report.items):,} listed)" if len(report.items) < report.repairs else ""
    return (
        f"{report.accounts:,} account(s) checked, {verb} {report.repairs:,}{more} with {report.events:,} "
        f"event(s); {report.downstream_checked:,} compared downstream, {report.downstream_errors:,} "
        f"downstream error(s), {report.skipped:,} skipped (busy); {report.seconds:.1f}s"
        + (" [dry run: nothing written]" if report.dry_run else "")
    )


def register(sub: Any) -> None:
    """Add `reconcile` to the `scimjit` parser's subparsers."""
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
