"""The token's digest is computed once per request: `http.auth` hashes it for the rate limiter's
`KnownTokens` and hands the same digest to `TokenStore.verify`, whose cache it keys."""

from __future__ import annotations

from scimjit.clock import FrozenClock
from scimjit.http.ratelimit import KnownTokens
from scimjit.store.tokens import TokenStore, token_digest


def test_verify_with_the_callers_digest_is_verify_without_it(db):
    store = TokenStore(db, FrozenClock())
    token = store.create("digest-admin", ["admin"])
    assert KnownTokens.key(token) == token_digest(token)  # one digest for both caches
    with_digest = store.verify(token, digest=token_digest(token))
    assert with_digest is not None and with_digest.name == "digest-admin"
    assert store.verify(token) is with_digest  # the same cache entry
    wrong = token[:-1] + ("x" if token[-1] != "x" else "y")
    assert store.verify(wrong, digest=token_digest(wrong)) is None
