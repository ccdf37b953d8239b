"""The login match compares claims with userName and emails by their PRECIS key (RFC 8265), as SCIM does: a
claim spelling "kate" with U+212A KELVIN SIGN does not sign in as kate; it is refused as an unknown user, and
the audit row says why. Real local issuer and webhook, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging

import pytest
import sqlalchemy as sa

from scimjit.jiterrors import JitError
from scimjit.store.tables import audit_log
from tests.jit_helpers import LocalIssuer, WebhookReceiver, add_group, add_user, engine_for, wiki_config

KELVIN_KATE = "\u212aate"
FULLWIDTH_KATE = "\uff2b\uff41\uff54\uff45"


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@pytest.fixture
def hook():
    with WebhookReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def kate(db):
    user = add_user(db, "kate", emails=["kate@example.com"])
    add_group(db, "wiki-users", [user])
    return user


def engine(db, clock, issuer, hook, match=None):
    raw = wiki_config(issuer.url, hook.url)
    if match:
        raw["applications"][0]["match"] = match
    return engine_for(db, clock, raw)


def login(wiki, issuer, clock, **claims):
    token = issuer.token(clock.now().timestamp(), **claims)
    return asyncio.run(wiki.login("wiki", token, caller="wiki-token"))


def refusals(db):
    with db.read() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.action == "login.refused")).all()
    return [r.details for r in rows]


def test_a_kelvin_sign_username_claim_does_not_sign_in_as_kate(db, clock, issuer, hook, kate, caplog):
    wiki = engine(db, clock, issuer, hook)
    with caplog.at_level(logging.INFO), pytest.raises(JitError) as excinfo:
        login(wiki, issuer, clock, preferred_username=KELVIN_KATE)
    assert (excinfo.value.status, excinfo.value.reason) == (403, "unknown_user")
    assert "U+212A KELVIN SIGN" in excinfo.value.detail
    assert hook.requests == []  # no account was created for kate
    [details] = refusals(db)
    assert details["reason"] == "unknown_user" and "U+212A KELVIN SIGN" in details["detail"]
    assert any("refused by PRECIS" in r.getMessage() and "U+212A" in r.getMessage() for r in caplog.records)


def test_a_fullwidth_username_claim_is_kate(db, clock, issuer, hook, kate):
    wiki = engine(db, clock, issuer, hook)
    result = login(wiki, issuer, clock, preferred_username=FULLWIDTH_KATE)
    assert result.status_code == 200 and result.body["user"]["id"] == kate


def test_a_kelvin_sign_email_claim_does_not_sign_in_as_kate(db, clock, issuer, hook, kate):
    wiki = engine(db, clock, issuer, hook, match={"claim": "email", "attribute": "emails.value"})
    with pytest.raises(JitError) as excinfo:
        login(wiki, issuer, clock, email=f"{KELVIN_KATE}@example.com", email_verified=True)
    assert (excinfo.value.status, excinfo.value.reason) == (403, "unknown_user")
    assert "U+212A" in excinfo.value.detail
    assert hook.requests == []
    result = login(wiki, issuer, clock, email="KATE@example.com", email_verified=True)  # case does not matter
    assert result.body["user"]["id"] == kate
