"""Where workloads are registered: a `Workload` is a name, a target and a function that measures it.

To add one (logins/s, sweep throughput, ...), write a function in a module listed in `MODULES`:

    from bench.context import Bench
    from bench.load import Result
    from bench.registry import workload

    @workload("L1", "login, existing account", target_share=0.15)
    def login_existing(b: Bench) -> Result:
        return b.http([b.request("POST", "/jit/v1/...", body) for body in bodies])

An HTTP workload returns `b.http(requests)`; anything else (e.g. timing `scimjit sweep` over seeded rows) builds
a `Result` itself. A target is either `target_share`, a share of the hello-world ceiling measured in the same
run (issue 13: the row PASSes when rps >= share x HELLO rps), or an absolute `target_rps` for workloads that
have no share (X1); a share wins when both are given. `server_config` returns TOML appended to the server's config file (SCIMJIT_CONFIG), for
workloads that need applications or connectors configured; it is read before the server starts. `default=False`
keeps a workload out of a plain `make bench` (run it with `--only`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.context import Bench
    from bench.load import Result

# Modules whose @workload functions make up the benchmark, in run order.
MODULES = ("bench.workloads", "bench.jit_logins", "bench.expiry", "bench.cost", "bench.idp_cycle")


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    target_rps: float | None
    run: Callable[[Bench], Result]
    default: bool = True
    server_config: Callable[[Bench], str] | None = None
    target_share: float | None = None  # of the hello-world ceiling's rps in the same run

    def goal(self) -> str:
        if self.target_share:
            return f">= {self.target_share:.2f} x hello-world rps"
        return f"{self.target_rps:,.0f} rps" if self.target_rps else "no target"


WORKLOADS: list[Workload] = []


def workload(
    name: str,
    title: str,
    target_rps: float | None = None,
    *,
    target_share: float | None = None,
    default: bool = True,
    server_config: Callable[[Bench], str] | None = None,
) -> Callable[[Callable[[Bench], Result]], Callable[[Bench], Result]]:
    def register(fn: Callable[[Bench], Result]) -> Callable[[Bench], Result]:
        if any(w.name == name for w in WORKLOADS):
            raise ValueError(f"workload {name} is registered twice")
        WORKLOADS.append(Workload(name, title, target_rps, fn, default, server_config, target_share))
        return fn

    return register


def load_all() -> list[Workload]:
    for module in MODULES:
        importlib.import_module(module)
    return WORKLOADS


def select(names: str | None) -> list[Workload]:
    """`--only W1,W3` (case-insensitive), or every default workload. A name also selects its variants:
    `W6` is W6, W6a and W6b."""
    workloads = load_all()
    if not names:
        return [w for w in workloads if w.default]
    wanted = [n.strip().upper() for n in names.split(",") if n.strip()]

    def matches(w: Workload, n: str) -> bool:
        name = w.name.upper()
        return name == n or (name.startswith(n) and name[len(n) :].isalpha())

    unknown = [n for n in wanted if not any(matches(w, n) for w in workloads)]
    if unknown:
        known = ", ".join(w.name for w in workloads)
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}; known: {known}")
    return [w for w in workloads if any(matches(w, n) for n in wanted)]
