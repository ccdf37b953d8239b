"""Test doubles that are real servers: a minimal OIDC issuer (discovery + JWKS over HTTP, tokens we sign) and a
webhook receiver that checks signatures and honours idempotency keys, each an HTTP server in a thread on
127.0.0.1. Plus helpers to seed SCIM users and groups and to build a JIT engine from TOML text.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authlib.deprecate import AuthlibDeprecationWarning

from scimjit.clock import to_micros
from scimjit.config import Settings
from scimjit.delivery.connectors.webhook import verify_signature
from scimjit.engine import JitEngine
from scimjit.scim.schema import USER_URN, load_registry
from scimjit.store import groups as group_store
from scimjit.store import users as user_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebSignature

_REGISTRY = load_registry()


class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- OIDC issuer -------------------------------------------------------------------------------------------


class LocalIssuer:
    """Serves discovery and a JWKS; mints ID tokens with its private keys (or any key, for forgeries)."""

    def __init__(self) -> None:
        self.keys = [self.new_key()]
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.requests = 0  # every GET, answered or not (a down issuer still counts what it was asked)
        self.down = False
        self.url = ""

    @staticmethod
    def new_key(kty: str = "RSA", size: Any = 2048) -> Any:
        return JsonWebKey.generate_key(kty, size, options={"kid": uuid.uuid4().hex[:8]}, is_private=True)

    def rotate(self) -> Any:
        key = self.new_key()
        self.keys.append(key)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(is_private=False) for k in self.keys]}

    @contextmanager
    def running(self) -> Iterator[LocalIssuer]:
        issuer = self

        class Handler(_QuietHandler):
            def do_GET(self) -> None:
                issuer.requests += 1
                if issuer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path == "/.well-known/openid-configuration":
                    issuer.discovery_fetches += 1
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    issuer.jwks_fetches += 1
                    body = issuer.jwks()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        with _serve(Handler) as url:
            self.url = url
            yield self

    def token(
        self,
        now: float,
        *,
        sub: str = "sub-1",
        aud: Any = "wiki",
        alg: str = "RS256",
        key: Any = None,
        header: dict[str, Any] | None = None,
        lifetime: int = 300,
        **claims: Any,
    ) -> str:
        key = key if key is not None else self.keys[0]
        payload = {
            "iss": self.url,
            "sub": sub,
            "aud": aud,
            "iat": int(now),
            "exp": int(now) + lifetime,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        hdr = {"alg": alg, "kid": getattr(key, "kid", None), **(header or {})}
        hdr = {k: v for k, v in hdr.items() if v is not None}
        # JsonWebSignature, not JsonWebToken.encode: the latter overwrites `kid` with the key's own, and
        # forgery tests need to claim another key's kid.
        return JsonWebSignature([alg]).serialize_compact(hdr, json.dumps(payload).encode(), key).decode()


# --- webhook receiver ----------------------------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """A downstream that verifies the HMAC signature of every request, processes each idempotency key once
    (a repeat gets the first answer back) and can be told to fail or stall."""

    secret: str = "change-me"
    url: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)  # processed, first delivery of each key
    requests: list[dict[str, Any]] = field(default_factory=list)  # every request, duplicates included
    bad_signatures: int = 0
    duplicates: int = 0
    script: list[Any] = field(default_factory=list)  # next responses: int status or (status, body)
    delay: float = 0.0
    respond: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    _answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]

    def fail_next(self, *responses: Any) -> None:
        self.script.extend(responses)

    @contextmanager
    def running(self) -> Iterator[WebhookReceiver]:
        receiver = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = receiver._handle(body, self.headers)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up (timed out, or was killed): it will retry

        with _serve(Handler) as url:
            self.url = url + "/events"
            yield self

    def _handle(self, body: bytes, headers: Any) -> tuple[int, bytes]:
        ok = verify_signature(
            self.secret, body, headers.get("X-Scimjit-Signature"), headers.get("X-Scimjit-Timestamp")
        )
        key = headers.get("Idempotency-Key")
        event = json.loads(body)
        with self._lock:  # recorded on arrival: a request counted here is in flight until `delay` has passed
            self.requests.append({"event": event, "key": key, "signed": ok})
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            if not ok:
                self.bad_signatures += 1
                return 401, b'{"error": "bad signature"}'
            if self.script:
                scripted = self.script.pop(0)
                status, answer = scripted if isinstance(scripted, tuple) else (scripted, {})
                return status, json.dumps(answer).encode()
            if key in self._answers:
                self.duplicates += 1
                return self._answers[key]
            self.events.append(event)
            answer = (
                self.respond(event) if self.respond else {"downstreamId": f"wiki-{event['user']['userName']}"}
            )
            self._answers[key] = (200, json.dumps(answer).encode())
            return self._answers[key]


# --- directory seeding ---------------------------------------------------------------------------------------


def add_user(
    db: Any,
    user_name: str,
    *,
    active: bool = True,
    emails: list[str] = (),  # type: ignore[assignment]
    external_id: str | None = None,
    now: int = 0,
    **extra: Any,
) -> str:
    doc: dict[str, Any] = {"schemas": [USER_URN], "userName": user_name, "active": active, **extra}
    if emails:
        doc["emails"] = [{"value": e, "type": "work", "primary": i == 0} for i, e in enumerate(emails)]
    if external_id:
        doc["externalId"] = external_id
    with db.write() as conn:
        row = user_store.insert(conn, _REGISTRY, _REGISTRY.resource_type("User"), doc, now or 1)
    return str(row.id)


def update_user(db: Any, user_id: str, now: int = 2, **changes: Any) -> None:
    with db.write() as conn:
        current = user_store.get(conn, user_id)
        doc = {**current.data, **changes}
        user_store.update(conn, _REGISTRY, _REGISTRY.resource_type("User"), current, doc, now)


def add_group(db: Any, name: str, members: list[str] = (), now: int = 1) -> str:  # type: ignore[assignment]
    with db.write() as conn:
        row = group_store.insert(
            conn, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name}, now
        )
        if members:
            group_store.add_members(conn, row, members, now)
    return str(row.id)


def add_members(db: Any, group_id: str, members: list[str], now: int = 1) -> None:
    with db.write() as conn:
        group_store.add_members(conn, group_store.get(conn, group_id), members, now)


def remove_members(db: Any, group_id: str, members: list[str], now: int = 1) -> None:
    with db.write() as conn:
        group_store.remove_members(conn, group_store.get(conn, group_id), members, now)


# --- engine ------------------------------------------------------------------------------------------------


WIKI_TOML = """
[[applications]]
name = "wiki"
issuer = "{issuer}"
audience = ["wiki"]
match = {{ claim = "preferred_username", attribute = "userName" }}
groups = ["wiki-users"]
on_first_login = "create"
roles = {{ "wiki-admins" = "admin" }}
on_unentitled = "disable"
grace_period = "0s"
{extra}

[applications.connector]
type = "webhook"
url = "{webhook}"
secret = "change-me"

[jit]
{jit}
"""


def wiki_config(
    issuer: str, webhook: str, *, extra: str = "", jit: str = 'login_wait = "1s"'
) -> dict[str, Any]:
    return tomllib.loads(WIKI_TOML.format(issuer=issuer, webhook=webhook, extra=extra, jit=jit))


def engine_for(db: Any, clock: Any, raw: dict[str, Any], **kwargs: Any) -> JitEngine:
    return JitEngine(Settings.load(environ={}, document=raw), db, clock, **kwargs)


def now_us(clock: Any) -> int:
    return to_micros(clock.now())
