"""Single-use server state: a sign-in state is taken once (also by two racing threads), an expired one never;
a used-once value is claimed once until it expires. On both databases."""

from __future__ import annotations

import threading
from datetime import timedelta

from scimjit.clock import FrozenClock
from scimjit.store import signin_states, used_once
from scimjit.store.db import Database


def test_a_state_is_taken_once(db: Database, clock: FrozenClock) -> None:
    now = clock.now()
    with db.write() as conn:
        signin_states.put(conn, "s1", "app:chat", {"verifier": "v"}, now + timedelta(minutes=10))
    with db.write() as conn:
        assert signin_states.take(conn, "s1", "console", now) is None  # another flow's purpose
        assert signin_states.take(conn, "s1", "app:chat", now) == {"verifier": "v"}
    with db.write() as conn:
        assert signin_states.take(conn, "s1", "app:chat", now) is None


def test_an_expired_state_is_refused_and_purged(db: Database, clock: FrozenClock) -> None:
    now = clock.now()
    with db.write() as conn:
        signin_states.put(conn, "old", "console", {}, now + timedelta(minutes=10))
        signin_states.put(conn, "older", "console", {}, now + timedelta(minutes=1))
    later = now + timedelta(minutes=10)
    with db.write() as conn:
        assert signin_states.purge_expired(conn, later) == 2
    with db.write() as conn:
        assert signin_states.take(conn, "old", "console", later) is None


def test_two_racing_callbacks_get_one_state(db: Database, clock: FrozenClock) -> None:
    now = clock.now()
    with db.write() as conn:
        signin_states.put(conn, "race", "console", {"n": 1}, now + timedelta(minutes=10))
    barrier = threading.Barrier(2)
    results: list[object] = []

    def take() -> None:
        barrier.wait()
        with db.write() as conn:
            results.append(signin_states.take(conn, "race", "console", now))

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == ["None", "{'n': 1}"]


def test_a_value_is_claimed_once_until_it_expires(db: Database, clock: FrozenClock) -> None:
    now = clock.now()
    until = now + timedelta(minutes=5)
    with db.write() as conn:
        assert used_once.claim(conn, "id_token", "jti-1", until, now)
    with db.write() as conn:
        assert not used_once.claim(conn, "id_token", "jti-1", until, now)
        assert used_once.claim(conn, "saml", "jti-1", until, now)  # purposes are separate
    with db.write() as conn:  # past its expiry the value is refusable on other grounds; the row is reused
        assert used_once.claim(conn, "id_token", "jti-1", until + timedelta(minutes=5), until)
    with db.write() as conn:
        assert used_once.purge_expired(conn, until + timedelta(hours=1)) == 2


def test_is_claimed_holds_until_the_claim_ends(db: Database, clock: FrozenClock) -> None:
    """What refuses a console session after its sign-out: claimed for its purpose, until its end only."""
    now = clock.now()
    end = now + timedelta(hours=8)
    with db.read() as conn:
        assert not used_once.is_claimed(conn, "console_session", "sid-1", now)
    with db.write() as conn:
        assert used_once.claim(conn, "console_session", "sid-1", end, now)
    with db.read() as conn:
        assert used_once.is_claimed(conn, "console_session", "sid-1", now)
        assert used_once.is_claimed(conn, "console_session", "sid-1", end - timedelta(microseconds=1))
        assert not used_once.is_claimed(conn, "console-id-token", "sid-1", now)  # another purpose
        assert not used_once.is_claimed(conn, "console_session", "sid-2", now)
        assert not used_once.is_claimed(conn, "console_session", "sid-1", end)  # over: refused on its own
