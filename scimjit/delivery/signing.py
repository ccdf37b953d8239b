"""scimjit's own signatures: a `Signer` that signs claims as a compact JWS (ES256) with the newest active key of
`signing_keys`, and publishes the JWKS (active and recently retired keys) that lets anyone verify them.

Today it signs the result of a browser sign-in (`typ` "signin-result+jwt", http/jit/signin.py); it lives in
delivery/ so that what delivery sends (Shared Signals SETs, with their own `typ`) can be signed with the same
keys. The first key is made on first use (race-safe across processes: see store/signing_keys.py);
`scimjit keys rotate` makes the next one, which signs from then on, while the old one stays published for
`RETIRED_PUBLISHED` — longer than anything scimjit signs lives — so what it signed still verifies.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import orjson
from authlib.deprecate import AuthlibDeprecationWarning

from scimjit.clock import Clock, from_micros, isoformat, to_micros
from scimjit.store import signing_keys
from scimjit.store.db import Database
from scimjit.store.signing_keys import StoredKey

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebSignature, Key

ALGORITHM = "ES256"
RETIRED_PUBLISHED = 86_400.0  # seconds a retired key stays in the JWKS; nothing signed lives longer
MAX_LIFETIME = 3_600.0  # the longest `exp - iat` sign() accepts (well under RETIRED_PUBLISHED)
KEY_CACHE = 60.0  # seconds a process keeps using the key it loaded before it looks for a newer one


def new_key(generation: int, now_us: int) -> StoredKey:
    """A fresh P-256 key, its kid the RFC 7638 thumbprint of its public half."""
    key = JsonWebKey.generate_key("EC", "P-256", is_private=True)
    kid = key.thumbprint()
    public = {**key.as_dict(is_private=False), "kid": kid, "alg": ALGORITHM, "use": "sig"}
    pem = key.as_pem(is_private=True).decode()
    return StoredKey(kid, generation, ALGORITHM, pem, public, now_us, None)


class Signer:
    """Signs claims with scimjit's current key; its methods do blocking database work (call them through
    `Database.run` from async code)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._lock = threading.Lock()
        self._current: tuple[float, StoredKey, Key] | None = None

    def sign(self, claims: Mapping[str, Any], *, typ: str) -> str:
        """`claims` as a compact JWS with header {alg, kid, typ}. The claims must carry `iat` and `exp` no more
        than MAX_LIFETIME apart: a retired key is published only so long."""
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or not 0 < exp - iat <= MAX_LIFETIME:
            raise ValueError("signed claims need integer iat and exp, at most MAX_LIFETIME apart")
        stored, key = self._key()
        header = {"alg": stored.algorithm, "kid": stored.kid, "typ": typ}
        return (
            JsonWebSignature([stored.algorithm])
            .serialize_compact(header, orjson.dumps(dict(claims)), key)
            .decode()
        )

    def jwks(self) -> dict[str, Any]:
        """The JWK set to publish: active keys and those retired less than RETIRED_PUBLISHED ago. Makes the first
        key if there is none yet, so a verifier that fetches the JWKS first finds the key that will sign."""
        self._key()
        since = self.clock.now() - timedelta(seconds=RETIRED_PUBLISHED)
        with self.db.read() as conn:
            keys = signing_keys.published(conn, since)
        return {"keys": [k.public_jwk for k in keys]}

    def listing(self) -> list[dict[str, Any]]:
        """Every key with its dates and whether it signs now / is still published (`scimjit keys list`)."""
        until = to_micros(self.clock.now() - timedelta(seconds=RETIRED_PUBLISHED))
        with self.db.read() as conn:
            keys = signing_keys.every(conn)
        active = next((k.kid for k in keys if k.retired_at is None), None)
        return [
            {
                "kid": k.kid,
                "algorithm": k.algorithm,
                "createdAt": isoformat(from_micros(k.created_at)),
                "retiredAt": isoformat(from_micros(k.retired_at)) if k.retired_at is not None else None,
                "signs": k.kid == active,
                "published": k.retired_at is None or k.retired_at > until,
            }
            for k in keys
        ]

    def rotate(self) -> tuple[StoredKey, int]:
        """Make the next key and retire the older ones: the new key signs from now on (other processes pick it
        up within KEY_CACHE seconds; until then they sign with the old one, which stays published). Returns the
        new key and how many were retired."""
        now = self.clock.now()
        with self.db.write() as conn:
            while True:
                fresh = new_key(signing_keys.next_generation(conn), to_micros(now))
                if signing_keys.insert(conn, fresh):
                    break
            retired = signing_keys.retire_older(conn, fresh.generation, now)
        with self._lock:
            self._current = None
        return fresh, retired

    def _key(self) -> tuple[StoredKey, Key]:
        now = self.clock.now().timestamp()
        with self._lock:
            if self._current is not None and now - self._current[0] < KEY_CACHE:
                return self._current[1], self._current[2]
        with self.db.read() as conn:
            stored = signing_keys.newest_active(conn)
        if stored is None:  # the first use anywhere: make generation 1 (a racing process may win; fine)
            with self.db.write() as conn:
                signing_keys.insert(conn, new_key(1, to_micros(self.clock.now())))
                stored = signing_keys.newest_active(conn)
            assert stored is not None
        key = JsonWebKey.import_key(stored.private_pem)
        with self._lock:
            self._current = (now, stored, key)
        return stored, key
