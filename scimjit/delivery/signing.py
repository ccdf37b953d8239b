"""scimjit's own signatures: a `Signer` that signs claims as a compact JWS (ES256) with the newest active key of
`signing_keys`, and publishes the JWKS (active and recently retired keys) that lets anyone verify them.

Today it signs the result of a browser sign-in (`typ` "signin-result+jwt", http/jit/signin.py); it lives in
delivery/ so that what delivery sends (Shared Signals SETs, with their own `typ`) can be signed with the same
keys. The first key is made on first use (race-safe across processes: see store/signing_keys.py).

`scimjit keys rotate` makes the next key and publishes it at once, but it signs only after `PUBLISH_LEAD`: by
then every process's cached JWKS (KEY_CACHE) and every HTTP cache of it (JWKS max-age) holds it, so no verifier
meets a kid it cannot find. The old key signs until then, and stays published for `RETIRED_PUBLISHED` more —
longer than anything scimjit signs lives — so what it signed still verifies. `rotate(immediately=True)` (a
leaked key) switches at once instead.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import orjson
from authlib.deprecate import AuthlibDeprecationWarning

from scimjit.clock import Clock, format_micros, to_micros
from scimjit.store import signing_keys
from scimjit.store.db import Database
from scimjit.store.signing_keys import StoredKey

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebSignature, Key

ALGORITHM = "ES256"
RETIRED_PUBLISHED = 86_400.0  # seconds a retired key stays in the JWKS; nothing signed lives longer
MAX_LIFETIME = 3_600.0  # the longest `exp - iat` sign() accepts (well under RETIRED_PUBLISHED)
KEY_CACHE = 60.0  # seconds a process keeps the key (and the JWKS) it read before it reads them again
JWKS_MAX_AGE = 300  # the Cache-Control max-age of the published JWKS
PUBLISH_LEAD = KEY_CACHE + JWKS_MAX_AGE  # a new key is published this long before it signs


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
        self._published: tuple[float, dict[str, Any]] | None = None  # the JWKS as last read, and when

    def sign(self, claims: Mapping[str, Any], *, typ: str) -> str:
        """`claims` as a compact JWS with header {alg, kid, typ}. The claims must carry `iat` and `exp` no more
        than MAX_LIFETIME apart: a retired key is published only so long."""
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or not 0 < exp - iat <= MAX_LIFETIME:
            raise ValueError("signed claims need integer iat and exp, at most MAX_LIFETIME apart")
        return self._serialize(claims, typ)

    def sign_set(self, claims: Mapping[str, Any]) -> str:
        """A Security Event Token (RFC 8417, `typ` secevent+jwt). SETs carry no `exp` (SSF 1.0 forbids it), so
        the lifetime check of `sign` does not apply; instead a SET is signed when it is sent (a push) or handed
        out (a poll), never ahead, so the receiver verifies it while its key is certainly published."""
        if not isinstance(claims.get("iat"), int) or "exp" in claims:
            raise ValueError("a SET needs an integer iat and no exp")
        return self._serialize(claims, "secevent+jwt")

    def _serialize(self, claims: Mapping[str, Any], typ: str) -> str:
        stored, key = self._key()
        header = {"alg": stored.algorithm, "kid": stored.kid, "typ": typ}
        return (
            JsonWebSignature([stored.algorithm])
            .serialize_compact(header, orjson.dumps(dict(claims)), key)
            .decode()
        )

    def jwks(self) -> dict[str, Any]:
        """The JWK set to publish: active keys and those retired less than RETIRED_PUBLISHED ago. Makes the first
        key if there is none yet, so a verifier that fetches the JWKS first finds the key that will sign. Read
        at most once per KEY_CACHE seconds: anyone may ask for it, and it changes only with a rotation."""
        now = self.clock.now()
        with self._lock:
            if self._published is not None and now.timestamp() - self._published[0] < KEY_CACHE:
                return self._published[1]
        self._key()
        with self.db.read() as conn:
            keys = signing_keys.published(conn, now - timedelta(seconds=RETIRED_PUBLISHED))
        jwks = {"keys": [k.public_jwk for k in keys]}
        with self._lock:
            self._published = (now.timestamp(), jwks)
        return jwks

    def listing(self) -> list[dict[str, Any]]:
        """Every key with its dates and whether it signs now / is still published (`scimjit keys list`)."""
        now = self.clock.now()
        until = to_micros(now - timedelta(seconds=RETIRED_PUBLISHED))
        with self.db.read() as conn:
            keys = signing_keys.every(conn)
            current = signing_keys.signing(conn, now, PUBLISH_LEAD)
        active = current.kid if current is not None else None
        return [
            {
                "kid": k.kid,
                "algorithm": k.algorithm,
                "createdAt": format_micros(k.created_at),
                "retiredAt": format_micros(k.retired_at) if k.retired_at is not None else None,
                "signs": k.kid == active,
                "published": k.retired_at is None or k.retired_at > until,
            }
            for k in keys
        ]

    def rotate(self, *, immediately: bool = False) -> tuple[StoredKey, int]:
        """Make the next key and retire the older ones when it takes over: after PUBLISH_LEAD (published first,
        see the module docstring), or at once with `immediately` (verifiers with a cached JWKS then refetch
        it on the unknown kid). Returns the new key and how many were retired."""
        now = self.clock.now()
        takeover = now if immediately else now + timedelta(seconds=PUBLISH_LEAD)
        with self.db.write() as conn:
            while True:
                fresh = new_key(signing_keys.next_generation(conn), to_micros(now))
                if signing_keys.insert(conn, fresh):
                    break
            retired = signing_keys.retire_older(conn, fresh.generation, takeover)
        with self._lock:
            self._current = self._published = None
        return fresh, retired

    def _key(self) -> tuple[StoredKey, Key]:
        now = self.clock.now().timestamp()
        with self._lock:
            if self._current is not None and now - self._current[0] < KEY_CACHE:
                return self._current[1], self._current[2]
        with self.db.read() as conn:
            stored = signing_keys.signing(conn, self.clock.now(), PUBLISH_LEAD)
        if stored is None:  # the first use anywhere: make generation 1 (a racing process may win; fine)
            with self.db.write() as conn:
                signing_keys.insert(conn, new_key(1, to_micros(self.clock.now())))
                stored = signing_keys.signing(conn, self.clock.now(), PUBLISH_LEAD)
            assert stored is not None
        key = JsonWebKey.import_key(stored.private_pem)
        with self._lock:
            self._current = (now, stored, key)
        return stored, key
