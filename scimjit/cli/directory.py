"""`scimjit users list | groups list`: the same SCIM search the HTTP API runs, printed as a table or JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scimjit.cli import context
from scimjit.cli.output import fail, print_json, print_table

DEFAULT_COLUMNS = {"User": ["id", "userName", "displayName", "active"], "Group": ["id", "displayName"]}


def cmd_query(args: argparse.Namespace) -> int:
    """A page of Users or Groups; `--attributes` also names the table's columns."""
    from scimjit.clock import to_micros
    from scimjit.http.listing import fetch_page
    from scimjit.scim.errors import ScimError
    from scimjit.scim.projection import apply, parse_projection
    from scimjit.store.query import SearchParams
    from scimjit.store.resources import Context

    svc = context.services()
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
            max_filter_terms=svc.settings.filter_max_terms,
        )
        page, docs = fetch_page(ctx, kind, params)
    except ScimError as exc:
        return fail(exc.detail + (f" ({exc.scim_type})" if exc.scim_type else ""))
    docs = [apply(svc.registry, rt, d, projection) for d in docs]
    for d in docs:
        d.get("meta", {}).pop("location", None)
    if args.json:
        print_json({"totalResults": page.total, "Resources": docs})
        return 0
    columns = [a.strip() for a in args.attributes.split(",")] if args.attributes else DEFAULT_COLUMNS[kind]
    print_table([{c: value_at(d, c) for c in columns} for d in docs], columns)
    print(f"({len(docs)} of {page.total})", file=sys.stderr)
    return 0


def value_at(doc: dict[str, Any], path: str) -> str:
    """The text of attribute `path` (`name.givenName`, `emails.value`; names compared case-insensitively, as
    SCIM does) in one resource: multi-valued ones comma-separated, a missing one empty."""
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


def register(sub: Any) -> None:
    """Add `users list` and `groups list` to the `scimjit` parser's subparsers."""
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
