"""ID token verification against a real (local) issuer serving discovery and JWKS over HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json

import pytest

from scimjit.clock import FrozenClock
from scimjit.config import JitSettings
from scimjit.entitlement.apps import load_applications
from scimjit.jiterrors import JitError
from scimjit.provisioning.oidc import OidcVerifier
from tests.jit_helpers import LocalIssuer, wiki_config


@pytest.fixture
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@pytest.fixture
def clock():
    return FrozenClock()


def make(issuer, clock, extra: str = "", **settings):
    app = load_applications(wiki_config(issuer.url, "http://127.0.0.1:1/events", extra=extra))["wiki"]
    return app, OidcVerifier(JitSettings(**settings), clock)


def verify(verifier, app, token):
    return asyncio.run(verifier.verify(app, token))


def reason(verifier, app, token) -> str:
    with pytest.raises(JitError) as excinfo:
        verify(verifier, app, token)
    return excinfo.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_valid_token_verifies_and_keys_are_cached(issuer, clock):
    app, verifier = make(issuer, clock)
    now = clock.now().timestamp()
    claims = verify(verifier, app, issuer.token(now, preferred_username="alice"))
    assert claims["preferred_username"] == "alice"
    for _ in range(5):
        verify(verifier, app, issuer.token(now, preferred_username="alice"))
    assert issuer.jwks_fetches == 1
    assert issuer.discovery_fetches == 1


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256"])
def test_rsa_algorithms(issuer, clock, alg):
    app, verifier = make(issuer, clock)
    assert verify(verifier, app, issuer.token(clock.now().timestamp(), alg=alg))["sub"] == "sub-1"


def test_ec_key(issuer, clock):
    key = LocalIssuer.new_key("EC", "P-256")
    issuer.keys.append(key)
    app, verifier = make(issuer, clock)
    assert (
        verify(verifier, app, issuer.token(clock.now().timestamp(), alg="ES256", key=key))["sub"] == "sub-1"
    )


def test_claims_are_checked_with_reason_codes(issuer, clock):
    app, verifier = make(issuer, clock, clock_skew=60)
    now = clock.now().timestamp()
    assert reason(verifier, app, issuer.token(now, aud="other")) == "wrong_audience"
    assert reason(verifier, app, issuer.token(now, aud=["wiki", "other"])) == "wrong_audience"  # no azp
    assert reason(verifier, app, issuer.token(now, aud=["wiki", "other"], azp="other")) == "wrong_audience"
    assert verify(verifier, app, issuer.token(now, aud=["wiki", "other"], azp="wiki"))["azp"] == "wiki"
    assert reason(verifier, app, issuer.token(now, iss="http://127.0.0.1:1")) == "wrong_issuer"
    assert reason(verifier, app, issuer.token(now - 400, lifetime=300)) == "expired"
    assert verify(verifier, app, issuer.token(now - 330, lifetime=300))  # within the 60 s skew
    assert reason(verifier, app, issuer.token(now, nbf=int(now) + 120)) == "not_yet_valid"
    assert reason(verifier, app, issuer.token(now + 120)) == "not_yet_valid"  # iat in the future
    assert reason(verifier, app, issuer.token(now, exp=None)) == "invalid_token"
    assert reason(verifier, app, issuer.token(now, iat=None)) == "invalid_token"
    assert reason(verifier, app, "not.a-token") == "invalid_token"
    assert reason(verifier, app, "abc") == "invalid_token"


def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(issuer, clock):
    app, verifier = make(issuer, clock)
    forger = LocalIssuer.new_key()
    token = issuer.token(clock.now().timestamp(), key=forger, header={"kid": issuer.keys[0].kid})
    assert reason(verifier, app, token) == "invalid_signature"
    # tampering with the payload of a genuine token breaks the signature too
    header, _payload, sig = issuer.token(clock.now().timestamp()).split(".")
    forged = b64(
        json.dumps({"iss": issuer.url, "aud": "wiki", "sub": "root", "iat": 0, "exp": 2**40}).encode()
    )
    assert reason(verifier, app, f"{header}.{forged}.{sig}") == "invalid_signature"


def test_alg_none_and_hmac_with_the_public_key_are_refused(issuer, clock):
    app, verifier = make(issuer, clock)
    now = int(clock.now().timestamp())
    payload = b64(
        json.dumps({"iss": issuer.url, "aud": "wiki", "sub": "x", "iat": now, "exp": now + 60}).encode()
    )
    none = b64(json.dumps({"alg": "none"}).encode())
    assert reason(verifier, app, f"{none}.{payload}.") == "unsupported_algorithm"
    # the classic key-confusion forgery: HS256 with the issuer's public key (PEM) as the HMAC secret
    pem = issuer.keys[0].as_pem(is_private=False)
    header = b64(json.dumps({"alg": "HS256", "kid": issuer.keys[0].kid}).encode())
    sig = b64(hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert reason(verifier, app, f"{header}.{payload}.{sig}") == "unsupported_algorithm"


def test_the_allowlist_is_per_application(issuer, clock):
    app, verifier = make(issuer, clock, extra='algorithms = ["RS512"]')
    assert (
        reason(verifier, app, issuer.token(clock.now().timestamp(), alg="RS256")) == "unsupported_algorithm"
    )
    assert verify(verifier, app, issuer.token(clock.now().timestamp(), alg="RS512"))


def test_an_rsa_token_cannot_use_an_ec_key(issuer, clock):
    ec = LocalIssuer.new_key("EC", "P-256")
    issuer.keys = [ec]
    app, verifier = make(issuer, clock)
    token = issuer.token(clock.now().timestamp(), key=LocalIssuer.new_key(), header={"kid": ec.kid})
    assert reason(verifier, app, token) == "unknown_key"


def test_key_rotation_refetches_on_unknown_kid_with_a_floor(issuer, clock):
    app, verifier = make(issuer, clock, jwks_min_refresh=30)
    now = clock.now().timestamp()
    verify(verifier, app, issuer.token(now))
    assert issuer.jwks_fetches == 1
    new = issuer.rotate()
    clock.advance(31)
    now = clock.now().timestamp()
    assert verify(verifier, app, issuer.token(now, key=new))  # unknown kid -> one refetch -> found
    assert issuer.jwks_fetches == 2
    # a storm of unknown kids within the floor causes no further fetches
    for _ in range(20):
        stranger = LocalIssuer.new_key()
        assert reason(verifier, app, issuer.token(now, key=stranger)) == "unknown_key"
    assert issuer.jwks_fetches == 2
    clock.advance(31)
    assert (
        reason(verifier, app, issuer.token(clock.now().timestamp(), key=LocalIssuer.new_key()))
        == "unknown_key"
    )
    assert issuer.jwks_fetches == 3


def test_a_key_the_issuer_stops_publishing_stops_verifying_at_the_next_fetch(issuer, clock):
    """The key a kid found is remembered (`_IssuerKeys.chosen`) only as long as the set it came from."""
    app, verifier = make(issuer, clock, jwks_max_age=60)
    old = issuer.keys[0]
    for _ in range(3):  # found once, then remembered
        assert verify(verifier, app, issuer.token(clock.now().timestamp(), key=old))
    new = issuer.rotate()
    issuer.keys.remove(old)  # the issuer retires the old key
    clock.advance(61)  # the set is stale: the next login fetches it again
    now = clock.now().timestamp()
    assert verify(verifier, app, issuer.token(now, key=new))
    assert issuer.jwks_fetches == 2
    assert reason(verifier, app, issuer.token(now, key=old)) == "unknown_key"


def test_an_unreachable_issuer_is_503_but_cached_keys_keep_working(issuer, clock):
    app, verifier = make(issuer, clock, jwks_max_age=3600)
    issuer.down = True
    with pytest.raises(JitError) as excinfo:
        verify(verifier, app, issuer.token(clock.now().timestamp()))
    assert (excinfo.value.status, excinfo.value.reason) == (503, "issuer_unavailable")
    issuer.down = False
    clock.advance(60)
    assert verify(verifier, app, issuer.token(clock.now().timestamp()))
    issuer.down = True
    clock.advance(3600)  # keys are stale and the refresh fails: the cached keys still verify
    assert verify(verifier, app, issuer.token(clock.now().timestamp()))


def test_concurrent_verifications_share_one_fetch(issuer, clock):
    app, verifier = make(issuer, clock)
    now = clock.now().timestamp()

    async def many():
        return await asyncio.gather(*(verifier.verify(app, issuer.token(now)) for _ in range(10)))

    assert len(asyncio.run(many())) == 10
    assert issuer.jwks_fetches == 1


def test_a_down_issuer_is_asked_once_per_backoff_and_answers_503_with_retry_after(issuer, clock):
    """Issue 11 §3: while the issuer was down, 40 verifications made 40 discovery fetches and answered 401."""
    app, verifier = make(issuer, clock)  # the defaults: issuer_retry_after 30s
    issuer.down = True
    token = issuer.token(clock.now().timestamp())
    for _ in range(40):
        with pytest.raises(JitError) as excinfo:
            verify(verifier, app, token)
        assert (excinfo.value.status, excinfo.value.reason) == (503, "issuer_unavailable")
    assert issuer.requests == 1
    assert excinfo.value.headers["Retry-After"] == "30"
    clock.advance(20)
    with pytest.raises(JitError) as excinfo:
        verify(verifier, app, token)
    assert excinfo.value.headers["Retry-After"] == "10" and issuer.requests == 1
    clock.advance(10)  # the backoff is over: one more try, still down
    with pytest.raises(JitError):
        verify(verifier, app, issuer.token(clock.now().timestamp()))
    assert issuer.requests == 2
    issuer.down = False
    clock.advance(30)
    assert verify(verifier, app, issuer.token(clock.now().timestamp()))
    assert issuer.requests == 4  # discovery + JWKS, then cached again


def test_the_discovery_document_shares_the_cache_and_the_backoff(issuer, clock):
    app, verifier = make(issuer, clock)
    issuer.down = True
    for _ in range(10):
        with pytest.raises(JitError) as excinfo:
            asyncio.run(verifier.discovery(app.issuer))
        assert excinfo.value.reason == "issuer_unavailable"
    assert issuer.requests == 1
    issuer.down = False
    clock.advance(30)
    assert asyncio.run(verifier.discovery(app.issuer))["jwks_uri"] == issuer.url + "/jwks"
    verify(verifier, app, issuer.token(clock.now().timestamp()))
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)


def test_the_accepted_lifetime_is_bounded(issuer, clock):
    """Issue 11 §3: tokens with iat in 1970 or exp in the year 10^22 were accepted when the issuer signed them."""
    app, verifier = make(issuer, clock)  # the defaults: max_token_age 4h, clock_skew 60s
    now = clock.now().timestamp()
    assert reason(verifier, app, issuer.token(0, exp=10**20)) == "too_old"  # iat in 1970
    assert reason(verifier, app, issuer.token(now, exp=10**20)) == "lifetime_too_long"  # exp in 10^22 AD
    assert reason(verifier, app, issuer.token(now - 5 * 3600, lifetime=6 * 3600)) == "too_old"
    assert reason(verifier, app, issuer.token(now, lifetime=4 * 3600 + 1)) == "lifetime_too_long"
    assert verify(verifier, app, issuer.token(now - 4 * 3600 + 10, lifetime=4 * 3600))  # at the bound
    assert reason(verifier, app, issuer.token(now + 120)) == "not_yet_valid"  # iat in the future
