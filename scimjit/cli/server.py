"""`scimjit serve | db upgrade | token create|list|revoke`: run the server, migrate its schema, manage API tokens."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scimjit.cli import context
from scimjit.cli.errors import require_current_schema
from scimjit.cli.output import fail, print_json, print_table
from scimjit.config import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from scimjit.metrics import prepare_multiprocess

    require_current_schema(Settings.load().database_url)
    _print_first_admin_token()
    prepare_multiprocess(args.workers)  # N processes share one metrics directory (scimjit.metrics)
    uvicorn.run(
        "scimjit.http.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="auto",
        http="auto",
        access_log=args.access_log,
        log_level=args.log_level,
        limit_concurrency=args.limit_concurrency,
        forwarded_allow_ips=args.forwarded_allow_ips,
        backlog=2048,
    )
    return 0


def _print_first_admin_token() -> None:
    """On the very first start there is no way in: make an admin token and show it, once.

    "First" means no token was ever created. Once tokens exist, serve never mints one: an operator who revoked
    the `admin` token (rotation, a leak) did so on purpose, and a fresh secret printed into a service log
    would undo that. Serve then starts normally and, if no active token has the `admin` scope, says how to
    make one (`scimjit token create NAME --scope admin`, run by whoever has the database).
    """
    svc = context.services()
    if not svc.tokens.any_created():
        secret = svc.tokens.create("admin", ["admin"])
        print(
            "\nFirst start: created the admin token (shown once, store it now):\n\n"
            f"    {secret}\n\n"
            "Use it as `Authorization: Bearer <token>`; make narrower ones with `scimjit token create`.\n",
            flush=True,
        )
    elif not svc.tokens.active_admin_exists():
        print(
            "warning: no active token has the admin scope (the first `admin` token is not re-created once"
            " revoked); make one with `scimjit token create NAME --scope admin`",
            file=sys.stderr,
            flush=True,
        )
    svc.db.dispose()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from scimjit.store.migrate import current_revision, upgrade

    db = context.database()
    upgrade(db, args.revision)
    print(f"database at revision {current_revision(db)}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    svc = context.services()
    if args.app is not None:  # a login token bound to a misspelt application would be refused on every call
        names = sorted(app.name for app in svc.settings.applications)
        if args.app not in names:
            known = ", ".join(names) if names else "none configured"
            return fail(f"unknown application {args.app!r} (applications: {known})")
    try:
        secret = svc.tokens.create(args.name, args.scope, application=args.app)
    except ValueError as exc:
        return fail(str(exc))
    print(secret)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from scimjit.clock import format_micros

    # The store's rows are keyed by SQLAlchemy's `quoted_name` (a str subclass orjson refuses as a key).
    rows = [{str(k): v for k, v in r.items()} for r in context.services().tokens.list()]
    if args.json:
        print_json(rows)
        return 0
    table = [
        {
            "name": r["name"],
            "scopes": " ".join(r["scopes"]),
            "app": r["application"] or "",
            "created": format_micros(r["created_at"]),
            "revoked": format_micros(r["revoked_at"]) if r["revoked_at"] else "",
        }
        for r in rows
    ]
    print_table(table, ["name", "scopes", "app", "created", "revoked"])
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    if context.services().tokens.revoke(args.name):
        print(f"revoked {args.name}")
        return 0
    return fail(f"no active token named {args.name!r}")


def register(sub: Any) -> None:
    """Add `serve`, `db` and `token` to the `scimjit` parser's subparsers."""
    serve = sub.add_parser("serve", help="serve the SCIM and JIT APIs over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (one per core in production)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--access-log", action="store_true", help="uvicorn's own access log (off: scimjit logs)"
    )
    serve.add_argument("--limit-concurrency", type=int, default=None)
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies whose X-Forwarded-For names the client (the per-address rate limit's key); "
        "default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1",
    )
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="apply Alembic migrations (the only way the schema is created)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="create a token; prints the secret alone, once")
    create.add_argument("name")
    create.add_argument(
        "--scope", action="append", required=True, help="scim:read, scim:write, admin, login, ..."
    )
    create.add_argument("--app", default=None, help="bind a login token to one application")
    create.set_defaults(func=cmd_token_create)
    tlist = token.add_parser("list", help="list tokens (never their secrets)")
    tlist.add_argument("--json", action="store_true")
    tlist.set_defaults(func=cmd_token_list)
    revoke = token.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_token_revoke)
