"""The webhook connector against a real receiver: signatures, headers, and how responses are classified."""

from __future__ import annotations

import asyncio
import time

import pytest

from scimjit.clock import FrozenClock
from scimjit.delivery.connectors.base import Call, Outcome, PermanentError, TransientError
from scimjit.delivery.connectors.webhook import WebhookConnector, sign, verify_signature
from scimjit.delivery.outbox import new_event
from tests.jit_helpers import WebhookReceiver


@pytest.fixture
def hook():
    with WebhookReceiver().running() as receiver:
        yield receiver


def call(type_: str = "account.create", **extra) -> Call:
    event = new_event(
        type_, "wiki", {"id": "u1", "userName": "alice"}, ["admin"], FrozenClock().now(), **extra
    )
    return Call(event=event)


def connector(url: str, **settings) -> WebhookConnector:
    return WebhookConnector({"url": url, "secret": "change-me", **settings}, "wiki")


def run(coro):
    return asyncio.run(coro)


def test_events_are_signed_and_carry_the_idempotency_key(hook):
    c = call(mode="create")
    result = run(connector(hook.url).create_account(c))
    assert result.outcome == Outcome.CREATED and result.downstream_id == "wiki-alice"
    (request,) = hook.requests
    assert request["signed"] and request["key"] == c.idempotency_key
    event = request["event"]
    assert set(event) >= {"id", "type", "application", "user", "roles", "occurredAt"}
    assert event["type"] == "account.create" and event["user"]["userName"] == "alice"


def test_a_receiver_with_another_secret_rejects_it_and_that_is_permanent(hook):
    hook.secret = "other"
    with pytest.raises(PermanentError, match="401"):
        run(connector(hook.url).create_account(call()))
    assert hook.bad_signatures == 1


def test_verify_signature_refuses_tampering_and_replays():
    body = b'{"id": "1"}'
    now = time.time()
    ts = str(int(now))
    good = sign("s3cret", ts, body)
    assert verify_signature("s3cret", body, good, ts, now=now)
    assert not verify_signature("s3cret", body + b" ", good, ts, now=now)
    assert not verify_signature("wrong", body, good, ts, now=now)
    assert not verify_signature("s3cret", body, good, str(int(now) - 1), now=now)  # timestamp is signed
    assert not verify_signature("s3cret", body, good, ts, now=now + 301)  # too old: a replay
    assert not verify_signature("s3cret", body, None, ts, now=now)
    assert not verify_signature("s3cret", body, good, "soon", now=now)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses(hook, status):
    hook.fail_next(status)
    with pytest.raises(TransientError):
        run(connector(hook.url).update_account(call("account.update")))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_permanent_statuses(hook, status):
    hook.fail_next(status)
    with pytest.raises(PermanentError):
        run(connector(hook.url).update_account(call("account.update")))


def test_link_404_means_no_account_and_2xx_bodies_are_read(hook):
    hook.fail_next(404)
    assert run(connector(hook.url).create_account(call(mode="link"))).outcome == Outcome.NOT_FOUND
    hook.fail_next((200, {"downstreamId": 42, "result": "already_exists"}))
    result = run(connector(hook.url).create_account(call(mode="create")))
    assert (result.outcome, result.downstream_id) == (Outcome.ALREADY_EXISTS, "42")
    hook.fail_next((202, {}))
    assert run(connector(hook.url).disable_account(call("account.disable"))).outcome == Outcome.IN_PROGRESS
    assert run(connector(hook.url).revoke(call("role.revoke", role="admin"))).outcome == Outcome.REVOKED


def test_timeouts_and_refused_connections_are_transient(hook):
    hook.delay = 0.5
    with pytest.raises(TransientError, match="timed out"):
        run(connector(hook.url, timeout=0.1).update_account(call("account.update")))
    with pytest.raises(TransientError):
        run(connector("http://127.0.0.1:1/events").update_account(call("account.update")))


def test_the_secret_never_shows():
    c = connector("http://127.0.0.1:1/events")
    assert "change-me" not in repr(c) and "change-me" not in str(vars(c).get("url"))


@pytest.mark.parametrize("signature", ["sha256=é" + "0" * 63, "sha256=\udcff", "ünïcode"])
def test_verify_signature_answers_false_to_a_non_ascii_signature_header_instead_of_raising(signature):
    body, now = b'{"id": "1"}', time.time()
    assert verify_signature("s3cret", body, signature, str(int(now)), now=now) is False


@pytest.mark.parametrize("timestamp", ["\u0661\u0667" + "\u0660" * 8, "²", "12 ", "-1"])
def test_verify_signature_answers_false_to_a_timestamp_that_is_not_ascii_digits(timestamp):
    body = b'{"id": "1"}'
    assert verify_signature("s3cret", body, sign("s3cret", timestamp, body), timestamp, now=0) is False
