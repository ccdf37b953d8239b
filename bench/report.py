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
    ("target", 6, ">"),
    ("result", 6, "<"),
    ("resp B", 6, ">"),
    ("srv µs/req", 10, ">"),
    ("gen µs/req", 10, ">"),
    ("other", 5, ">"),
]


@dataclass
class Row:
    name: str
    title: str
    target_rps: float | None
    result: Result | None
    failure: str | None = None  # the workload could not run (server error, exception)

    @property
    def verdict(self) -> str:
        if self.result is None:
            return "ERROR"
        if self.result.errors or self.result.requests == 0:
            return "FAIL"
        if self.target_rps is None:
            return "-"
        return "PASS" if self.result.rps >= self.target_rps else "FAIL"

    def cells(self) -> list[str]:
        r = self.result
        target = f"{self.target_rps:,.0f}" if self.target_rps else "-"
        if r is None:
            return [self.name, self.title, "-", "-", "-", "-", "-", target, self.verdict, "-", "-", "-", "-"]
        total = r.requests + r.warmup_requests
        srv = (
            f"{r.server_cpu_seconds / total * 1e6:,.0f}"
            if r.server_cpu_seconds is not None and total
            else "-"
        )
        gen = f"{r.gen_cpu_seconds / total * 1e6:,.1f}" if total else "-"
        other = f"{r.other_cpu_cores:.2f}" if r.other_cpu_cores is not None else "-"
        return [
            self.name, self.title, f"{r.requests:,}", f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
            f"{r.errors:,}", target, self.verdict, f"{r.response_bytes // max(r.requests, 1):,}", srv, gen, other,
        ]  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workload": self.name,
            "title": self.title,
            "target_rps": self.target_rps,
            "verdict": self.verdict,
        }
        if self.result is not None:
            out.update(dataclasses.asdict(self.result), rps=round(self.result.rps, 1))
            out["statuses"] = {str(k): v for k, v in self.result.statuses.items()}
        if self.failure:
            out["failure"] = self.failure
        return out


LEGEND = (
    "  resp B: mean response size (headers included); srv / gen µs/req: CPU the server / the load generator\n"
    "  spent per request (warm-up included); other: cores busy with other processes during the row. On a\n"
    "  2-core machine a row with other > 0.2 was measured on a shared machine: rerun it when it is quiet."
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
        if r.error_sample:
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
            text += f"\n        statuses {statuses}; first error: {r.error_sample[:300]!r}"
        if r.ended_by != "time":
            text += f"\n        ended by {r.ended_by} after {r.seconds:.1f}s (prepared requests used up)"
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
