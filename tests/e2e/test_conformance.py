"""The public SCIM conformance tools, run in full against a real `scimjit serve` process (SQLite).

They run at the DEFAULT settings (rate limits included): real clients must pass as shipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import free_port

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conformance")
    env = {
        **os.environ,
        "SCIMJIT_DATABASE_URL": f"sqlite:///{tmp}/scimjit.db",
        "SCIMJIT_RUN_WORKER": "0",
        "SCIMJIT_RUN_SWEEPER": "0",
    }
    env.pop("SCIMJIT_CONFIG", None)
    subprocess.run([BIN / "scimjit", "db", "upgrade"], env=env, check=True, capture_output=True)
    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:  # a file, not a pipe: the server logs every request and must never block
        proc = subprocess.Popen(
            [BIN / "scimjit", "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    token = None
    deadline = time.monotonic() + 30
    while token is None and time.monotonic() < deadline:
        found = re.search(
            r"sjt_[A-Za-z0-9_-]+", log.read_text()
        )  # the first start prints the admin token once
        token = found.group() if found else None
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    assert token, "serve did not print an admin token on first start"
    yield f"{url}/scim/v2", token
    proc.terminate()
    proc.wait(timeout=10)


def test_scim2_tester_passes_in_full(running):
    url, token = running
    out = subprocess.run(
        [BIN / "scim2", "-u", url, "-h", f"Authorization: Bearer {token}", "test"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = re.findall(r"^(SUCCESS|ERROR|CRITICAL|WARNING)\b", out.stdout, re.M)
    print(f"scim2-tester at default settings: {results.count('SUCCESS')}/{len(results)} SUCCESS")
    assert out.returncode == 0, out.stdout[-3000:]
    assert results.count("SUCCESS") >= 100 and set(results) == {"SUCCESS"}, out.stdout[-3000:]


def test_scim_sanity_passes_in_full(running):
    url, token = running
    out = subprocess.run(
        [BIN / "scim-sanity", "probe", url, "--token", token, "--i-accept-side-effects"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = re.search(r"(\d+) passed, (\d+) failed", out.stdout)
    tally = re.search(r"\d+ passed[^\n]*", out.stdout)
    print(f"scim-sanity at default settings: {tally.group(0) if tally else 'no tally'}")
    assert summary is None or summary.group(2) == "0", out.stdout[-3000:]
    assert "All tests passed" in out.stdout, out.stdout[-3000:]
