"""The `scimjit` command: serve, migrate, manage tokens, and query Users and Groups with SCIM filters."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from scimjit.cli.errors import EXIT_USER_ERROR, describe, require_current_schema
from scimjit.config import ConfigError, Settings

if TYPE_CHECKING:
    from scimjit.services import Services

# Commands that run until stopped: they refuse to start on an old or empty schema (cli_errors).
LONG_RUNNING = {"worker", "sweep"}


def _services(args: argparse.Namespace) -> Services:
    from scimjit.services import Services

    return Services.build(Settings.load())


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
    svc = _services(argparse.Namespace())
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
    from scimjit.store.db import Database
    from scimjit.store.migrate import current_revision, upgrade

    db = Database(Settings.load().database_url)
    upgrade(db, args.revision)
    print(f"database at revision {current_revision(db)}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    svc = _services(args)
    if args.app is not None:  # a login token bound to a misspelt application would be refused on every call
        names = sorted(app.name for app in svc.settings.applications)
        if args.app not in names:
            known = ", ".join(names) if names else "none configured"
            print(f"error: unknown application {args.app!r} (applications: {known})", file=sys.stderr)
            return EXIT_USER_ERROR
    try:
        secret = svc.tokens.create(args.name, args.scope, application=args.app)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(secret)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from scimjit.clock import from_micros, isoformat

    rows = _services(args).tokens.list()
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    table = [
        {
            "name": r["name"],
            "scopes": " ".join(r["scopes"]),
            "app": r["application"] or "",
            "created": isoformat(from_micros(r["created_at"])),
            "revoked": isoformat(from_micros(r["revoked_at"])) if r["revoked_at"] else "",
        }
        for r in rows
    ]
    print_table(table, ["name", "scopes", "app", "created", "revoked"])
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    if _services(args).tokens.revoke(args.name):
        print(f"revoked {args.name}")
        return 0
    print(f"error: no active token named {args.name!r}", file=sys.stderr)
    return EXIT_USER_ERROR


def cmd_query(args: argparse.Namespace) -> int:
    """`users list` / `groups list`: the same search the HTTP API runs, printed as a table or JSON."""
    from scimjit.clock import to_micros
    from scimjit.http.listing import fetch_page
    from scimjit.scim.errors import ScimError
    from scimjit.scim.projection import apply, parse_projection
    from scimjit.store.query import SearchParams
    from scimjit.store.resources import Context

    svc = _services(args)
    kind = "User" if args.resource == "users" else "Group"
    rt = svc.registry.resource_type(kind)
    try:
        projection = parse_projection(svc.registry, rt, args.attributes, args.excluded_attributes)
        ctx = Context(svc.db, svc.registry, svc.listener, to_micros(svc.clock.now()), "", projection)
        params = SearchParams(
            filter=args.filter,
            sort_by=args.sort_by,
            sort_order=args.sort_order,
            start_index=args.start_index,
            count=args.count,
            cursor=None,
            max_page_size=max(args.count, 1),
            max_filter_length=svc.settings.max_filter_length,
            max_filter_depth=svc.settings.max_filter_depth,
        )
        page, docs = fetch_page(ctx, kind, params)
    except ScimError as exc:
        print(f"error: {exc.detail}" + (f" ({exc.scim_type})" if exc.scim_type else ""), file=sys.stderr)
        return EXIT_USER_ERROR
    docs = [apply(svc.registry, rt, d, projection) for d in docs]
    for d in docs:
        d.get("meta", {}).pop("location", None)
    if args.json:
        print(
            orjson.dumps({"totalResults": page.total, "Resources": docs}, option=orjson.OPT_INDENT_2).decode()
        )
        return 0
    columns = (
        [a.strip() for a in args.attributes.split(",")]
        if args.attributes
        else (["id", "userName", "displayName", "active"] if kind == "User" else ["id", "displayName"])
    )
    print_table([{c: _cell(d, c) for c in columns} for d in docs], columns)
    print(f"({len(docs)} of {page.total})", file=sys.stderr)
    return 0


def _cell(doc: dict[str, Any], path: str) -> str:
    value: Any = doc
    for part in path.split("."):
        if isinstance(value, list):
            value = [v.get(part) if isinstance(v, dict) else None for v in value]
        elif isinstance(value, dict):
            value = next((v for k, v in value.items() if k.lower() == part.lower()), None)
        else:
            return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value if v is not None)
    return "" if value is None else str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scimjit", description="SCIM 2.0 server with just-in-time provisioning"
    )
    sub = parser.add_subparsers(dest="command", required=True)

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

    for resource in ("users", "groups"):
        group = sub.add_parser(resource, help=f"query {resource} with SCIM filters")
        actions = group.add_subparsers(dest=f"{resource}_command", required=True)
        q = actions.add_parser("list", help=f"list {resource} matching a SCIM filter")
        q.add_argument("--filter", default=None, help="e.g. 'userName sw \"a\" and active eq true'")
        q.add_argument(
            "--attributes", default=None, help="comma-separated attributes (also the table columns)"
        )
        q.add_argument("--excluded-attributes", default=None)
        q.add_argument("--sort-by", default=None)
        q.add_argument("--sort-order", default=None, choices=["ascending", "descending"])
        q.add_argument("--start-index", type=int, default=1)
        q.add_argument("--count", type=int, default=100)
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_query, resource=resource)

    _register_extensions(sub)
    return parser


def _register_extensions(sub: Any) -> None:
    """Commands of the JIT engine live with it (scimjit/cli/jit.py); the admin views' commands in
    scimjit/cli/admin.py (registered after the engine's: it extends `accounts list`)."""
    from scimjit.cli import access as access_commands
    from scimjit.cli import admin as admin_commands
    from scimjit.cli import jit as commands

    commands.register(sub)
    access_commands.register(sub)  # sweep, grants, requests (before the admin views' `list`)
    admin_commands.register(sub)


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
