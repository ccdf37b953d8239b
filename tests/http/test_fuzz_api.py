"""Schemathesis against a real `scimjit serve` process, driven by the served /openapi.json: no 5xx, no crash,
no hang.

Every documented operation is exercised (examples, coverage, fuzzing and stateful phases; the stateful phase
follows the `links` from a created User or Group to its GET/PUT/PATCH/DELETE) with an admin token, with the
rate limit off so the fuzzer measures the server rather than the limiter. `/scim/v2/Me` is left out: it
answers 501 by design (scimjit authenticates applications, not end users).

Bounded for `make test` (FUZZ_API_EXAMPLES per operation, default 15: well under two minutes); a longer
campaign: `FUZZ_API_EXAMPLES=300 pytest tests/http/test_fuzz_api.py -s`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import free_port

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "15"))
SEED = os.environ.get("FUZZ_API_SEED", "20301")
BIN = Path(sys.executable).parent


def _cli(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


@pytest.fixture(scope="module")
def scimjit_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str, subprocess.Popen[bytes], Path]]:
    tmp = tmp_path_factory.mktemp("fuzz-api")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIMJIT_")}
    env.update(
        SCIMJIT_DATABASE_URL=f"sqlite:///{tmp}/fuzz.db",
        SCIMJIT_RATE_LIMIT_PER_SECOND="0",
        SCIMJIT_REQUEST_LOG="false",
    )
    scimjit = _cli("scimjit")
    subprocess.run([scimjit, "db", "upgrade"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [scimjit, "token", "create", "fuzzer", "--scope", "admin"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [scimjit, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"scimjit serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    yield url, token, proc, log
    proc.terminate()
    proc.wait(timeout=15)


def server_errors(log: Path) -> list[str]:
    """The unhandled errors the server logged (one JSON line each, with the last line of the trace)."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"level":"error"' in line:
            record = json.loads(line)
            found.append(f"{record['msg']}: {record.get('exc', '').strip().splitlines()[-1:]}")
    return found


def test_schemathesis_finds_no_server_error(scimjit_server, tmp_path):
    url, token, proc, log = scimjit_server
    report_path = tmp_path / "report.json"
    command = [
        _cli("st"), "run", f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error",
        "--max-examples", str(EXAMPLES),
        "--seed", SEED,
        "--exclude-path-regex", "/Me$",
        "--request-timeout", "10",  # a hang is a failure, not a stuck test
        "--generation-database", "none",
        "--no-color",
        "--report", "json", "--report-json-path", str(report_path),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache too
    assert report_path.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    cases = report["test_cases"]
    print(
        f"\nschemathesis {report['schemathesis_version']}: {report['operations']['tested']} operations, "
        f"{cases['generated']} cases generated, {cases['with_failures']} failing, seed {report['seed']}"
    )
    assert proc.poll() is None, "the server process died"
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200, "the server no longer answers"
    assert report["operations"]["tested"] == report["operations"]["selected"] > 30
    assert cases["errored"] == 0 and not report["errors"], run.stdout[-5000:]
    assert not report["failures"], "\n".join(server_errors(log)) + "\n" + run.stdout[-8000:]
