"""`scimjit sweep | grants create|extend|revoke | requests create|approve|deny`: time-bound access.

    scimjit sweep [--once]
    scimjit grants create --user alice --group prod-admins --duration 2h [--starts-at T] [--justification TEXT]
    scimjit grants extend GRANT_ID (--duration 1h | --expires-at T)
    scimjit grants revoke GRANT_ID [--reason TEXT]
    scimjit requests create --user alice --group prod-admins --duration 1h --justification TEXT
    scimjit requests approve|deny REQUEST_ID --approver bob [--comment TEXT]
    scimjit requests policies [--json]      the [[jit.policies]]: who may ask, conditions, grant windows

`grants list` and `requests list` (SCIM filters) are admin views (scimjit/cli/admin.py); scimjit/cli/main.py
puts them under the same `grants` / `requests` commands. The actor recorded in the audit trail is
`cli:<login name>`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scimjit.cli import context
from scimjit.cli.output import LOG_FORMAT, fail, print_json, print_table
from scimjit.config import ConfigError, parse_duration
from scimjit.jiterrors import JitError

if TYPE_CHECKING:
    from scimjit.access.service import Access

Action = Callable[["Access", argparse.Namespace], int]


def _actor() -> str:
    name = context.login_name()
    return f"cli:{name}" if name else "cli"


def _run(action: Action) -> Callable[[argparse.Namespace], int]:
    """Build the service, run the action; configuration and refusal errors become a message and exit 2."""

    def command(args: argparse.Namespace) -> int:
        try:
            return action(context.access(), args)
        except (ConfigError, JitError) as exc:
            return fail(str(exc))

    return command


def _show(doc: dict[str, Any], args: argparse.Namespace) -> int:
    """The grant or request as `key: value` lines, or as JSON with --json."""
    if getattr(args, "json", False):
        print_json(doc)
    else:
        for key, value in doc.items():
            print(f"{key}: {value}")
    return 0


def sweep(access: Access, args: argparse.Namespace) -> int:
    from scimjit.access.sweeper import run_sweeper
    from scimjit.config import Settings

    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), format=LOG_FORMAT)
    if args.once:
        print_json(access.sweeper.sweep_once().to_json())
        return 0
    interval = args.interval if args.interval is not None else Settings.load().sweep_interval
    run_sweeper(access.sweeper, interval)
    return 0


def grants_create(access: Access, args: argparse.Namespace) -> int:
    doc = access.create_grant(
        user=args.user,
        group=args.group,
        duration=args.duration,
        expires_at=args.expires_at,
        starts_at=args.starts_at,
        justification=args.justification,
        actor=_actor(),
    )
    return _show(doc, args)


def grants_extend(access: Access, args: argparse.Namespace) -> int:
    doc = access.extend_grant(args.id, duration=args.duration, expires_at=args.expires_at, actor=_actor())
    return _show(doc, args)


def grants_revoke(access: Access, args: argparse.Namespace) -> int:
    return _show(access.revoke_grant(args.id, actor=_actor(), reason=args.reason), args)


def requests_create(access: Access, args: argparse.Namespace) -> int:
    doc = access.create_request(
        user=args.user,
        group=args.group,
        duration=args.duration,
        justification=args.justification,
        starts_at=args.starts_at,
        requested_by=_actor(),
    )
    return _show(doc, args)


def requests_decide(access: Access, args: argparse.Namespace) -> int:
    doc = access.decide(
        args.id, approver=args.approver, decision=args.decision, comment=args.comment, actor=_actor()
    )
    return _show(doc, args)


def policies(args: argparse.Namespace) -> int:
    """The configured policies (from the file alone: no database), conditions and grant windows included."""
    from scimjit.cli.jit import conditions_text, windows_text
    from scimjit.config import Settings

    summaries = [p.summary() for p in Settings.load().jit.policies]
    if args.json:
        print_json(summaries)
        return 0
    if not summaries:
        print("no access policies configured (add [[jit.policies]] tables)")
        return 0
    rows = [
        {
            "group": s["group"],
            "eligible": ",".join(s["eligible"]) or "(any active user)",
            "approvers": ",".join(s["approvers"]) or "-",
            "max": f"{s['maxDuration']:g}s",
            "auto-approve": f"<={s['autoApprove']['maxDuration']:g}s" if s["autoApprove"] else "-",
            "conditions": conditions_text(s["conditions"]),
            "outside": s["outside"] if s["conditions"] else "-",
            "grant windows": windows_text(s["windows"]) or "-",
        }
        for s in summaries
    ]
    print_table(rows, rows[0], rule=False)
    return 0


def _interval(text: str) -> float:
    """`--interval`: a duration as everywhere (range-checked), and more than nothing (0 would spin)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration greater than 0, got {text!r}")
    return seconds


def register_sweep(sub: Any) -> None:
    """Add `sweep` to the `scimjit` parser's subparsers."""
    s = sub.add_parser("sweep", help="expire memberships, grants and requests; send the revokes (run many)")
    s.add_argument("--once", action="store_true", help="one sweep, print what it did, exit")
    s.add_argument(
        "--interval",
        type=_interval,
        default=None,
        help='time between sweeps, e.g. 2s or "500ms" (default: config)',
    )
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=_run(sweep))


def register_grants(g: Any) -> None:
    """Add `create`, `extend` and `revoke` to the subparsers of `scimjit grants`."""
    gc = g.add_parser("create", help="grant a user a group for a while")
    gc.add_argument("--user", required=True, help="user id or userName")
    gc.add_argument("--group", required=True, help="group id or displayName")
    when = gc.add_mutually_exclusive_group(required=True)
    when.add_argument("--duration", help="e.g. 2h, 30m, 1d")
    when.add_argument("--expires-at", help="RFC 3339, e.g. 2030-01-01T18:00:00Z")
    gc.add_argument("--starts-at", default=None, help="RFC 3339; default now")
    gc.add_argument("--justification", default=None)
    gc.add_argument("--json", action="store_true")
    gc.set_defaults(func=_run(grants_create))
    ge = g.add_parser("extend", help="move a grant's end (duration: added to the current end)")
    ge.add_argument("id")
    ext = ge.add_mutually_exclusive_group(required=True)
    ext.add_argument("--duration")
    ext.add_argument("--expires-at")
    ge.add_argument("--json", action="store_true")
    ge.set_defaults(func=_run(grants_extend))
    gr = g.add_parser("revoke", help="end a grant now")
    gr.add_argument("id")
    gr.add_argument("--reason", default=None)
    gr.add_argument("--json", action="store_true")
    gr.set_defaults(func=_run(grants_revoke))


def register_requests(r: Any) -> None:
    """Add `create`, `approve` and `deny` to the subparsers of `scimjit requests`."""
    rc = r.add_parser("create", help="request a group for a user (policy rules apply)")
    rc.add_argument("--user", required=True, help="user id or userName")
    rc.add_argument("--group", required=True, help="group id or displayName")
    rc.add_argument("--duration", required=True)
    rc.add_argument("--justification", required=True)
    rc.add_argument("--starts-at", default=None)
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=_run(requests_create))
    for decision in ("approve", "deny"):
        rd = r.add_parser(decision, help=f"{decision} a pending request as an approver")
        rd.add_argument("id")
        rd.add_argument("--approver", required=True, help="the approver's user id or userName")
        rd.add_argument("--comment", default=None)
        rd.add_argument("--json", action="store_true")
        rd.set_defaults(func=_run(requests_decide), decision=decision)
    rp = r.add_parser("policies", help="the access policies: who may ask, conditions, grant windows")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=policies)
