"""scimjit's signing keys: the first key is made once (also by racing processes), results verify with the
published JWKS, a rotation signs with the new key while the old one stays published for RETIRED_PUBLISHED, and
`scimjit keys list|rotate` shows and does it. On both databases."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import KeySet

from scimjit.cli import main
from scimjit.clock import FrozenClock
from scimjit.config import Settings
from scimjit.delivery.signing import KEY_CACHE, PUBLISH_LEAD, RETIRED_PUBLISHED, Signer
from scimjit.http.app import create_app
from scimjit.services import Services
from scimjit.store.db import Database
from scimjit.store.tables import signing_keys
from tests.live_server import serve


def claims(clock: FrozenClock, **extra: object) -> dict[str, object]:
    iat = int(clock.now().timestamp())
    return {"iss": "https://scim.example.com", "aud": "wiki", "iat": iat, "exp": iat + 60, **extra}


def verify(token: str, jwks: dict[str, object]) -> jwt.Token:
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])


def key_count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(signing_keys)).scalar_one())


def test_the_first_key_is_made_once_even_by_racing_signers(db: Database, clock: FrozenClock) -> None:
    signers = [Signer(db, clock) for _ in range(4)]  # four processes, one database
    tokens: list[str] = []
    barrier = threading.Barrier(len(signers))

    def sign(signer: Signer) -> None:
        barrier.wait()
        tokens.append(signer.sign(claims(clock, sub="u1"), typ="signin-result+jwt"))

    threads = [threading.Thread(target=sign, args=(s,)) for s in signers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert key_count(db) == 1
    jwks = signers[0].jwks()
    (published,) = jwks["keys"]
    assert published["kty"] == "EC" and published["alg"] == "ES256" and published["use"] == "sig"
    assert "d" not in published  # never the private half
    for token in tokens:
        verified = verify(token, jwks)
        assert verified.header == {"alg": "ES256", "kid": published["kid"], "typ": "signin-result+jwt"}
        assert verified.claims["sub"] == "u1"


def test_rotation_publishes_the_new_key_first_then_signs_with_it_and_keeps_the_old_one_published(
    db: Database, clock: FrozenClock
) -> None:
    signer, other_process = Signer(db, clock), Signer(db, clock)
    before = signer.sign(claims(clock), typ="x")
    old_kid = verify(before, signer.jwks()).header["kid"]
    other_process.sign(claims(clock), typ="x")  # it has read (and caches) the first key
    new, retired = signer.rotate()
    assert retired == 1
    jwks = signer.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [new.kid, old_kid]  # published at once...
    assert verify(signer.sign(claims(clock), typ="x"), jwks).header["kid"] == old_kid  # ...signing later
    clock.advance(PUBLISH_LEAD - 1)
    assert verify(other_process.sign(claims(clock), typ="x"), jwks).header["kid"] == old_kid
    # every cached JWKS (in a process, in an HTTP cache) has the new key by now: it takes over everywhere
    clock.advance(1)
    assert verify(signer.sign(claims(clock), typ="x"), jwks).header["kid"] == new.kid
    clock.advance(KEY_CACHE)
    assert verify(other_process.sign(claims(clock), typ="x"), jwks).header["kid"] == new.kid
    assert [k["kid"] for k in signer.jwks()["keys"]] == [new.kid, old_kid]  # what it signed still verifies
    clock.advance(RETIRED_PUBLISHED)  # what the old key signed has long expired: it is no longer published
    assert [k["kid"] for k in signer.jwks()["keys"]] == [new.kid]
    assert key_count(db) == 2


def test_an_immediate_rotation_signs_with_the_new_key_at_once(db: Database, clock: FrozenClock) -> None:
    signer = Signer(db, clock)
    old_kid = verify(signer.sign(claims(clock), typ="x"), signer.jwks()).header["kid"]
    new, _ = signer.rotate(immediately=True)
    jwks = signer.jwks()
    assert verify(signer.sign(claims(clock), typ="x"), jwks).header["kid"] == new.kid
    assert [k["kid"] for k in jwks["keys"]] == [new.kid, old_kid]


def test_sign_refuses_claims_that_would_outlive_the_published_key(db: Database, clock: FrozenClock) -> None:
    signer = Signer(db, clock)
    iat = int(clock.now().timestamp())
    for bad in ({"iat": iat}, {"iat": iat, "exp": iat + 7200}, {"iat": iat, "exp": iat}, {"exp": iat + 60}):
        with pytest.raises(ValueError):
            signer.sign(bad, typ="x")


def test_the_jwks_is_served_at_both_addresses_and_cacheable(db: Database) -> None:
    settings = Settings.load(environ={}, database_url=db.url, document={})
    clock = FrozenClock(datetime.now(UTC))
    with serve(create_app(services=Services.build(settings, db=db, clock=clock))) as url:
        first = httpx.get(f"{url}/jit/v1/jwks.json")
        second = httpx.get(f"{url}/.well-known/jwks.json")
    for r in (first, second):
        assert r.status_code == 200 and r.headers["content-type"] == "application/jwk-set+json"
        assert r.headers["cache-control"] == "public, max-age=300"
    assert first.json() == second.json() and len(first.json()["keys"]) == 1
    assert key_count(db) == 1


def test_keys_list_and_rotate_on_the_cli(
    db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCIMJIT_CONFIG", raising=False)
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", db.url)
    assert main(["keys", "list"]) == 0
    assert "no signing key yet" in capsys.readouterr().out
    assert main(["keys", "rotate", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["retired"] == 0 and first["algorithm"] == "ES256"
    assert main(["keys", "rotate"]) == 0
    out = capsys.readouterr().out
    assert "signs in 6 minutes (published first); 1 older key(s) retired then" in out
    assert first["kid"] not in out
    assert main(["keys", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["signs"], r["published"], r["retiredAt"] is None) for r in rows] == [
        (False, True, True),  # the new key: published, not signing yet
        (True, True, False),  # the first: signs until its retirement, 6 minutes from now
    ]
    assert rows[1]["kid"] == first["kid"]
    assert main(["keys", "rotate", "--now", "--json"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert (third["retired"], third["immediately"]) == (2, True)  # the first was still signing
    assert main(["keys", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["kid"] == third["kid"]
    assert [r["signs"] for r in rows] == [True, False, False]
    assert main(["keys", "list"]) == 0
    header, _rule, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["kid", "algorithm", "createdAt", "retiredAt", "signs", "published"]
    assert len(lines) == 3
