"""Prometheus metrics: every metric scimjit exports is defined here, so there is one list to read.

Counters and histograms live in prometheus-client's default registry and are updated where things happen:
the HTTP middleware (requests), the login hook (logins), the outbox worker (deliveries, connector calls,
dead letters), the sweeper (expirations) and the reconcile pass (repairs). Import the metric and call it, e.g.
`LOGINS.labels(application="wiki", outcome="refused").inc()`.

Queue state (outbox depth, age of the oldest pending event, dead letters waiting) is not a counter any one
process can keep: it is read from the database at scrape time by `OutboxCollector` (two indexed aggregate
queries), so it is right whichever process serves the scrape and however many workers run.

With several server processes (`scimjit serve --workers N`) each process has its own counters; when
`PROMETHEUS_MULTIPROC_DIR` is set (serve sets it for N > 1) prometheus-client writes them to files there and
`/metrics` merges all processes' files, so one scrape sees the whole server. See docs/operations.md.
"""

from __future__ import annotations

import atexit
import os
import shutil
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()  # `*_created` series double the output and no dashboard of ours reads them

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# ---------------------------------------------------------------- HTTP (scimjit.http.middleware)
HTTP_REQUESTS = Counter(
    "scimjit_http_requests",
    "HTTP requests served, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "scimjit_http_request_duration_seconds",
    "Time from request start to the last response byte, by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMITED = Counter("scimjit_rate_limited", "Requests refused with 429 by the per-token rate limit")

# ---------------------------------------------------------------- SCIM writes (scimjit.store.resources)
SCIM_IGNORED = Counter(
    "scimjit_scim_ignored_attributes",
    "Unknown attribute names and schema URNs that committed SCIM writes ignored, by resource type "
    "(which names: the write's audit record, `details.ignored`)",
    ["resource_type"],
)

# ---------------------------------------------------------------- JIT engine
LOGINS = Counter(
    "scimjit_logins",
    "Login decisions by application and outcome (allowed, refused, error)",
    ["application", "outcome"],
)
DELIVERIES = Counter(
    "scimjit_outbox_deliveries",
    "Outbox delivery attempts by application and outcome (done, retry, dead)",
    ["application", "outcome"],
)
DEAD_LETTERED = Counter(
    "scimjit_outbox_dead_lettered",
    "Events moved to the dead-letter state (permanent error or attempts exhausted)",
    ["application"],
)
EXPIRATIONS = Counter(
    "scimjit_expirations",
    "Time-bound access that ran out, by kind (membership, grant, request)",
    ["kind"],
)
IDLE_RECLAIMED = Counter(
    "scimjit_idle_accounts_reclaimed",
    "Accounts disabled or deleted because nobody logged in for the application's idle_after, by application "
    "and action (disable, delete)",
    ["application", "action"],
)
RECONCILE_REPAIRS = Counter(
    "scimjit_reconcile_repairs",
    "Events the reconcile pass queued to repair drift, by application, source (scim: the directory and grants;"
    " downstream: the connector's report) and kind (the event type)",
    ["application", "source", "kind"],
)
CONNECTOR_LATENCY = Histogram(
    "scimjit_connector_call_duration_seconds",
    "Duration of connector calls to downstream applications",
    ["application", "operation"],
    buckets=LATENCY_BUCKETS,
)
CONNECTOR_ERRORS = Counter(
    "scimjit_connector_errors",
    "Failed connector calls by application, operation and kind (transient, permanent)",
    ["application", "operation", "kind"],
)


class OutboxCollector(Collector):
    """Outbox depth, age and dead letters, read from the database when scraped.

    `db` is a `scimjit.store.db.Database` and `now_micros` a callable giving the injected clock's epoch
    microseconds (kept as callables so this module does not import the store).
    """

    def __init__(self, db: Any, now_micros: Any) -> None:
        self.db = db
        self.now_micros = now_micros

    def describe(self) -> list[Any]:
        return []  # dynamic: never registered in the default registry, so no name clashes to check

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from scimjit.store.admin import outbox_stats  # the store layer answers the SQL

        try:
            stats = outbox_stats(self.db)
        except Exception:  # a scrape must not fail because the database is down; /readyz says that
            return
        depth = GaugeMetricFamily("scimjit_outbox_depth", "Outbox events by status", labels=["status"])
        for status in ("pending", "dead"):
            depth.add_metric([status], stats.counts.get(status, 0))
        yield depth
        age = GaugeMetricFamily(
            "scimjit_outbox_oldest_pending_age_seconds",
            "Age of the oldest event still waiting for delivery (0 when none)",
        )
        oldest = stats.oldest_pending_micros
        age.add_metric([], max(0.0, (self.now_micros() - oldest) / 1e6) if oldest is not None else 0.0)
        yield age
        yield GaugeMetricFamily(
            "scimjit_outbox_dead_letters",
            "Dead events waiting for `scimjit outbox retry` (or to be dropped)",
            value=stats.counts.get("dead", 0),
        )


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def prepare_multiprocess(workers: int) -> str | None:
    """Before starting N > 1 server processes: make sure they share a metrics directory, and empty it.

    Must run before the worker processes import prometheus-client (it reads the variable at import).
    Returns the directory in use, or None in single-process mode.
    """
    import tempfile
    from pathlib import Path

    directory = multiprocess_dir()
    if directory is None and workers <= 1:
        return None
    if directory is None:
        directory = tempfile.mkdtemp(prefix="scimjit-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        atexit.register(shutil.rmtree, directory, ignore_errors=True)  # ours: gone when serve exits
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # files of a previous run would be added to this run's counters
        stale.unlink()
    return directory


def exposition(extra: list[Collector]) -> bytes:
    """The `/metrics` body: this process's (or all processes') metrics, plus `extra` collectors."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


class _Forward(Collector):
    """Exposes another registry's metrics through a per-scrape registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        return self.source.collect()
