"""`Bench`: what a workload function gets — the running server, the seeded data, and helpers to use them."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import server as servers
from bench.load import LoadGenerator, LoadSpec, Result
from bench.profile import Profiler, summary
from bench.report import RESULTS_DIR
from bench.seed import Dataset, Seeder, Target

MIN_RPS = 20  # Bench.all_of gives up below this average rate (a stalled server)
LATE_HEADROOM = 20_000  # non-members seeded next to a group that did not fit in --users (users to add in W6x)


def measure(
    loadgen: LoadGenerator, spec: LoadSpec, server: servers.Server, quiet_wait: float = 0.0
) -> Result:
    """Run one load, and account for the CPU: the server's, the generator's, and everyone else's (on a shared
    machine, other processes' CPU during the run is what makes two runs disagree; PostgreSQL's own
    processes count as "other" too)."""
    if quiet_wait > 0:
        servers.wait_until_quiet(quiet_wait)
    busy0, cpu0, t0 = servers.machine_busy_seconds(), server.cpu_seconds(), time.perf_counter()
    result = loadgen.run(spec)
    wall = time.perf_counter() - t0
    result.server_cpu_seconds = server.cpu_seconds() - cpu0
    others = servers.machine_busy_seconds() - busy0 - result.server_cpu_seconds - result.gen_cpu_seconds
    result.other_cpu_cores = max(0.0, others / wall)
    return result


@dataclass
class Options:
    users: int = 10_000
    duration: float = 5.0
    warmup: float = 1.0
    connections: int = 32
    workers: int = 2
    max_requests: int | None = None
    quiet_wait: float = 0.0  # before each workload, wait up to this long for other processes to go quiet
    cycle_users: int = 100_000  # users I1 provisions in its initial IdP cycle


@dataclass
class Bench:
    options: Options
    target: Target
    dataset: Dataset
    seeder: Seeder
    loadgen: LoadGenerator
    tmp: Path
    tag: str  # unique per run, for names that must not collide (POSTed userNames)
    token: str = ""
    server: servers.Server | None = None
    notes: list[str] = field(default_factory=list)  # what a reader of the results must know
    profile: frozenset[str] = frozenset()  # workloads to run under py-spy (`--profile`)
    profiles: dict[str, str] = field(default_factory=dict)  # workload -> where its time went
    current: str = ""  # the workload running now
    server_env: dict[str, str] = field(default_factory=dict)  # settings the server runs with
    _sink: servers.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None, "the server is not running yet"
        return self.server.port

    @property
    def unique_budget(self) -> int:
        """How many one-shot requests (POSTs, adds) a write workload prepares: enough for 5,000 rps."""
        return int((self.options.warmup + self.options.duration) * 5_000)

    def request(self, method: str, path: str, body: Any = None) -> bytes:
        """The bytes of one authenticated SCIM request (HTTP/1.1, keep-alive)."""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nAccept: application/scim+json\r\n"
        )
        if body is None:
            return (head + "\r\n").encode()
        payload = orjson.dumps(body)
        head += f"Content-Type: application/scim+json\r\nContent-Length: {len(payload)}\r\n\r\n"
        return head.encode() + payload

    def http(self, requests: Sequence[bytes], *, unique: bool = False) -> Result:
        """Drive `requests` at the server from the load-generator process; `unique`: send each at most once."""
        spec = LoadSpec(
            port=self.port,
            requests=list(requests),
            connections=self.options.connections,
            duration=self.options.duration,
            warmup=self.options.warmup,
            unique=unique,
            max_requests=self.options.max_requests,
        )
        return self._drive(spec, self.current, self.options.quiet_wait)

    def all_of(self, requests: Sequence[bytes], *, chain: int = 1, label: str = "") -> Result:
        """Send every one of `requests` exactly once and measure all of them (no warm-up, no time window, no
        --max-requests): a fixed amount of work such as an IdP's provisioning cycle. `chain`: see
        `LoadSpec.chain`. Gives up when the server answers fewer than MIN_RPS requests/s on average."""
        spec = LoadSpec(
            port=self.port,
            requests=list(requests),
            connections=self.options.connections,
            duration=60 + len(requests) / MIN_RPS,
            warmup=0.0,
            unique=True,
            chain=chain,
        )
        return self._drive(spec, f"{self.current} {label}".strip(), 0.0)

    def _drive(self, spec: LoadSpec, name: str, quiet_wait: float) -> Result:
        assert self.server is not None
        if self.current not in self.profile:
            return measure(self.loadgen, spec, self.server, quiet_wait)
        if quiet_wait > 0:
            servers.wait_until_quiet(quiet_wait)
        profiler = Profiler(
            self.server.worker_pids(), RESULTS_DIR / "profiles", f"{self.tag}-{name.replace(' ', '-')}"
        )
        result = measure(self.loadgen, spec, self.server)
        total = result.requests + result.warmup_requests
        per_request = (result.server_cpu_seconds or 0) / total * 1e6 if total else None
        where = ", ".join(str(p.relative_to(RESULTS_DIR.parent.parent)) for p in profiler.paths)
        self.profiles[name] = f"{summary(profiler.stop(), per_request)}\n  stacks: {where}"
        return result

    def ensure_group(self, size: int) -> int:
        """The pk of the group with `size` members, seeding it (and the users it needs) if it is not there."""
        if size not in self.dataset.groups:
            if self.dataset.users < size + LATE_HEADROOM:
                before = self.dataset.users
                self.seeder.users(self.dataset, size + LATE_HEADROOM)
                self.notes.append(
                    f"the {size}-member group needed more users than --users: users {before}..."
                    f"{self.dataset.users - 1} were seeded before it, after the workloads that ran earlier"
                )
            self.seeder.group(self.dataset, size)
            self.seeder.finish()  # statistics current (PostgreSQL's ANALYZE), as after the first seeding
        return self.dataset.groups[size]

    def sink_port(self) -> int:
        """A local server answering 200 to anything (a webhook target for connector workloads)."""
        if self._sink is None:
            port = servers.free_port()
            argv = [sys.executable, "-m", "bench.trivial", "--port", str(port)]
            self._sink = servers.start("sink", argv, port, self.tmp / "sink.log", health_path="/")
        return self._sink.port

    def close(self) -> None:
        if self._sink is not None:
            self._sink.stop()
