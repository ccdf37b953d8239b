"""`--profile W1,W6`: py-spy samples the server's workers while those workloads run, and we say where the
time went, per request.

The collapsed stacks are kept in bench/results/ (open them in https://speedscope.app or flamegraph.pl).
The summary divides the server's measured CPU per request among the functions py-spy saw on CPU, so a line
reads "this function, including what it calls, costs N µs of every request".
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.server import REPO

RATE = 250  # samples per second per process: ~1% overhead, plenty of samples in a 5-second run
# Threads that py-spy counts as busy although they only wait (uvicorn's supervisor ping thread blocks in a
# pipe read that py-spy's idle heuristic misses): their samples are not request work.
NOT_WORK = ("Process.always_pong (",)
# Frames every request passes through (process start, event loop, routing and middleware wrappers): they
# would fill the top of the inclusive list with ~100% each and say nothing.
PLUMBING = re.compile(
    r"\((<string>|multiprocessing/|asyncio/|uvicorn/(supervisors|server|_compat|_subprocess|middleware)|"
    r"starlette/(routing|applications|_exception_handler|middleware/(errors|exceptions))\.?)"
)


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, pids: list[int], out_dir: Path, name: str) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = [out_dir / f"{name}-{pid}.collapsed" for pid in pids]
        self.procs = [
            subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE),
                    "--format",
                    "raw",
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for pid, path in zip(pids, self.paths, strict=True)
        ]

    def stop(self) -> Counter[str]:
        """Stop sampling; the stacks of every worker, merged ("frame;frame;... count" lines)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        stacks: Counter[str] = Counter()
        for proc, path in zip(self.procs, self.paths, strict=True):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            if not path.exists():
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"py-spy wrote nothing for {path.name}: {err.strip()[-500:]}")
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit() and not any(marker in stack for marker in NOT_WORK):
                    stacks[stack] += int(count)
        return stacks


_PREFIX = re.compile(r"^.*?/(?:site-packages|lib/python3\.\d+)/|^" + re.escape(str(REPO)) + "/")


def _short(frame: str) -> str:
    """`get (/…/site-packages/sqlalchemy/engine/base.py:52)` -> `get (sqlalchemy/engine/base.py)`: one entry
    per function, whatever line was running."""
    name, _, where = frame.partition(" (")
    path = _PREFIX.sub("", where.rstrip(")").rsplit(":", 1)[0])
    return f"{name} ({path})"


def summary(stacks: Counter[str], us_per_request: float | None, top: int = 25) -> str:
    total = sum(stacks.values())
    if not total:
        return "    (no samples)"
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [_short(f) for f in stack.split(";") if f]
        for frame in set(frames):
            if not PLUMBING.search(frame):
                inclusive[frame] += count
        if frames:
            own[frames[-1]] += count

    def fmt(counter: Counter[str]) -> list[str]:
        lines = []
        for frame, count in counter.most_common(top):
            share = count / total
            cost = f"{share * us_per_request:7.1f} µs" if us_per_request else ""
            lines.append(f"    {share:6.1%} {cost}  {frame}")
        return lines

    return "\n".join(
        [
            f"  {total} samples; inclusive (function and what it calls):",
            *fmt(inclusive),
            "  self time:",
            *fmt(own),
        ]
    )
