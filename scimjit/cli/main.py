"""The `scimjit` command: the whole command tree in one place (`build_parser`) and `main`, which runs one command.

Each command group lives in its own module, which adds its commands to the parser here:

    serve, db upgrade, token ...            scimjit/cli/server.py
    users list, groups list                 scimjit/cli/directory.py
    apps list, worker, outbox ...           scimjit/cli/jit.py
    reconcile                               scimjit/cli/reconcile.py
    sweep, grants/requests create ...       scimjit/cli/access.py
    accounts/grants/requests list, audit    scimjit/cli/admin.py
    accounts idle                           scimjit/cli/idle.py
    schedules import                        scimjit/cli/schedules.py

Where two modules share a command (`grants`, `requests`), it is created here and each adds its subcommands,
so every command is defined exactly once. Output goes through scimjit/cli/output.py; a user's mistake becomes
one `error: ...` line and exit code 2 (scimjit/cli/errors.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from scimjit.cli import access, admin, directory, idle, jit, keys, reconcile, schedules, server
from scimjit.cli.errors import EXIT_USER_ERROR, describe, require_current_schema
from scimjit.config import ConfigError, Settings

# Commands that run until stopped: they refuse to start on an old or empty schema (cli/errors.py).
LONG_RUNNING = {"worker", "sweep"}


def _command(sub: Any, name: str, help: str) -> Any:
    """Add `scimjit <name>` and return its (required) subcommands."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True)


def build_parser() -> argparse.ArgumentParser:
    """The command tree; the order here is the order `scimjit --help` lists the commands in."""
    parser = argparse.ArgumentParser(
        prog="scimjit", description="SCIM 2.0 server with just-in-time provisioning"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    server.register(sub)  # serve, db, token
    directory.register(sub)  # users, groups
    jit.register(sub)  # apps, worker, outbox
    accounts = _command(sub, "accounts", "the account ledger")
    admin.register_accounts_list(accounts)
    idle.register(accounts)  # accounts idle
    reconcile.register(sub)
    access.register_sweep(sub)
    grants = _command(sub, "grants", "time-bound group memberships")
    access.register_grants(grants)  # create, extend, revoke
    admin.register_list(grants, "grants")
    requests = _command(sub, "requests", "access requests")
    access.register_requests(requests)  # create, approve, deny
    admin.register_list(requests, "requests")
    schedules.register(sub)  # schedules import
    admin.register_audit(sub)
    keys.register(sub)  # keys list, keys rotate
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user's mistake (see scimjit/cli/errors.py) is one `error: ...` line on stderr and
    exit code 2; only a bug shows a traceback."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in LONG_RUNNING:
            require_current_schema(Settings.load().database_url)
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:  # a mistake in the file or a SCIMJIT_* variable: one line, no traceback
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:
        message = describe(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return result


if __name__ == "__main__":
    sys.exit(main())
