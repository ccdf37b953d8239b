"""C1: one costly request must not stall everyone (issue 11 §1a).

Seeds 50k users and 500k membership rows (100 groups of 5,000), then runs the issue's worst-case filters one
after another while three probes keep asking, each on its own connection: `GET /healthz`, `GET /Users/{id}`
and `POST /jit/v1/logins`. Reports each filter's time and status and the probes' p50/p99 during the filters.
Before the fix the filters ran on SQLite's event loop and every probe waited for them; after it the
215-term filter is refused by `filter_max_terms`, the longest allowed one (50 terms) runs in the thread
pool, and `members.display co` walks the users first.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import sqlalchemy as sa

from bench import data
from bench.context import Bench
from bench.jit_logins import _active, _body, _seed_accounts, _seed_group, server_config
from bench.load import Result, percentile
from bench.registry import workload
from scimjit.clock import SystemClock, to_micros
from scimjit.scim.schema import GROUP_URN
from scimjit.store.memberships import SCIM_SOURCE
from scimjit.store.tables import groups, memberships

USERS = 50_000
GROUPS, MEMBERS = 100, 5_000  # 500k membership rows
WORDS = ["adams", "baker", "clark", "davis", "evans", "frank", "green", "hall", "irwin", "jones", "king",
         "lewis", "moore", "nash", "olsen"]  # fmt: skip
FILTERS = {
    "215 x title co (4 KB)": ("/scim/v2/Users", " or ".join(f'title co "t{i:03d}"' for i in range(215))),
    "50 x title co": ("/scim/v2/Users", " or ".join(f'title co "t{i:03d}"' for i in range(50))),
    "15 x members.display co (431 chars)": (
        "/scim/v2/Groups",
        " or ".join(f'members.display co "{w}xyz"' for w in WORDS),
    ),
}
ROUNDS = 2
FILTER_TIMEOUT = 120.0  # seconds the bench waits for one filter's answer


def _seed_memberships(b: Bench) -> None:
    if b.dataset.users < USERS:
        b.seeder.users(b.dataset, USERS)
    now = to_micros(SystemClock().now())
    with b.target.db.write() as conn:
        if conn.execute(sa.select(groups.c.pk).where(groups.c.id == "x1-group-0")).scalar() is not None:
            return
    started = time.perf_counter()
    for g in range(GROUPS):
        with b.target.db.write() as conn:
            doc = {"schemas": [GROUP_URN], "displayName": f"x1 group {g}"}
            pk = conn.execute(
                groups.insert()
                .values(id=f"x1-group-{g}", display_name=doc["displayName"], display_name_ci=doc["displayName"],
                        data=doc, version=1, created=now, last_modified=now)
                .returning(groups.c.pk)
            ).scalar_one()  # fmt: skip
            first = g * 487 % USERS
            rows = [
                {"group_pk": pk, "member_id": data.user_id((first + k) % USERS), "source": SCIM_SOURCE,
                 "member_type": "User", "added_at": now, "expires_at": None}
                for k in range(MEMBERS)
            ]  # fmt: skip
            conn.execute(memberships.insert(), rows)
    b.seeder.finish()
    b.dataset.seconds[f"{GROUPS * MEMBERS} memberships"] = time.perf_counter() - started


def _timed(client: httpx.Client, path: str, text: str) -> str:
    t0 = time.perf_counter()
    try:
        r = client.get(path, params={"filter": text, "count": 10})
    except httpx.TimeoutException:
        return f"no answer within {FILTER_TIMEOUT:.0f}s"
    detail = r.json().get("scimType", "") if r.status_code >= 400 else ""
    return f"{time.perf_counter() - t0:.3f}s -> {r.status_code} {detail}".rstrip()


def _probe(name: str, base: str, send: Any, stop: threading.Event, out: dict[str, list[float]]) -> None:
    with httpx.Client(base_url=base, timeout=600) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = send(client)
            out[name].append((time.perf_counter() - t0) * 1000)
            if r.status_code >= 400:
                out.setdefault(f"{name} errors", []).append(r.status_code)


def _ms(values: list[float], q: float) -> float:
    return float(percentile(sorted(int(v * 1000) for v in values), q)) / 1000 if values else 0.0


@workload("C1", "worst-case filters while probes run", default=False, server_config=server_config)
def costly_filters(b: Bench) -> Result:
    _seed_memberships(b)
    members = _active(0, 2_000)
    _seed_group(b, members)
    _seed_accounts(b, members)
    logins = [_body(i) for i in members[:200]]
    auth = {"Authorization": f"Bearer {b.token}"}
    base = f"http://127.0.0.1:{b.port}"
    uid = data.user_id(4242)
    counter = iter(range(10**9))
    probes = {
        "/healthz": lambda c: c.get("/healthz"),
        "GET /Users/{id}": lambda c: c.get(f"/scim/v2/Users/{uid}", headers=auth),
        "POST /jit/v1/logins": lambda c: c.post(
            "/jit/v1/logins", json=logins[next(counter) % len(logins)], headers=auth
        ),
    }
    out: dict[str, list[float]] = {name: [] for name in probes}
    stop = threading.Event()
    threads = [threading.Thread(target=_probe, args=(n, base, s, stop, out)) for n, s in probes.items()]
    for t in threads:
        t.start()
    timings: list[str] = []
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=base, headers=auth, timeout=FILTER_TIMEOUT) as client:
            for label, (path, text) in FILTERS.items():
                for _ in range(ROUNDS):
                    timings.append(f"{label}: {_timed(client, path, text)}")
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        for t in threads:
            t.join()
    for line in timings:
        b.notes.append(f"C1 filter {line}")
    everything: list[float] = []
    for name in probes:
        values = out[name]
        everything += values
        errors = len(out.get(f"{name} errors", []))
        b.notes.append(
            f"C1 probe {name}: {len(values)} requests, p50 {_ms(values, 0.5):.1f} ms, "
            f"p99 {_ms(values, 0.99):.1f} ms, max {max(values, default=0):.1f} ms, {errors} errors"
        )
    return Result(
        requests=len(everything),
        seconds=seconds,
        p50_ms=_ms(everything, 0.5),
        p90_ms=_ms(everything, 0.9),
        p99_ms=_ms(everything, 0.99),
        max_ms=max(everything, default=0.0),
    )
