"""`scimjit serve` as a real process (the installed console script), for tests of what a user runs."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.live_server import free_port


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: this one's, with no stray SCIMJIT_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIMJIT_")}
    env.update(SCIMJIT_DATABASE_URL=database_url, **extra)
    return env


@contextmanager
def serve(
    scimjit: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 60, port: int | None = None
) -> Iterator[Served]:
    """Run `<scimjit> serve` on `port` (default: a free one) with `cwd` as working directory until the block
    ends; waits until it answers /healthz (or fails with its stderr when it exits first)."""
    port = port or free_port()
    out, err = cwd / f"serve-{port}.out", cwd / f"serve-{port}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [*scimjit, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"scimjit serve exited with {process.returncode}: {err.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"scimjit serve did not answer within {timeout}s: {err.read_text()}")
            time.sleep(0.05)  # waiting for another process to bind its port: nothing to inject a clock into
        yield Served(url, process, out, err)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
