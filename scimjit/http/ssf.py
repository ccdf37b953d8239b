"""Shared Signals over HTTP: the SSF 1.0 transmitter metadata at `/.well-known/ssf-configuration` and, under
/ssf/v1, the stream management API (stream configuration, status, subjects, verification) and the RFC 8936
poll endpoint. Receivers call it with a token of scope `ssf`; a stream belongs to the token that created it
(its name), and another receiver's stream answers 404 as if it did not exist.

The sub-application has the JIT API's error shape (`{"error", "detail"}`, http/jit/errors.py). What is
emitted when is delivery/signals.py's business; docs/signals.md describes both.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scimjit.clock import to_micros
from scimjit.config import ConfigError, check_url
from scimjit.delivery import signals
from scimjit.delivery.signals import Signals
from scimjit.engine import JitEngine
from scimjit.http.apidoc import JSON, body, doc, jit_errors, query, ref, resp
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.jit import JitApi
from scimjit.http.jit.errors import json_response
from scimjit.jiterrors import JitError
from scimjit.store import audit, ssf
from scimjit.store.ssf import Stream

PREFIX = "/ssf/v1"
SCOPE = "ssf"
MAX_BODY = 64 * 1024
MAX_STREAMS = 10  # per receiver (token): bounded emission cost per change
MAX_EVENTS = 100  # SETs per poll answer
T = TypeVar("T")
NO_BASE_URL = {
    "404": resp("no such stream, or server.base_url is not set (ssf_not_configured)", ref("JitError"), JSON)
}

STREAM_ID = query("stream_id", {"type": "string"}, "The stream (without it, GET lists the caller's streams)")
CONFIG = {
    "type": "object",
    "properties": {
        "stream_id": {"type": "string"},
        "iss": {"type": "string"},
        "aud": {"type": "string"},
        "events_supported": {"type": "array", "items": {"type": "string"}},
        "events_requested": {"type": "array", "items": {"type": "string"}},
        "events_delivered": {"type": "array", "items": {"type": "string"}},
        "delivery": {
            "type": "object",
            "properties": {
                "method": {"type": "string", "enum": [signals.PUSH_URN, signals.POLL_URN]},
                "endpoint_url": {"type": "string"},
                "authorization_header": {"type": "string", "writeOnly": True},
            },
            "required": ["method"],
        },
        "description": {"type": "string"},
    },
}
STATUS = {
    "type": "object",
    "properties": {
        "stream_id": {"type": "string"},
        "status": {"type": "string", "enum": list(ssf.STATUSES)},
        "reason": {"type": "string"},
    },
    "required": ["stream_id"],
}
SUBJECT = {
    "type": "object",
    "properties": {
        "stream_id": {"type": "string"},
        "subject": {"type": "object"},
        "verified": {"type": "boolean"},
    },
    "required": ["stream_id", "subject"],
}
VERIFY = {"type": "object", "properties": {"stream_id": {"type": "string"}, "state": {"type": "string"}}}
POLL = {
    "type": "object",
    "properties": {
        "ack": {"type": "array", "items": {"type": "string"}},
        "setErrs": {"type": "object"},
        "maxEvents": {"type": "integer", "minimum": 0},
        "returnImmediately": {"type": "boolean"},
    },
}
POLL_ANSWER = {
    "type": "object",
    "properties": {
        "sets": {"type": "object", "additionalProperties": {"type": "string"}},
        "moreAvailable": {"type": "boolean"},
    },
}
COMPONENTS = {
    "SsfStream": CONFIG,
    "SsfStatus": STATUS,
    "SsfSubject": SUBJECT,
    "SsfVerify": VERIFY,
    "SsfPoll": POLL,
}


def _engine(request: Request) -> JitEngine:
    engine: JitEngine = request.app.state.services.engine
    return engine


def issuer(request: Request) -> str:
    """scimjit's issuer (`iss` of every SET) is its public URL: without `[server] base_url` this server is no
    transmitter (404), since SETs are written in the background where no request says what the URL is."""
    base: str = request.app.state.services.settings.base_url
    if not base:
        raise JitError(
            404,
            "ssf_not_configured",
            "Shared Signals need the server's public URL: set [server] base_url (SCIMJIT_BASE_URL)",
        )
    return base.rstrip("/")


def _text(doc_: Mapping[str, Any], key: str, *, limit: int, required: bool = False) -> str | None:
    value = doc_.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise JitError(
            400, "invalid_request", f"`{key}` must be a non-empty string of at most {limit} characters"
        )
    return value


def _stream_id(doc_: Mapping[str, Any]) -> str:
    value = _text(doc_, "stream_id", limit=64, required=True)
    assert value is not None
    return value


def _events(doc_: Mapping[str, Any]) -> list[str]:
    value = doc_.get("events_requested", [])
    if (
        not isinstance(value, list)
        or len(value) > 50
        or not all(isinstance(e, str) and len(e) < 512 for e in value)
    ):
        raise JitError(400, "invalid_request", "`events_requested` must be a list of event type URIs")
    return list(dict.fromkeys(value))


def render(stream: Stream, iss: str) -> dict[str, Any]:
    """A stream's configuration as SSF 1.0 §8.1.1 shows it (never the push Authorization header)."""
    endpoint = stream.endpoint_url if stream.method == ssf.PUSH else f"{iss}{PREFIX}/poll/{stream.id}"
    out: dict[str, Any] = {
        "stream_id": stream.id,
        "iss": iss,
        "aud": stream.aud,
        "events_supported": list(signals.EVENTS_SUPPORTED),
        "events_requested": stream.events_requested,
        "events_delivered": signals.events_delivered(stream),
        "delivery": {
            "method": signals.PUSH_URN if stream.method == ssf.PUSH else signals.POLL_URN,
            "endpoint_url": endpoint,
        },
    }
    if stream.description:
        out["description"] = stream.description
    return out


def _delivery(doc_: Mapping[str, Any], method: str | None = None) -> dict[str, Any]:
    """The `delivery` object as stream columns: push needs an endpoint_url, poll takes none (scimjit's)."""
    delivery = doc_.get("delivery")
    if not isinstance(delivery, Mapping):
        raise JitError(400, "invalid_request", "`delivery` must be an object with a `method`")
    urn = delivery.get("method")
    kinds = {signals.PUSH_URN: ssf.PUSH, signals.POLL_URN: ssf.POLL}
    if not isinstance(urn, str) or urn not in kinds:
        raise JitError(
            400, "invalid_request", f"delivery.method must be {signals.PUSH_URN} or {signals.POLL_URN}"
        )
    kind = kinds[urn]
    if method is not None and kind != method:
        raise JitError(400, "invalid_request", "a stream's delivery method cannot change: make a new stream")
    if kind == ssf.POLL:
        return {"method": kind, "endpoint_url": None, "authorization_header": None}
    url = _text(delivery, "endpoint_url", limit=2048, required=True)
    assert url is not None
    try:
        check_url(url, "delivery.endpoint_url")
    except ConfigError as exc:
        raise JitError(400, "invalid_request", str(exc)) from None
    header = _text(delivery, "authorization_header", limit=4096)
    return {"method": kind, "endpoint_url": url, "authorization_header": header}


async def _run(request: Request, fn: Callable[..., T], *args: Any) -> T:
    return await _engine(request).db.run(fn, *args)


def _audit(
    conn: sa.Connection, request: Request, owner: str, action: str, stream_id: str, **details: Any
) -> None:
    """One audit record per stream change, in its transaction (who subscribed to what is worth knowing)."""
    audit.record(
        conn,
        actor=owner,
        action=action,
        outcome="success",
        resource_type="SsfStream",
        resource_id=stream_id,
        request_id=request.scope.get("state", {}).get("request_id"),
        details=details,
        at_micros=to_micros(_engine(request).clock.now()),
    )


def _owned(engine: JitEngine, stream_id: str, owner: str) -> Stream:
    with engine.db.read() as conn:
        stream = ssf.get(conn, stream_id, owner)
    if stream is None:
        raise JitError(404, "not_found", f"no stream {stream_id!r} of this receiver")
    return stream


# ------------------------------------------------------------------------------------------- metadata


@doc(
    "Shared Signals transmitter metadata (SSF 1.0 §7)",
    "Shared Signals",
    {"200": resp("transmitter configuration", {"type": "object"}, JSON), **NO_BASE_URL},
    secure=False,
)
async def configuration(request: Request) -> Response:
    try:  # served by the outer app (a well-known path), which has no JitError handler
        iss = issuer(request)
    except JitError as exc:
        return json_response(exc.to_json(), exc.status)
    return json_response(
        {
            "spec_version": "1_0",
            "issuer": iss,
            "jwks_uri": f"{iss}/.well-known/jwks.json",
            "delivery_methods_supported": [signals.PUSH_URN, signals.POLL_URN],
            "configuration_endpoint": f"{iss}{PREFIX}/stream",
            "status_endpoint": f"{iss}{PREFIX}/status",
            "add_subject_endpoint": f"{iss}{PREFIX}/subjects/add",
            "remove_subject_endpoint": f"{iss}{PREFIX}/subjects/remove",
            "verification_endpoint": f"{iss}{PREFIX}/verify",
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
            "default_subjects": "NONE",
            "events_supported": list(signals.EVENTS_SUPPORTED),
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


# ------------------------------------------------------------------------------------------- streams


@doc(
    "Read one stream's configuration, or list the caller's streams",
    "Shared Signals",
    {
        "200": resp("the stream, or a list of streams", ref("SsfStream"), JSON),
        **jit_errors(401, 403, 404, 429),
    },
    params=[STREAM_ID],
    components=COMPONENTS,
)
async def stream_get(request: Request) -> Response:
    owner = require(request, SCOPE).name
    iss, engine = issuer(request), _engine(request)
    stream_id = request.query_params.get("stream_id")
    if stream_id:
        return json_response(render(await _run(request, _owned, engine, stream_id, owner), iss))

    def listing() -> list[Stream]:
        with engine.db.read() as conn:
            return ssf.of_owner(conn, owner)

    return json_response([render(s, iss) for s in await _run(request, listing)])


@doc(
    "Create a stream (push: scimjit POSTs SETs to your endpoint_url; poll: you fetch them)",
    "Shared Signals",
    {
        "201": resp("the stream", ref("SsfStream"), JSON),
        "409": resp("too many streams", ref("JitError"), JSON),
        **jit_errors(400, 401, 403, 413, 415, 429),
        **NO_BASE_URL,
    },
    body=body(ref("SsfStream"), JSON),
    components=COMPONENTS,
)
async def stream_create(request: Request) -> Response:
    owner = require(request, SCOPE).name
    iss, engine = issuer(request), _engine(request)
    doc_ = await read_json_object(request, MAX_BODY)
    delivery = _delivery(doc_)
    events = _events(doc_)
    description = _text(doc_, "description", limit=512)
    aud = _text(doc_, "aud", limit=512) or owner
    now_us = to_micros(engine.clock.now())
    stream = Stream(
        secrets.token_hex(16), owner, delivery["method"], delivery["endpoint_url"],
        delivery["authorization_header"], events, aud, description, ssf.ENABLED, None, now_us, now_us,
    )  # fmt: skip

    def create() -> None:
        with engine.db.write() as conn:
            if len(ssf.of_owner(conn, owner)) >= MAX_STREAMS:
                raise JitError(409, "too_many_streams", f"a receiver has at most {MAX_STREAMS} streams")
            ssf.insert(conn, stream)
            _audit(conn, request, owner, "ssf.stream.create", stream.id, method=stream.method, events=events)

    await _run(request, create)
    engine.signals.invalidate()
    return json_response(render(stream, iss), 201)


async def _change(request: Request, *, replace: bool) -> Response:
    owner = require(request, SCOPE).name
    iss, engine = issuer(request), _engine(request)
    doc_ = await read_json_object(request, MAX_BODY)
    stream_id = _stream_id(doc_)
    current = await _run(request, _owned, engine, stream_id, owner)
    values: dict[str, Any] = {}
    if replace or "events_requested" in doc_:
        values["events_requested"] = _events(doc_)
    if replace or "description" in doc_:
        values["description"] = _text(doc_, "description", limit=512)
    if replace or "delivery" in doc_:
        delivery = _delivery(doc_, current.method)
        delivery.pop("method")
        values.update(delivery)
    values["updated_at"] = to_micros(engine.clock.now())

    def write() -> Stream:
        with engine.db.write() as conn:
            if not ssf.update(conn, stream_id, owner, values):
                raise JitError(404, "not_found", f"no stream {stream_id!r} of this receiver")
            changed = sorted(k for k in values if k not in ("updated_at", "authorization_header"))
            _audit(conn, request, owner, "ssf.stream.update", stream_id, changed=changed)
            stream = ssf.get(conn, stream_id, owner)
        assert stream is not None
        return stream

    stream = await _run(request, write)
    engine.signals.invalidate()
    return json_response(render(stream, iss))


@doc(
    "Update a stream (only the members sent change)",
    "Shared Signals",
    {
        "200": resp("the stream", ref("SsfStream"), JSON),
        **jit_errors(400, 401, 403, 404, 413, 415, 429),
        **NO_BASE_URL,
    },
    body=body(ref("SsfStream"), JSON),
    components=COMPONENTS,
)
async def stream_update(request: Request) -> Response:
    return await _change(request, replace=False)


@doc(
    "Replace a stream's receiver-supplied configuration",
    "Shared Signals",
    {
        "200": resp("the stream", ref("SsfStream"), JSON),
        **jit_errors(400, 401, 403, 404, 413, 415, 429),
        **NO_BASE_URL,
    },
    body=body(ref("SsfStream"), JSON),
    components=COMPONENTS,
)
async def stream_replace(request: Request) -> Response:
    return await _change(request, replace=True)


@doc(
    "Delete a stream (its subjects and undelivered SETs go with it)",
    "Shared Signals",
    {"204": resp("deleted"), **jit_errors(401, 403, 404, 429), **NO_BASE_URL},
    params=[STREAM_ID],
)
async def stream_delete(request: Request) -> Response:
    owner = require(request, SCOPE).name
    issuer(request)
    engine = _engine(request)
    stream_id = request.query_params.get("stream_id", "")

    def delete() -> bool:
        with engine.db.write() as conn:
            if not ssf.delete(conn, stream_id, owner):
                return False
            _audit(conn, request, owner, "ssf.stream.delete", stream_id)
            return True

    if not await _run(request, delete):
        raise JitError(404, "not_found", f"no stream {stream_id!r} of this receiver")
    engine.signals.invalidate()
    return Response(status_code=204)


# ------------------------------------------------------------------------------------------- status


def _status(stream: Stream) -> dict[str, Any]:
    out: dict[str, Any] = {"stream_id": stream.id, "status": stream.status}
    if stream.reason:
        out["reason"] = stream.reason
    return out


@doc(
    "A stream's status (enabled, paused: SETs held, disabled: SETs dropped)",
    "Shared Signals",
    {"200": resp("status", ref("SsfStatus"), JSON), **jit_errors(401, 403, 404, 429), **NO_BASE_URL},
    params=[STREAM_ID],
    components=COMPONENTS,
)
async def status_get(request: Request) -> Response:
    owner = require(request, SCOPE).name
    issuer(request)
    engine = _engine(request)
    stream = await _run(request, _owned, engine, request.query_params.get("stream_id", ""), owner)
    return json_response(_status(stream))


@doc(
    "Change a stream's status",
    "Shared Signals",
    {
        "200": resp("status", ref("SsfStatus"), JSON),
        **jit_errors(400, 401, 403, 404, 413, 415, 429),
        **NO_BASE_URL,
    },
    body=body(ref("SsfStatus"), JSON),
    components=COMPONENTS,
)
async def status_set(request: Request) -> Response:
    owner = require(request, SCOPE).name
    issuer(request)
    engine = _engine(request)
    doc_ = await read_json_object(request, MAX_BODY)
    stream_id = _stream_id(doc_)
    status = doc_.get("status")
    if status not in ssf.STATUSES:
        raise JitError(400, "invalid_request", f"`status` must be one of {', '.join(ssf.STATUSES)}")
    values = {
        "status": status,
        "reason": _text(doc_, "reason", limit=512),
        "updated_at": to_micros(engine.clock.now()),
    }

    def write() -> Stream:
        with engine.db.write() as conn:
            if not ssf.update(conn, stream_id, owner, values):
                raise JitError(404, "not_found", f"no stream {stream_id!r} of this receiver")
            if status == ssf.DISABLED:  # disabled drops what waits (pushes drop themselves: SetPusher)
                ssf.clear_queue(conn, stream_id)
            _audit(conn, request, owner, "ssf.stream.status", stream_id, status=status)
            stream = ssf.get(conn, stream_id, owner)
        assert stream is not None
        return stream

    stream = await _run(request, write)
    engine.signals.invalidate()
    return json_response(_status(stream))


# ------------------------------------------------------------------------------------------- subjects


async def _subject(request: Request) -> tuple[JitEngine, Stream, str, dict[str, Any]]:
    owner = require(request, SCOPE).name
    iss, engine = issuer(request), _engine(request)
    doc_ = await read_json_object(request, MAX_BODY)
    stream = await _run(request, _owned, engine, _stream_id(doc_), owner)
    subject = doc_.get("subject")
    try:
        key = signals.subject_key(subject, iss)
    except ValueError as exc:
        raise JitError(400, "invalid_subject", str(exc)) from None
    assert isinstance(subject, Mapping)
    return engine, stream, key, dict(subject)


@doc(
    "Add a subject to a stream (default_subjects is NONE: a stream hears only of its subjects)",
    "Shared Signals",
    {"200": resp("added"), **jit_errors(400, 401, 403, 404, 413, 415, 429), **NO_BASE_URL},
    body=body(ref("SsfSubject"), JSON),
    components=COMPONENTS,
)
async def subject_add(request: Request) -> Response:
    engine, stream, key, subject = await _subject(request)
    now_us = to_micros(engine.clock.now())

    def add() -> None:
        with engine.db.write() as conn:
            ssf.add_subject(conn, stream.id, key, subject, now_us)
            _audit(conn, request, stream.owner, "ssf.subject.add", stream.id, format=subject.get("format"))

    await _run(request, add)
    return Response(status_code=200)


@doc(
    "Remove a subject from a stream",
    "Shared Signals",
    {"204": resp("removed"), **jit_errors(400, 401, 403, 404, 413, 415, 429), **NO_BASE_URL},
    body=body(ref("SsfSubject"), JSON),
    components=COMPONENTS,
)
async def subject_remove(request: Request) -> Response:
    engine, stream, key, _ = await _subject(request)

    def remove() -> bool:
        with engine.db.write() as conn:
            if not ssf.remove_subject(conn, stream.id, key):
                return False
            _audit(conn, request, stream.owner, "ssf.subject.remove", stream.id)
            return True

    if not await _run(request, remove):
        raise JitError(404, "not_found", "the stream has no such subject")
    return Response(status_code=204)


# ------------------------------------------------------------------------------------------- verification, poll


@doc(
    "Ask for a verification SET through the stream (carries your `state` back)",
    "Shared Signals",
    {"204": resp("queued"), **jit_errors(400, 401, 403, 404, 413, 415, 429), **NO_BASE_URL},
    body=body(ref("SsfVerify"), JSON),
    components=COMPONENTS,
)
async def verify(request: Request) -> Response:
    owner = require(request, SCOPE).name
    issuer(request)
    engine = _engine(request)
    doc_ = await read_json_object(request, MAX_BODY)
    stream_id, state = _stream_id(doc_), _text(doc_, "state", limit=512)
    sig: Signals = engine.signals

    def write() -> None:
        with engine.db.write() as conn:
            stream = ssf.get(conn, stream_id, owner)
            if stream is None:
                raise JitError(404, "not_found", f"no stream {stream_id!r} of this receiver")
            sig.verify(conn, stream, state)

    await _run(request, write)
    return Response(status_code=204)


def _jtis(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 1000 or not all(isinstance(j, str) for j in value):
        raise JitError(400, "invalid_request", f"`{what}` must be a list of at most 1000 jti strings")
    return list(value)


@doc(
    "Poll a stream's SETs and acknowledge those received (RFC 8936)",
    "Shared Signals",
    {
        "200": resp("SETs by jti", POLL_ANSWER, JSON),
        **jit_errors(400, 401, 403, 404, 413, 415, 429),
        **NO_BASE_URL,
    },
    body=body(ref("SsfPoll"), JSON),
    params=[{"name": "stream_id", "in": "path", "required": True, "schema": {"type": "string"}}],
    components=COMPONENTS,
)
async def poll(request: Request) -> Response:
    owner = require(request, SCOPE).name
    issuer(request)
    engine = _engine(request)
    doc_ = await read_json_object(request, MAX_BODY)
    ack = _jtis(doc_.get("ack", []), "ack")
    errs = doc_.get("setErrs", {})
    if not isinstance(errs, Mapping):
        raise JitError(400, "invalid_request", "`setErrs` must be an object keyed by jti")
    max_events = doc_.get("maxEvents", MAX_EVENTS)
    if not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 0:
        raise JitError(400, "invalid_request", "`maxEvents` must be a non-negative integer")
    stream_id = request.path_params["stream_id"]
    reported = _jtis(list(errs), "setErrs")
    limit = min(max_events, MAX_EVENTS)
    answer = await _run(
        request,
        lambda: engine.signals.poll(stream_id, owner, ack=ack, errors=reported, max_events=limit),
    )
    if answer is None:
        raise JitError(404, "not_found", f"no poll stream {stream_id!r} of this receiver")
    sets, more = answer
    return json_response({"sets": sets, "moreAvailable": more})


routes: list[BaseRoute] = [
    Route("/stream", stream_get, methods=["GET"]),
    Route("/stream", stream_create, methods=["POST"]),
    Route("/stream", stream_update, methods=["PATCH"]),
    Route("/stream", stream_replace, methods=["PUT"]),
    Route("/stream", stream_delete, methods=["DELETE"]),
    Route("/status", status_get, methods=["GET"]),
    Route("/status", status_set, methods=["POST"]),
    Route("/subjects/add", subject_add, methods=["POST"]),
    Route("/subjects/remove", subject_remove, methods=["POST"]),
    Route("/verify", verify, methods=["POST"]),
    Route("/poll/{stream_id}", poll, methods=["POST"]),
]


def ssf_api() -> JitApi:
    """The /ssf/v1 sub-application, with the JIT API's error shape and handlers."""
    return JitApi(routes)
