"""The outbox delivery loop: as an asyncio task inside `scimjit serve`, or as the `scimjit worker` process.

Each round claims due events and delivers them (delivery.py); an empty round sleeps `worker_poll_interval`.
Stopping (SIGTERM, SIGINT, app shutdown) lets the round in flight finish, so a clean stop never leaves a
claimed event behind; an unclean one (SIGKILL, power loss) leaves it for the lease to hand to another worker.
Any number of these loops may run against one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from scimjit.delivery.deliverer import worker_id
from scimjit.engine import JitEngine

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.worker")


async def run(
    engine: JitEngine, stop: asyncio.Event, *, worker: str | None = None, once: bool = False
) -> int:
    """Deliver until `stop` is set (or, with `once`, until nothing is due). Returns the number of attempts."""
    me = worker or worker_id()
    attempts = 0
    log.info("outbox worker %s started", me)
    while not stop.is_set():
        try:
            reports = await engine.deliverer.deliver_due(worker=me)
        except Exception:  # the database went away, say: keep the loop alive, try again after a pause
            log.exception("outbox worker round failed")
            reports = []
        attempts += len(reports)
        if reports:
            continue
        if once:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), engine.config.worker_poll_interval)
    log.info("outbox worker %s stopped after %d delivery attempt(s)", me, attempts)
    return attempts


def background_task(engine: JitEngine) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """For `create_app(background=[...])`: the in-process worker of `scimjit serve`; closes the engine's
    connectors when it stops."""

    async def task(stop: asyncio.Event) -> None:
        try:
            await run(engine, stop, worker=worker_id("serve"))
        finally:
            await engine.aclose()

    return task


def run_worker(engine: JitEngine, *, once: bool = False) -> int:
    """Blocking entry point of `scimjit worker`: runs until SIGTERM / SIGINT (or, with `once`, until idle)."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(sig, stop.set)
        try:
            return await run(engine, stop, once=once)
        finally:
            await engine.aclose()

    return asyncio.run(main())
