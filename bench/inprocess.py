"""In-process cost of one request: the app called directly as ASGI, no sockets, no server, no load generator.

`python -m bench.inprocess --only W1,W2 --requests 5000 [--profile]` seeds a SQLite file (or a PostgreSQL
schema with `--database-url`) as `make bench` does, builds the app as `scimjit serve` does (request log on,
to /dev/null), and calls it N times per workload. It prints CPU µs per request (`time.process_time`, so other
processes on the machine barely move it) and, with `--profile`, the top of a cProfile by cumulative time.
This is the A/B tool for hot-path changes on a shared machine: run it on two worktrees one after the other.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import data
from bench.seed import Dataset, Seeder, create_target, create_token

SCIM = "/scim/v2"


def _scope(method: str, path: str, query: str, token: str, body: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"accept", b"application/scim+json"),
    ]
    if body:
        headers += [(b"content-type", b"application/scim+json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _call(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


_newcomers = itertools.count(100)  # W6: users 100.. are not in the 100-member group; each pass takes new ones


def _requests(name: str, n: int, users: int, token: str) -> list[tuple[dict[str, Any], bytes]]:
    out = []
    tag = uuid.uuid4().hex[:6]
    for j in range(n):
        i = (j * 7919) % users
        if name == "W1":
            out.append((_scope("GET", f"{SCIM}/Users/{data.user_id(i)}", "", token, b""), b""))
        elif name == "W2":
            query = f"filter=userName%20eq%20%22{data.user_name(i)}%22"
            out.append((_scope("GET", f"{SCIM}/Users", query, token, b""), b""))
        elif name == "W3":
            query = "filter=name.familyName%20sw%20%22Sm%22&count=50"
            out.append((_scope("GET", f"{SCIM}/Users", query, token, b""), b""))
        elif name == "W4":
            out.append((_scope("GET", f"{SCIM}/Users", "startIndex=5000&count=100", token, b""), b""))
        elif name == "W6":  # Entra's member add to the 100-member group, a different non-member each time
            body = orjson.dumps(
                {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [
                        {"op": "Add", "path": "members", "value": [{"value": data.user_id(next(_newcomers))}]}
                    ],
                }
            )
            out.append((_scope("PATCH", f"{SCIM}/Groups/{data.group_id(100)}", "", token, body), body))
        elif name == "W5":
            body = orjson.dumps(data.new_user_body(tag, j))
            out.append((_scope("POST", f"{SCIM}/Users", "", token, body), body))
        elif name.startswith(
            "/"
        ):  # any GET, e.g. "/Users?startIndex=5000&count=1" (no commas: --only splits)
            path, _, query = name.partition("?")
            out.append((_scope("GET", SCIM + path, query, token, b""), b""))
        else:
            raise SystemExit(f"unknown workload {name}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess")
    parser.add_argument("--only", default="W1,W2,W5", help='W1..W6, or a GET such as "/Users?count=1"')
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3, help="measured passes; the best is printed")
    parser.add_argument("--database-url")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="scimjit-inproc-"))
    target = create_target(args.database_url, tmp)
    seeder = Seeder(target.db)
    dataset = Dataset()
    seeder.users(dataset, args.users)
    if args.users >= 200:
        seeder.group(dataset, 100)
    seeder.finish()
    token = create_token(target.db)
    os.environ.update(
        SCIMJIT_DATABASE_URL=target.url,
        SCIMJIT_RATE_LIMIT_PER_SECOND="0",
        SCIMJIT_RUN_WORKER="0",
        SCIMJIT_RUN_SWEEPER="0",
    )
    from scimjit.config import Settings
    from scimjit.http.app import create_app
    from scimjit.logs import configure
    from scimjit.services import compose

    settings = Settings.load()
    configure(settings.log_level, stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    app = create_app(services=compose(settings))
    loop = uvloop.new_event_loop()
    try:
        for name in args.only.split(","):
            best = float("inf")
            for _ in range(args.repeat + 1):  # the first pass warms caches and is not counted
                batch = _requests(name, args.requests, args.users, token)
                best = min(best, loop.run_until_complete(_measure(app, batch)))
            print(f"{name}: {best:8.1f} µs/req CPU (best of {args.repeat} x {args.requests})", flush=True)
            if args.profile:
                _profile(loop, app, _requests(name, args.requests, args.users, token))
    finally:
        loop.close()
        target.drop()
    return 0


async def _measure(app: Any, batch: list[tuple[dict[str, Any], bytes]]) -> float:
    statuses: set[int] = set()
    started = time.process_time()
    for scope, body in batch:
        statuses.add(await _call(app, scope, body))
    spent = time.process_time() - started
    if not statuses <= {200, 201, 204}:
        raise SystemExit(f"unexpected statuses {statuses}")
    return spent / len(batch) * 1e6


def _profile(loop: Any, app: Any, batch: list[tuple[dict[str, Any], bytes]]) -> None:
    profiler = cProfile.Profile()
    run: Callable[[], Any] = lambda: loop.run_until_complete(_measure(app, batch))  # noqa: E731
    profiler.runcall(run)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(45)
    print(out.getvalue())


if __name__ == "__main__":
    raise SystemExit(main())
