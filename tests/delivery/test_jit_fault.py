"""Fault injection: a real `scimjit worker` process is SIGKILLed in the middle of deliveries, twice, and
restarted. Every event still reaches the receiver, in order per user, and none is processed twice by a
receiver that honours the idempotency key (it may be *sent* twice: that is what the key is for)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from scimjit.clock import SystemClock
from scimjit.delivery import outbox
from scimjit.store.tables import outbox as outbox_table
from tests.jit_helpers import WebhookReceiver

pytestmark = pytest.mark.slow

USERS = 8
EVENTS_PER_USER = 5

CONFIG = """
[[applications]]
name = "wiki"
issuer = "http://127.0.0.1:9000"
audience = ["wiki"]
match = {{ claim = "preferred_username", attribute = "userName" }}

[applications.connector]
type = "webhook"
url = "{url}"
secret = "change-me"

[jit]
outbox_lease = "2s"
worker_poll_interval = "0.1s"
worker_batch_size = 4
"""


def start_worker(tmp_path: Path, db_url: str, config: Path, n: int) -> subprocess.Popen:
    env = {**os.environ, "SCIMJIT_DATABASE_URL": db_url, "SCIMJIT_CONFIG": str(config)}
    scimjit = Path(sys.executable).with_name("scimjit")
    log = (tmp_path / f"worker-{n}.log").open("w")
    return subprocess.Popen([str(scimjit), "worker", "--log-level", "info"], env=env, stdout=log, stderr=log)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(db, tmp_path):
    receiver = WebhookReceiver(delay=0.15)  # slow downstream: a kill lands mid-request
    with receiver.running():
        config = tmp_path / "scimjit.toml"
        config.write_text(CONFIG.format(url=receiver.url))
        now = SystemClock().now()  # the worker process runs on real time
        expected: dict[str, list[str]] = defaultdict(list)
        with db.write() as conn:
            for i in range(EVENTS_PER_USER):
                for u in range(USERS):
                    user = {"id": f"user-{u}", "userName": f"user{u}"}
                    event = outbox.new_event("account.update", "wiki", user, [], now, seq=i)
                    outbox.enqueue(conn, event, user_id=user["id"], now=now)
                    expected[user["id"]].append(event["id"])
        total = USERS * EVENTS_PER_USER

        for kill_after in (6, 18):
            proc = start_worker(tmp_path, db.url, config, kill_after)
            try:
                wait_for(lambda n=kill_after: len(receiver.requests) >= n)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            assert proc.returncode == -signal.SIGKILL

        final = start_worker(tmp_path, db.url, config, 0)
        try:
            wait_for(lambda: len(receiver.events) >= total)

            def all_done() -> bool:
                with db.read() as conn:
                    return (
                        conn.execute(
                            sa.select(sa.func.count()).where(outbox_table.c.status != "done")
                        ).scalar()
                        == 0
                    )

            wait_for(all_done)
        finally:
            final.send_signal(signal.SIGTERM)  # a clean stop finishes its round and exits 0
            final.wait(timeout=15)
        assert final.returncode == 0

    delivered = [e["id"] for e in receiver.events]
    assert len(delivered) == total and set(delivered) == {i for ids in expected.values() for i in ids}
    assert receiver.bad_signatures == 0
    # the kills interrupted deliveries in flight: those were sent again, and deduplicated by the receiver
    assert receiver.duplicates >= 1
    assert len(receiver.requests) == total + receiver.duplicates
    per_user: dict[str, list[str]] = defaultdict(list)
    for event in receiver.events:
        per_user[event["user"]["id"]].append(event["id"])
    assert per_user == expected  # in order, per user
