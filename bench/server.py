"""The servers under test, as subprocesses on 127.0.0.1: start, wait for health, CPU time, stop.

Each server runs in a session of its own, so stopping it reaches the uvicorn supervisor and its workers and
nothing else. CPU time is read from /proc (Linux) for the whole process tree, so a row can say how much server
CPU one request cost, independently of how the two cores were shared with the load generator.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def uvicorn_argv(app: str, port: int, workers: int) -> list[str]:
    """What `scimjit serve` runs (scimjit/cli/server.py), for any other ASGI app: same loop, parser and limits."""
    return [
        sys.executable, "-m", "uvicorn", app,
        "--host", HOST, "--port", str(port), "--workers", str(workers),
        "--loop", "auto", "--http", "auto", "--no-access-log", "--backlog", "2048",
    ]  # fmt: skip


def scimjit_argv(port: int, workers: int) -> list[str]:
    exe = Path(sys.executable).with_name("scimjit")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "scimjit.cli"]
    return [*head, "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent not idle, all processes and cores together (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal; guest is inside user
    return busy / _TICKS


def wait_until_quiet(timeout: float, threshold: float = 0.15, window: float = 2.0) -> float:
    """Wait (up to `timeout` seconds) for a `window` in which the machine is busy less than `threshold` cores
    (the servers under test are idle between workloads, so that is everybody else). Returns the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        busy0 = machine_busy_seconds()
        time.sleep(window)
        cores = (machine_busy_seconds() - busy0) / window
        if cores < threshold or time.monotonic() >= deadline:
            return cores


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def pids(self) -> list[int]:
        """The supervisor and every descendant (workers, multiprocessing helpers)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            with contextlib.suppress(OSError):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return out

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (uvicorn workers), for profilers."""
        workers = []
        for pid in self.pids()[1:]:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"resource_tracker" not in cmdline:
                    workers.append(pid)
        return workers or [self.proc.pid]

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / _TICKS

    def memory_mb(self) -> tuple[float | None, float | None, float | None]:
        """The largest VmRSS, VmHWM (peak RSS) and RssAnon over the server's processes, in MB (/proc).
        RssAnon is the process's own memory (heap, SQLite's page caches); VmRSS adds the pages of the
        database file it has memory-mapped (SQLite `mmap_size`), which are the kernel's page cache, shared
        by every process that maps the file and dropped under memory pressure."""
        found: dict[str, list[float]] = {"VmRSS:": [], "VmHWM:": [], "RssAnon:": []}
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    key = line.split(None, 1)[0] if line else ""
                    if key in found:
                        found[key].append(int(line.split()[1]) / 1024)  # kB
        rss, hwm, anon = (max(v) if v else None for v in found.values())
        return rss, hwm, anon

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class ServerFailed(RuntimeError):
    pass


def start(
    name: str,
    argv: list[str],
    port: int,
    log_path: Path,
    env: dict[str, str] | None = None,
    health_path: str = "/healthz",
    timeout: float = 60.0,
) -> Server:
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    full_env.update(env or {})
    log = log_path.open("wb")
    proc = subprocess.Popen(
        argv, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    server = Server(name, proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
        if _healthy(port, health_path):
            _wait_for_workers(server, deadline)
            return server
        time.sleep(0.1)
    server.stop()
    raise ServerFailed(f"{name} did not answer {health_path} within {timeout:.0f}s:\n{server.log_tail()}")


def _healthy(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _wait_for_workers(server: Server, deadline: float) -> None:
    """One worker answering is not all of them: give the others until their CPU goes quiet (imports done)."""
    last = -1.0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server.cpu_seconds()
        if now - last < 0.05:
            return
        last = now
