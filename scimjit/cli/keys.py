"""`scimjit keys list|rotate`: scimjit's own signing keys (the signer: scimjit/delivery/signing.py).

A rotation makes the next key, which signs from then on; the retired key stays published in the JWKS for a day
(docs/jit-provisioning.md, "scimjit's signing keys and their rotation").
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from scimjit.cli import context
from scimjit.cli.output import print_json, print_table

if TYPE_CHECKING:
    from scimjit.delivery.signing import Signer


def _signer() -> Signer:
    from scimjit.clock import SystemClock
    from scimjit.delivery.signing import Signer

    return Signer(context.database(), SystemClock())


def list_keys(args: argparse.Namespace) -> int:
    rows = _signer().listing()
    if args.json:
        print_json(rows)
    elif not rows:
        print("no signing key yet (the first is made when scimjit first signs, or by `scimjit keys rotate`)")
    else:
        print_table(
            [
                {
                    **r,
                    "retiredAt": r["retiredAt"] or "-",
                    "signs": _yes(r["signs"]),
                    "published": _yes(r["published"]),
                }
                for r in rows
            ],
            ["kid", "algorithm", "createdAt", "retiredAt", "signs", "published"],
        )
    return 0


def rotate(args: argparse.Namespace) -> int:
    from scimjit.delivery.signing import PUBLISH_LEAD

    key, retired = _signer().rotate(immediately=args.now)
    if args.json:
        print_json({"kid": key.kid, "algorithm": key.algorithm, "retired": retired, "immediately": args.now})
    else:
        when = "now" if args.now else f"in {int(PUBLISH_LEAD / 60)} minutes (published first)"
        print(
            f"new signing key {key.kid} ({key.algorithm}) signs {when}; {retired} older key(s) retired then, "
            "and published for a day more"
        )
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def register(sub: Any) -> None:
    """Add `keys list` and `keys rotate` to the `scimjit` parser's subparsers."""
    keys = sub.add_parser("keys", help="scimjit's signing keys (signed sign-in results, the JWKS)")
    cmds = keys.add_subparsers(dest="keys_command", required=True)
    ls = cmds.add_parser("list", help="every key: created, retired, signing now, published")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_keys)
    rot = cmds.add_parser(
        "rotate",
        help="make a new key, published at once, signing after 6 minutes; the old one is retired then",
    )
    rot.add_argument(
        "--now",
        action="store_true",
        help="sign with the new key at once (a leaked key), instead of after publishing it for 6 minutes",
    )
    rot.add_argument("--json", action="store_true")
    rot.set_defaults(func=rotate)
