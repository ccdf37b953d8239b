"""Bearer tokens: `sjt_<id>_<secret>`. Only sha256(secret) is stored; checks are constant-time.

The secret is 256 random bits, so a fast hash is enough (no password-style KDF needed: nothing to brute
force). Verified tokens are cached in-process for `cache_seconds` so the hot path costs one hash, not a query;
a revocation therefore takes effect within that many seconds on every process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scimjit.clock import Clock, to_micros
from scimjit.store.db import Database
from scimjit.store.tables import tokens

PREFIX = "sjt_"
# `ssf`: a Shared Signals receiver managing its own streams (http/ssf.py); `schedules`: a scheduling system
# sending its plan of shifts (http/jit/schedules.py)
SCOPES = frozenset({"scim:read", "scim:write", "admin", "login", "requests", "metrics", "schedules", "ssf"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name, scopes and (for login tokens) its application."""

    name: str
    scopes: frozenset[str]
    application: str | None = None
    token_id: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_digest(token: str) -> bytes:
    """The SHA-256 of a presented token: the key of `TokenStore.verify`'s cache and of the rate limiter's
    `KnownTokens`, computed once per request."""
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    def __init__(self, db: Database, clock: Clock, *, cache_seconds: float = 5.0) -> None:
        self.db = db
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}

    def create(self, name: str, scopes: list[str], application: str | None = None) -> str:
        """Create a token and return its full value; it is never shown again."""
        unknown = set(scopes) - SCOPES
        if unknown:
            raise ValueError(
                f"unknown scope(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(SCOPES))}"
            )
        if not scopes:
            raise ValueError("a token needs at least one scope")
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        with self.db.write() as conn:
            exists = conn.execute(sa.select(tokens.c.id).where(tokens.c.name == name)).first()
            if exists:
                raise ValueError(f"a token named {name!r} exists; revoke it first")
            conn.execute(
                tokens.insert().values(
                    id=token_id,
                    name=name,
                    secret_hash=_hash(secret),
                    scopes=sorted(set(scopes)),
                    application=application,
                    created_at=to_micros(self.clock.now()),
                )
            )
        return f"{PREFIX}{token_id}_{secret}"

    def list(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(tokens).order_by(tokens.c.name)).mappings().all()
        return [{k: v for k, v in row.items() if k != "secret_hash"} for row in rows]

    def revoke(self, name: str) -> bool:
        with self.db.write() as conn:
            result = conn.execute(
                tokens.update()
                .where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
                .values(revoked_at=to_micros(self.clock.now()))
            )
        self._cache.clear()
        return result.rowcount > 0

    def count_active(self) -> int:
        with self.db.read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(tokens).where(tokens.c.revoked_at.is_(None))
                ).scalar_one()
            )

    def any_created(self) -> bool:
        """Whether any token, revoked ones included, was ever made: false only before the very first start."""
        with self.db.read() as conn:
            return conn.execute(sa.select(tokens.c.id).limit(1)).first() is not None

    def active_admin_exists(self) -> bool:
        """Whether someone can still administer the server with a token (scopes are JSON: checked here, over
        the active tokens only, which are few)."""
        with self.db.read() as conn:
            rows = conn.execute(sa.select(tokens.c.scopes).where(tokens.c.revoked_at.is_(None)))
            return any("admin" in (scopes or ()) for (scopes,) in rows)

    def verify(self, token: str, *, digest: bytes | None = None) -> Principal | None:
        """The principal for a presented token, or None. Cached briefly; see module docstring. `digest` is the
        token's SHA-256 when the caller has it already (`http.auth` hashes it for its own cache)."""
        key = digest if digest is not None else token_digest(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = self._lookup(token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (principal, now + self.cache_seconds)
        return principal

    def _lookup(self, token: str) -> Principal | None:
        if not token.startswith(PREFIX):
            return None
        token_id, sep, secret = token[len(PREFIX) :].partition("_")
        if not sep or not token_id or not secret:
            return None
        with self.db.read() as conn:
            row = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).first()
        if row is None:
            hmac.compare_digest(_hash(secret), _hash(secret))  # same work either way
            return None
        if not hmac.compare_digest(_hash(secret), row.secret_hash) or row.revoked_at is not None:
            return None
        return Principal(row.name, frozenset(row.scopes), row.application, row.id)
