"""The load generator: C keep-alive HTTP/1.1 connections over raw sockets, driven by asyncio protocols.

It runs in its own process (see `LoadGenerator`), so it competes with the server for CPU like any real
client on the same machine would, but never shares an interpreter with it. It is written to be cheap per
request, because on a 2-core machine every microsecond it spends is a microsecond the server does not get:

- requests are precomputed bytes (no formatting in the loop); each connection has one request in flight;
- responses are parsed minimally: status code, Content-Length, skip the body (nothing decoded);
- protocol callbacks, not stream coroutines (no task switch per request), on uvloop when it is installed.

A run has a warm-up (requests sent, not measured), then a measured window bounded by both time and count:
it ends when `duration` seconds have passed or the requests are used up (`unique`: each sent once, e.g. POSTs
of distinct userNames) or `max_requests` have been measured, whichever comes first.
Only 127.0.0.1 is ever a target.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, cast

LOCALHOST = "127.0.0.1"
STALL_SECONDS = 30.0  # no response for this long after the deadline: give up, count the rest as errors


@dataclass(frozen=True)
class LoadSpec:
    port: int
    requests: Sequence[bytes]
    connections: int = 32
    duration: float = 5.0
    warmup: float = 1.0
    unique: bool = False
    max_requests: int | None = None
    host: str = LOCALHOST
    # Requests go out in chains of this many consecutive ones: a connection that takes requests[i] also sends
    # requests[i+1..i+chain-1], in order, each after the previous one's response (e.g. an IdP's GET ?filter
    # then POST for one user). Only with `unique`; the requests' count must be a multiple of it.
    chain: int = 1


@dataclass
class Result:
    """What one workload measured. Custom (non-HTTP) workloads build one directly."""

    requests: int  # measured (after warm-up), errors included
    seconds: float  # the measured window
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0  # non-2xx responses and broken connections
    statuses: dict[int, int] = field(default_factory=dict)
    error_sample: str | None = None  # the first error response (status line and body start), to debug with
    warmup_requests: int = 0
    gen_cpu_seconds: float = 0.0  # the generator's own CPU time over the whole run (warm-up included)
    ended_by: str = "time"  # "time", "count" (unique requests used up / max_requests) or "stall"
    response_bytes: int = 0  # total size of the measured responses, headers included
    server_cpu_seconds: float | None = None  # the server's CPU time over the whole run (set by the caller)
    other_cpu_cores: float | None = None  # cores busy with other processes meanwhile (set by the caller)
    server_rss_mb: float | None = None  # the largest VmRSS over the server's processes at the end (caller)
    server_hwm_mb: float | None = None  # the largest peak RSS (VmHWM) over them at the end (caller)
    server_anon_mb: float | None = None  # the largest RssAnon (own memory, no mapped file pages) (caller)
    problems: list[str] = field(default_factory=list)  # checks the workload failed (the row FAILs)
    phases: list[Phase] = field(default_factory=list)  # parts measured on their own (a cycle's steps)
    extra: dict[str, Any] = field(default_factory=dict)  # workload-specific figures, for the JSON

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Phase:
    """One step of a multi-step workload (e.g. I1's users, groups, members), a sub-row under its row."""

    name: str
    title: str
    result: Result


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _Run:
    """Shared state of one run: hands out requests, records completions, knows when to stop."""

    def __init__(self, spec: LoadSpec, done: asyncio.Future[None]) -> None:
        self.spec = spec
        self.done = done
        self.requests = spec.requests
        self.n = len(spec.requests)
        self.next_index = 0
        self.chain = spec.chain
        if self.chain > 1 and (not spec.unique or self.n % self.chain):
            raise ValueError("chained requests must be unique and a whole number of chains")
        self.start_ns = time.perf_counter_ns()
        self.measure_from = self.start_ns + int(spec.warmup * 1e9)
        self.deadline = self.measure_from + int(spec.duration * 1e9)
        self.latencies: list[int] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.response_bytes = 0  # headers included, measured requests only
        self.error_sample: str | None = None
        self.warmup_requests = 0
        self.last_done_ns = self.measure_from
        self.open = 0
        self.ended_by = "time"
        self.max_measured = spec.max_requests
        self.reconnects: set[asyncio.Task[None]] = set()  # strong references while they run
        # One-shot requests must not all go in the warm-up: it ends after a tenth of them at the latest.
        self.warmup_count = self.n // 10 if spec.unique else None

    def next_request(self) -> bytes | None:
        if time.perf_counter_ns() >= self.deadline:
            return None
        if self.max_measured is not None and len(self.latencies) >= self.max_measured:
            self.ended_by = "count"
            return None
        i = self.next_index
        if i >= self.n:
            if self.spec.unique:
                self.ended_by = "count"
                return None
            i %= self.n
        self.next_index += self.chain
        if i == self.warmup_count:
            now = time.perf_counter_ns()
            if now < self.measure_from:
                self.deadline -= self.measure_from - now
                self.measure_from = self.last_done_ns = now
        return self.requests[i]

    def completed(self, sent_ns: int, status: int, size: int, response: bytes | None) -> None:
        now = time.perf_counter_ns()
        if sent_ns < self.measure_from:
            self.warmup_requests += 1
            return
        self.latencies.append(now - sent_ns)
        self.response_bytes += size
        self.last_done_ns = now
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not 200 <= status < 300:
            self.errors += 1
            if self.error_sample is None and response is not None:
                self.error_sample = response[:600].decode("utf-8", "replace")

    def broken(self, sent_ns: int, why: str) -> None:
        """A connection died with a request in flight."""
        if sent_ns >= self.measure_from:
            self.latencies.append(time.perf_counter_ns() - sent_ns)
            self.statuses[0] = self.statuses.get(0, 0) + 1
            self.errors += 1
            if self.error_sample is None:
                self.error_sample = why

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


class _Client(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1  # total bytes of the response being read (-1: headers not complete yet)
        self.status = 0
        self.sent_ns = 0
        self.in_flight = False
        self.finished = False
        self.server_closes = False  # the last response said `connection: close`
        self.chain_at = 0  # the index of the next request of this connection's current chain
        self.chain_left = 0  # how many of its requests are still to send

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.run.open += 1
        self.send()

    def send(self) -> None:
        run = self.run
        if self.chain_left:  # the rest of a chain is sent whatever the clock says: a user is never half done
            self.chain_left -= 1
            request: bytes | None = run.requests[self.chain_at]
            self.chain_at += 1
        else:
            request = run.next_request()
            if request is not None and run.chain > 1:
                self.chain_at = run.next_index - run.chain + 1
                self.chain_left = run.chain - 1
        assert self.transport is not None
        if request is None:
            self.finished = True
            self.transport.close()
            return
        self.in_flight = True
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.status = int(buf[9:12])
            head = buf[:end].lower()
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 17)
                length = int(head[i + 17 : j if j >= 0 else end])
            elif b"\r\ntransfer-encoding:" in head:
                self._fail("chunked responses are not supported by the load generator")
                return
            else:
                length = 0
            self.need = end + 4 + length
            self.server_closes = b"\r\nconnection: close" in head
        if len(buf) < self.need:
            self.buf = buf
            return
        size = self.need
        response = buf[:size] if not 200 <= self.status < 300 else None
        self.buf = buf[size:]
        self.need = -1
        self.in_flight = False
        self.run.completed(self.sent_ns, self.status, size, response)
        if self.server_closes:  # nothing more on this connection: connection_lost opens another
            assert self.transport is not None
            self.transport.close()
            return
        self.send()

    def _fail(self, why: str) -> None:
        if self.in_flight:
            self.run.broken(self.sent_ns, why)
            self.in_flight = False
        self.finished = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.run.broken(self.sent_ns, f"connection lost: {exc or 'closed by the server'}")
            self.in_flight = False
        if not self.finished:  # the server closed a keep-alive connection: open another one
            self.run.open += 1  # keep the run open while reconnecting
            task = asyncio.get_running_loop().create_task(_reconnect(self.run))
            self.run.reconnects.add(task)
            task.add_done_callback(self.run.reconnects.discard)
        self.run.closed()


async def _reconnect(run: _Run) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.create_connection(lambda: _Client(run), run.spec.host, run.spec.port)
    except OSError as exc:
        run.broken(time.perf_counter_ns(), f"reconnect failed: {exc}")
    finally:
        run.closed()


async def drive(spec: LoadSpec) -> Result:
    if spec.host != LOCALHOST:
        raise ValueError("the load generator only targets 127.0.0.1")
    if not spec.requests:
        raise ValueError("no requests to send")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    cpu0 = _cpu_seconds()
    run = _Run(spec, done)
    run.open += 1  # held while connecting, so an early finisher cannot end the run
    results = await asyncio.gather(
        *(
            loop.create_connection(lambda: _Client(run), spec.host, spec.port)
            for _ in range(spec.connections)
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if len(failures) == len(results):
        raise ConnectionError(f"could not connect to {spec.host}:{spec.port}: {failures[0]}")
    run.closed()
    limit = spec.warmup + spec.duration + STALL_SECONDS
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(done), timeout=limit)
    if not done.done():
        run.ended_by = "stall"
        for transport in [r[0] for r in results if not isinstance(r, BaseException)]:
            transport.abort()
    latencies = sorted(run.latencies)
    seconds = max(run.last_done_ns - run.measure_from, 1) / 1e9

    def ms(q: float) -> float:
        return percentile(latencies, q) / 1e6

    return Result(
        requests=len(latencies),
        seconds=seconds,
        p50_ms=ms(0.50),
        p90_ms=ms(0.90),
        p99_ms=ms(0.99),
        max_ms=latencies[-1] / 1e6 if latencies else 0.0,
        errors=run.errors,
        response_bytes=run.response_bytes,
        statuses=run.statuses,
        error_sample=run.error_sample,
        warmup_requests=run.warmup_requests,
        gen_cpu_seconds=_cpu_seconds() - cpu0,
        ended_by=run.ended_by,
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(spec: LoadSpec) -> Result:
    """Drive one workload to completion (in the calling process); uvloop when available."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(drive(spec))


class LoadGenerator:
    """The second process: one long-lived child (spawned, so it inherits nothing) that runs each workload."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))
        self._pool.submit(int).result()  # start it now, not inside the first measurement

    def run(self, spec: LoadSpec) -> Result:
        return self._pool.submit(run, spec).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
