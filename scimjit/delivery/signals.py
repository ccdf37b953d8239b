"""Shared Signals out: scimjit as an OpenID SSF 1.0 transmitter of Security Event Tokens (RFC 8417).

When access ends or changes, the code that writes the change (provisioning/deprovision.py) calls
`Signals.emit` in the same transaction. For every live stream that asked for that event type and for that
subject, one SET is written: a push stream gets one outbox row (`type` security.event, `application`
`ssf:<stream id>`, so the deliverer finds `SetPusher` under that name like any connector and retries it with
the outbox's backoff, leases and dead letters); a poll stream gets one `ssf_poll` row that its receiver fetches
and acknowledges (RFC 8936). The SET's claims, `jti` included, are fixed when the row is written: a retry, a
lease that ran out or a restarted worker sends the same `jti` again, never a new one. The claims are signed
(`Signer.sign_set`, scimjit's own keys, the JWKS at /.well-known/jwks.json) when they are sent or polled.

Emission costs nothing when there is no stream: the live streams are cached per process for `STREAMS_CACHE`
seconds (and dropped at once when this process changes one), so the hot path of a SCIM write without streams
is one dictionary look-up. Another process sees a new stream within that many seconds.

default_subjects is NONE: a stream receives events only for the subjects it added, by RFC 9493 subject
identifier (`email`, `opaque` with the SCIM id, or `iss_sub` with scimjit's issuer and the SCIM id).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa

from scimjit.clock import Clock, to_micros
from scimjit.delivery import outbox
from scimjit.delivery.connectors.base import (
    SECURITY_EVENT,
    Call,
    Outcome,
    PermanentError,
    Result,
    TransientError,
)
from scimjit.delivery.httpclient import LoopClient
from scimjit.delivery.notifiers import Notifier
from scimjit.delivery.signing import Signer
from scimjit.store import ssf
from scimjit.store.db import Database
from scimjit.store.ssf import Stream

log = logging.getLogger("scimjit.ssf")

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"
TOKEN_CLAIMS_CHANGE = CAEP + "token-claims-change"
CREDENTIAL_CHANGE = CAEP + "credential-change"
ACCOUNT_DISABLED = RISC + "account-disabled"
ACCOUNT_ENABLED = RISC + "account-enabled"
ACCOUNT_PURGED = RISC + "account-purged"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
EVENTS_SUPPORTED = (
    SESSION_REVOKED,
    TOKEN_CLAIMS_CHANGE,
    CREDENTIAL_CHANGE,
    ACCOUNT_DISABLED,
    ACCOUNT_ENABLED,
    ACCOUNT_PURGED,
    VERIFICATION,
)
PUSH_URN = "urn:ietf:rfc:8935"
POLL_URN = "urn:ietf:rfc:8936"
CHANNEL_PREFIX = "ssf:"  # the outbox `application` of a push stream's SETs: ssf:<stream id>
STREAMS_CACHE = 5.0  # seconds a process trusts its list of live streams
SUBJECT_FORMATS = ("email", "opaque", "iss_sub")


def channel(stream_id: str) -> str:
    return CHANNEL_PREFIX + stream_id


def subject_key(subject: Any, issuer: str) -> str:
    """The normalised key of an RFC 9493 subject identifier; ValueError for a format scimjit cannot match
    (so a receiver learns at once, rather than waiting for events that never come)."""
    if not isinstance(subject, Mapping):
        raise ValueError("a subject is an object with a `format` (RFC 9493)")
    fmt = subject.get("format")
    if fmt == "email" and isinstance(subject.get("email"), str) and "@" in subject["email"]:
        return "email:" + subject["email"].strip().lower()
    if fmt == "opaque" and isinstance(subject.get("id"), str) and subject["id"]:
        return "opaque:" + subject["id"]
    if fmt == "iss_sub" and isinstance(subject.get("sub"), str) and subject["sub"]:
        if subject.get("iss") != issuer:
            raise ValueError(f"an iss_sub subject names scimjit's issuer ({issuer!r}) and a SCIM user id")
        return "opaque:" + subject["sub"]  # the same user as the opaque form
    raise ValueError(f"supported subject formats: {', '.join(SUBJECT_FORMATS)} (with their members)")


def user_keys(user: Mapping[str, Any]) -> list[str]:
    """Every key a subscribed subject may have for this SCIM user (its id, its email addresses, and its
    userName when that is an address)."""
    keys = ["opaque:" + str(user["id"])]
    names = [e.get("value") for e in user.get("emails") or () if isinstance(e, Mapping)]
    names.append(user.get("userName"))
    keys.extend("email:" + n.strip().lower() for n in names if isinstance(n, str) and "@" in n)
    return list(dict.fromkeys(keys))


def events_delivered(stream: Stream) -> list[str]:
    return [e for e in stream.events_requested if e in EVENTS_SUPPORTED and e != VERIFICATION]


class Signals:
    """Writes SETs for the streams that want them (`emit`, `verify`), and answers polls (`poll`)."""

    def __init__(self, db: Database, clock: Clock, issuer: str, signer: Signer) -> None:
        self.db = db
        self.clock = clock
        self.issuer = issuer.rstrip("/")
        self.signer = signer
        self._lock = threading.Lock()
        self._live: tuple[float, list[Stream]] | None = None

    def invalidate(self) -> None:
        """A stream changed in this process: read them again on the next emission."""
        with self._lock:
            self._live = None

    def _streams(self, conn: sa.Connection) -> list[Stream]:
        now = time.monotonic()
        with self._lock:
            if self._live is not None and now - self._live[0] < STREAMS_CACHE:
                return self._live[1]
        streams = ssf.live(conn)
        with self._lock:
            self._live = (now, streams)
        return streams

    def emit(
        self,
        conn: sa.Connection,
        user: Mapping[str, Any],
        events: Mapping[str, Mapping[str, Any]],
        now: datetime,
    ) -> int:
        """One SET per (stream, event type) for the streams that asked for the type and for this user (the
        SCIM user document), in the caller's transaction. Returns how many were written."""
        return self.emit_many(conn, [(user, events)], now)

    def emit_many(
        self,
        conn: sa.Connection,
        items: Sequence[tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]]],
        now: datetime,
    ) -> int:
        """`emit` for many (user, events) pairs with one subject query (a sweeper batch, a group change)."""
        streams = self._streams(conn)
        items = [(user, events) for user, events in items if events]
        if not streams or not items:
            return 0
        types = {t for _, events in items for t in events}
        wanted = [s for s in streams if types.intersection(events_delivered(s))]
        keys = {id(user): user_keys(user) for user, _ in items}
        found = ssf.subjects_by_key(
            conn, [s.id for s in wanted], sorted({k for ks in keys.values() for k in ks})
        )
        sets: list[tuple[Stream, dict[str, Any], str]] = []
        for user, events in items:
            txn = uuid.uuid4().hex  # RFC 8417 `txn`: the SETs of one change share it, across streams too
            for stream in wanted:
                subject = next(
                    (found[(stream.id, k)] for k in sorted(keys[id(user)]) if (stream.id, k) in found), None
                )
                if subject is None:
                    continue
                for type_, body in events.items():
                    if type_ in events_delivered(stream):
                        claims = self._claims(stream, subject, type_, body, now, txn)
                        sets.append((stream, claims, str(user["id"])))
        self._write(conn, sets, now)
        return len(sets)

    def verify(self, conn: sa.Connection, stream: Stream, state: str | None) -> str:
        """A verification SET through the stream (SSF 1.0 §8.1.4), whatever it requested; returns its jti."""
        now = self.clock.now()
        body = {"state": state} if state is not None else {}
        claims = self._claims(stream, {"format": "opaque", "id": stream.id}, VERIFICATION, body, now)
        self._write(conn, [(stream, claims, None)], now)
        return str(claims["jti"])

    def _claims(
        self,
        stream: Stream,
        sub_id: Mapping[str, Any],
        type_: str,
        body: Mapping[str, Any],
        now: datetime,
        txn: str | None = None,
    ) -> dict[str, Any]:
        at = int(now.timestamp())
        event = dict(body) if type_ == VERIFICATION else {"event_timestamp": at, **body}
        claims = {
            "iss": self.issuer,
            "aud": stream.aud,
            "jti": uuid.uuid4().hex,
            "iat": at,
            "toe": at,
            "sub_id": dict(sub_id),
            "events": {type_: event},
        }
        if txn is not None:
            claims["txn"] = txn
        return claims

    def _write(
        self, conn: sa.Connection, sets: Sequence[tuple[Stream, dict[str, Any], str | None]], now: datetime
    ) -> None:
        pushes = [
            (
                {
                    "id": c["jti"],
                    "type": SECURITY_EVENT,
                    "application": channel(s.id),
                    "stream": s.id,
                    "set": c,
                },
                user_id,
            )
            for s, c, user_id in sets
            if s.method == ssf.PUSH
        ]
        outbox.enqueue_many(conn, pushes, now=now)
        ssf.queue_many(conn, [(s.id, c) for s, c, _ in sets if s.method == ssf.POLL], to_micros(now))

    # ------------------------------------------------------------------------------------------ poll

    def poll(
        self, stream_id: str, owner: str, *, ack: Sequence[str], errors: Sequence[str], max_events: int
    ) -> tuple[dict[str, str], bool] | None:
        """RFC 8936: remove what was acknowledged (and what the receiver reported as errors: it has seen them),
        then hand out up to `max_events` waiting SETs, signed now. None if the stream is not this owner's or
        not a poll stream. A paused stream answers nothing until it is enabled again."""
        with self.db.write() as conn:
            stream = ssf.get(conn, stream_id, owner)
            if stream is None or stream.method != ssf.POLL:
                return None
            ssf.acknowledge(conn, stream_id, [*ack, *errors])
            if stream.status != ssf.ENABLED or max_events <= 0:
                return {}, False
            waiting = ssf.waiting(conn, stream_id, max_events + 1)
        for jti in errors:
            log.warning("ssf receiver of stream %s reported an error on SET %s", stream_id, jti)
        batch = waiting[:max_events]
        return {c["jti"]: self.signer.sign_set(c) for c in batch}, len(waiting) > max_events


class SetPusher(Notifier):
    """The push channel (RFC 8935): POSTs a stream's SET to the receiver's endpoint with its Authorization.
    202 (or any 2xx) is delivered; 400 with `{"err": ...}` and other 4xx are permanent (dead letter: the
    receiver refused this SET); 408, 429, 5xx and network errors are retried with the outbox's backoff. A SET
    whose stream was deleted or disabled meanwhile is dropped (done, `dropped` in its result); a paused
    stream's SETs wait (retried until it is enabled or disabled)."""

    def __init__(self, db: Database, signer: Signer, timeout: float) -> None:
        self.db = db
        self.signer = signer
        self._client = LoopClient(timeout)

    async def notify(self, call: Call) -> Result:
        stream_id = str(call.event.get("stream"))
        claims: Mapping[str, Any] = call.event["set"]
        stream = await self.db.run(self._stream, stream_id)
        if stream is None or stream.status == ssf.DISABLED:
            return Result(Outcome.NOTIFIED, None, {"dropped": "stream deleted or disabled"})
        if stream.status == ssf.PAUSED:
            raise TransientError(f"ssf stream {stream_id} is paused", retry_after=60.0)
        if not stream.endpoint_url:
            raise PermanentError(f"ssf stream {stream_id} has no endpoint_url")
        token = await self.db.run(self.signer.sign_set, claims)
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        if stream.authorization_header:
            headers["Authorization"] = stream.authorization_header
        try:
            response = await self._client.get().post(stream.endpoint_url, content=token, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"ssf push to stream {stream_id}: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            return Result(Outcome.NOTIFIED, None, {"status": status, "jti": claims["jti"]})
        if status in (408, 429) or status >= 500:
            hint = response.headers.get("retry-after")
            retry_after = float(hint) if hint and hint.isdigit() else None
            raise TransientError(f"ssf push to stream {stream_id}: HTTP {status}", retry_after=retry_after)
        raise PermanentError(f"ssf push to stream {stream_id}: HTTP {status}: {response.text[:200]}")

    def _stream(self, stream_id: str) -> Stream | None:
        with self.db.read() as conn:
            return ssf.get(conn, stream_id)

    async def aclose(self) -> None:
        await self._client.aclose()
