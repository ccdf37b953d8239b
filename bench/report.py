"""The results: one table row per workload as it finishes, the summary, and bench/results/<timestamp>.json."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from bench.load import Result

RESULTS_DIR = Path(__file__).resolve().parent / "results"

COLUMNS = [
    ("workload", 5, "<"),
    ("what", 42, "<"),
    ("requests", 8, ">"),
    ("rps", 8, ">"),
    ("p50 ms", 7, ">"),
    ("p99 ms", 7, ">"),
    ("errors", 6, ">"),
    ("target", 10, ">"),
    ("result", 6, "<"),
    ("resp B", 6, ">"),
    ("srv µs/req", 10, ">"),
    ("gen µs/req", 10, ">"),
    ("other", 5, ">"),
    ("rss MB", 6, ">"),
    ("anon MB", 7, ">"),
]


@dataclass
class Row:
    name: str
    title: str
    target_rps: float | None
    result: Result | None
    failure: str | None = None  # the workload could not run (server error, exception)
    target_share: float | None = None  # of the hello-world ceiling (issue 13); wins over target_rps
    hello_rps: float | None = None  # the hello-world ceiling of the same run

    @property
    def target(self) -> float | None:
        """The rps the row must reach: share x HELLO rps of this run, else the absolute target."""
        if self.target_share and self.hello_rps:
            return self.target_share * self.hello_rps
        return self.target_rps

    @property
    def verdict(self) -> str:
        if self.result is None:
            return "ERROR"
        if self.result.errors or self.result.requests == 0 or self.result.problems:
            return "FAIL"
        target = self.target
        if target is None:
            return "-"
        return "PASS" if self.result.rps >= target else "FAIL"

    def why(self) -> str | None:
        """Why the row failed, in a few words (None when it did not)."""
        r = self.result
        if r is None:
            return f"could not run: {(self.failure or '').splitlines()[-1] if self.failure else '?'}"
        reasons = []
        if r.requests == 0:
            reasons.append("no request measured")
        elif r.errors:
            statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(r.statuses.items()) if not 200 <= k < 300)
            if r.errors >= r.requests:
                reasons.append(
                    f"EVERY response was an error ({statuses}): its rps and latencies are meaningless"
                )
            else:
                reasons.append(f"{r.errors:,} of {r.requests:,} responses were errors ({statuses})")
        reasons += r.problems
        target = self.target
        if not reasons and target is not None and r.rps < target:
            share = f" = {self.target_share:.2f} x HELLO" if self.target_share and self.hello_rps else ""
            reasons.append(f"{r.rps:,.0f} rps, below the target {target:,.0f}{share}")
        return "; ".join(reasons) or None

    def target_cell(self) -> str:
        target = self.target
        if target is None:
            return "-"
        if self.target_share and self.hello_rps:
            return f"{self.target_share:.0%} {target:,.0f}"
        return f"{target:,.0f}"

    def cells(self) -> list[str]:
        if self.result is None:
            dashes = ["-"] * (len(COLUMNS) - 4)
            return [self.name, self.title, *dashes[:5], self.target_cell(), self.verdict, *dashes[5:]]
        return _cells(self.name, self.title, self.result, self.target_cell(), self.verdict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workload": self.name,
            "title": self.title,
            "target_rps": self.target,
            "target_share": self.target_share,
            "hello_rps": round(self.hello_rps, 1) if self.hello_rps else None,
            "verdict": self.verdict,
        }
        if self.result is not None:
            out.update(dataclasses.asdict(self.result), rps=round(self.result.rps, 1))
            out["statuses"] = {str(k): v for k, v in self.result.statuses.items()}
            for phase, data in zip(self.result.phases, out["phases"], strict=True):
                data["result"]["rps"] = round(phase.result.rps, 1)
                data["result"]["statuses"] = {str(k): v for k, v in phase.result.statuses.items()}
        if self.failure:
            out["failure"] = self.failure
        return out


def _cells(name: str, title: str, r: Result, target: str, verdict: str) -> list[str]:
    total = r.requests + r.warmup_requests
    srv = f"{r.server_cpu_seconds / total * 1e6:,.0f}" if r.server_cpu_seconds is not None and total else "-"
    gen = f"{r.gen_cpu_seconds / total * 1e6:,.1f}" if total else "-"
    other = f"{r.other_cpu_cores:.2f}" if r.other_cpu_cores is not None else "-"
    rss = f"{r.server_rss_mb:,.0f}" if r.server_rss_mb is not None else "-"
    anon = f"{r.server_anon_mb:,.0f}" if r.server_anon_mb is not None else "-"
    # A row made of phases has no percentiles of its own (each phase has its own, in its sub-row).
    p50, p99 = ("-", "-") if r.phases else (f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}")
    return [
        name, title, f"{r.requests:,}", f"{r.rps:,.0f}", p50, p99, f"{r.errors:,}", target, verdict,
        f"{r.response_bytes // max(r.requests, 1):,}", srv, gen, other, rss, anon,
    ]  # fmt: skip


LEGEND = (
    '  target: the rps a row must reach; "25% 5,000": a quarter of the hello-world ceiling (HELLO) of this\n'
    "  run (issue 13). resp B: mean response size (headers included); srv / gen µs/req: CPU the server / the\n"
    "  load generator spent per request (warm-up included); other: cores busy with other processes during the\n"
    "  row; rss MB: the largest resident set over the server's processes at the row's end; anon MB: the\n"
    "  same without the database file's memory-mapped pages (the process's own memory). On a 2-core\n"
    "  machine a row with other > 0.2 was measured on a shared machine: rerun it when it is quiet."
)
NOISY = 0.2


def _line(cells: list[str]) -> str:
    return "  ".join(f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, COLUMNS, strict=True))


def header() -> str:
    head = _line([name for name, _, _ in COLUMNS])
    return f"{head}\n{'-' * len(head)}"


def line(row: Row) -> str:
    text = _line(row.cells())
    r = row.result
    if row.failure:
        text += f"\n        {row.failure}"
    elif r is not None:
        if r.extra.get("headline"):
            text += f"\n        {r.extra['headline']}"
        if r.errors and r.errors >= r.requests:
            text += f"\n        FAIL: every one of the {r.requests:,} responses was an error"
        if r.error_sample:
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
            text += f"\n        statuses {statuses}; first error: {r.error_sample[:300]!r}"
        for problem in r.problems:
            text += f"\n        FAIL: {problem}"
        if r.ended_by != "time" and not r.phases:
            text += f"\n        ended by {r.ended_by} after {r.seconds:.1f}s (prepared requests used up)"
        for phase in r.phases:
            p = phase.result
            verdict = "FAIL" if p.errors or p.requests == 0 else ""
            text += "\n" + _line(_cells(phase.name, phase.title, p, "", verdict))
            if p.error_sample:
                statuses = ", ".join(f"{k}: {v}" for k, v in sorted(p.statuses.items()))
                text += f"\n        statuses {statuses}; first error: {p.error_sample[:300]!r}"
            if p.ended_by == "stall":
                text += "\n        ended by stall: the server stopped answering"
    return text


def same_cost(rows: list[Row], a: str, b: str, ratio: float) -> str | None:
    """'W6a vs W6b: ...' when both ran: the slower's rps over the faster's must be at least `ratio`."""
    found = {r.name: r.result for r in rows if r.result is not None and r.result.requests}
    if a not in found or b not in found:
        return None
    ra, rb = found[a], found[b]
    got = min(ra.rps, rb.rps) / max(ra.rps, rb.rps)
    p50 = min(ra.p50_ms, rb.p50_ms) / max(ra.p50_ms, rb.p50_ms) if max(ra.p50_ms, rb.p50_ms) else 1.0
    verdict = "PASS" if got >= ratio else "FAIL"
    return (
        f"{a} vs {b} (same cost whatever the group size): rps {ra.rps:,.0f} vs {rb.rps:,.0f}, "
        f"ratio {got:.2f} (need >= {ratio:.2f}), p50 ratio {p50:.2f}: {verdict}"
    )


def machine(database: str, db_version: str) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {
        p: _version(p) for p in ("uvicorn", "starlette", "sqlalchemy", "uvloop", "httptools", "psycopg")
    }
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_gb, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "database": database,
        "database_version": db_version,
        "sqlite_library": sqlite3.sqlite_version,
        "packages": versions,
        "git": _git(),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True)
    except OSError:
        return "unknown"
    changed = len([ln for ln in dirty.stdout.splitlines() if ln.strip()])
    return head.stdout.strip() + (f" (+{changed} uncommitted files)" if changed else "")


def write_json(payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path
