"""SAML sign-ins at the login hook, against a migrated database (SQLite and PostgreSQL), a real webhook
receiver and Responses signed in the test by a key the test makes; the clock is frozen (FrozenClock).

Each attack of the classic list is a test: unsigned, signed by another key, signature wrapping (an injected
assertion beside or around the signed one), wrong audience / recipient / destination / issuer, expired, not
yet valid, replayed, a comment inside the NameID, oversized input, a DTD (XXE)."""

from __future__ import annotations

import asyncio
import base64
import copy
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from lxml import etree

from scimjit.clock import to_micros
from scimjit.config import ConfigError, Settings
from scimjit.engine import JitEngine
from scimjit.jiterrors import JitError
from scimjit.store.tables import accounts, audit_log, used_once
from tests.jit_helpers import WebhookReceiver, add_group, add_user, engine_for
from tests.saml_helpers import (
    ACS_URL,
    DS,
    SAML,
    SAMLP,
    SP_ENTITY_ID,
    LocalSamlIdp,
    SamlKey,
    encode,
    saml_config,
)


@pytest.fixture(scope="module")
def idp() -> LocalSamlIdp:
    return LocalSamlIdp()


@pytest.fixture
def hook():
    with WebhookReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def metadata(tmp_path: Path, idp: LocalSamlIdp) -> str:
    path = tmp_path / "idp-metadata.xml"
    path.write_bytes(idp.metadata())
    return str(path)


@pytest.fixture
def directory(db):
    alice = add_user(db, "alice", emails=["alice@example.com"])
    mallory = add_user(db, "alice.evil.com")  # the attacker's own account at the IdP, in no group
    add_group(db, "wiki-users", [alice])
    add_group(db, "wiki-admins", [alice])
    return {"alice": alice, "mallory": mallory}


def make_engine(db, clock, metadata: str, hook, **kwargs) -> JitEngine:
    return engine_for(db, clock, tomllib.loads(saml_config(metadata, hook.url, **kwargs)))


@pytest.fixture
def wiki(db, clock, metadata, hook, directory) -> JitEngine:
    return make_engine(db, clock, metadata, hook)


def login(engine: JitEngine, response, in_response_to: str | None = "req-1"):
    saml = response if isinstance(response, str) else encode(response)
    return asyncio.run(engine.saml_login("wiki", saml, in_response_to=in_response_to, caller="wiki-token"))


def refused(engine: JitEngine, response, in_response_to: str | None = "req-1") -> JitError:
    with pytest.raises(JitError) as excinfo:
        login(engine, response, in_response_to)
    return excinfo.value


def assert_refused(engine, response, check: str, in_response_to: str | None = "req-1") -> None:
    err = refused(engine, response, in_response_to)
    assert (err.status, err.reason) == (401, "invalid_saml_response"), err.detail
    assert err.detail.startswith(f"{check}:"), err.detail


def account_count(db) -> int:
    with db.read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one()


# --- the valid path -------------------------------------------------------------------------------------


def test_first_login_creates_the_account_once(db, clock, idp, hook, wiki, directory):
    now = clock.now()
    first = login(wiki, idp.response(now))
    assert first.status_code == 200
    assert first.body["account"]["status"] == "created"
    assert first.body["user"]["userName"] == "alice" and first.body["roles"] == ["admin"]
    second = login(wiki, idp.response(now))  # a new assertion (new ID): the same account
    assert second.body["account"]["status"] == "existing"
    assert len(hook.of_type("account.create")) == 1 and account_count(db) == 1
    with db.read() as conn:
        actors = conn.execute(sa.select(audit_log.c.actor, audit_log.c.action)).all()
    assert ("saml:alice", "login.allowed") in actors


def test_signed_response_and_attribute_match(db, clock, idp, hook, metadata, directory):
    engine = make_engine(db, clock, metadata, hook, claim="mail", attribute="emails.value")
    response = idp.response(
        clock.now(), sign="response", name_id="opaque-1", attributes={"mail": "alice@example.com"}
    )
    assert login(engine, response).body["user"]["userName"] == "alice"


def test_unsolicited_response_only_when_allowed(db, clock, idp, hook, metadata, wiki):
    now = clock.now()
    assert_refused(wiki, idp.response(now, in_response_to=None), "in_response_to", in_response_to=None)
    open_app = make_engine(db, clock, metadata, hook, saml_extra="allow_unsolicited = true")
    assert login(open_app, idp.response(now, in_response_to=None), in_response_to=None).status_code == 200
    # a solicited response is bound to its request, allowed unsolicited or not
    assert_refused(
        open_app, idp.response(now, in_response_to="req-1"), "in_response_to", in_response_to="req-2"
    )
    assert_refused(open_app, idp.response(now, in_response_to="req-1"), "in_response_to", in_response_to=None)


def test_clock_skew_is_honoured(db, clock, idp, hook, metadata, directory):
    engine = make_engine(db, clock, metadata, hook, saml_extra='clock_skew = "2m"')
    issued = clock.now()
    response = idp.response(issued, not_on_or_after=issued + timedelta(minutes=5))
    clock.advance(minutes=6)  # past NotOnOrAfter, within the skew
    assert login(engine, response).status_code == 200
    clock.advance(minutes=2)
    assert_refused(engine, idp.response(issued, not_on_or_after=issued + timedelta(minutes=5)), "expired")


# --- the attacks ----------------------------------------------------------------------------------------


def test_unsigned_assertion_is_refused(db, clock, idp, wiki):
    assert_refused(wiki, idp.response(clock.now(), sign="none"), "signature")
    assert account_count(db) == 0


def test_signed_by_another_key_is_refused(db, clock, idp, wiki):
    assert_refused(wiki, idp.response(clock.now(), key=SamlKey("mallory")), "signature")
    assert_refused(wiki, idp.response(clock.now(), sign="response", key=SamlKey("mallory")), "signature")


def test_tampered_signed_assertion_is_refused(clock, idp, wiki):
    response = idp.response(clock.now())
    response.find(f".//{{{SAML}}}NameID").text = "mallory"
    assert_refused(wiki, response, "signature")


def test_wrapping_an_injected_assertion_beside_the_signed_one(db, clock, idp, wiki):
    now = clock.now()
    genuine = idp.response(now, name_id="alice.evil.com")  # what the attacker can get signed: their own login
    evil = idp.assertion(now, name_id="alice")
    genuine.find(f"{{{SAML}}}Assertion").addprevious(evil)  # read first by a naive SP
    assert_refused(wiki, genuine, "assertion")
    signed_response = idp.response(now, sign="response", name_id="alice.evil.com")
    signed_response.append(idp.assertion(now, name_id="alice"))
    err = refused(wiki, signed_response)
    assert err.reason == "invalid_saml_response" and account_count(db) == 0


def test_wrapping_the_signed_assertion_moved_inside_an_unsigned_one(db, clock, idp, wiki):
    now = clock.now()
    genuine = idp.response(now, name_id="alice.evil.com")
    signed = genuine.find(f"{{{SAML}}}Assertion")
    evil = idp.assertion(now, name_id="alice")
    signature = copy.deepcopy(signed.find(f"{{{DS}}}Signature"))
    evil.find(f"{{{SAML}}}Issuer").addnext(signature)  # the genuine signature, pointing at the genuine ID
    obj = etree.SubElement(signature, f"{{{DS}}}Object")
    genuine.remove(signed)
    obj.append(signed)  # the genuine assertion hidden inside, where the reference still finds it
    genuine.append(evil)
    assert_refused(wiki, genuine, "signature")
    # the same with the evil assertion taking the genuine ID: the reference is ambiguous, refused
    evil.set("ID", signed.get("ID"))
    assert_refused(wiki, genuine, "signature")
    assert account_count(db) == 0


def test_wrapping_the_signed_response_moved_into_extensions(db, clock, idp, wiki):
    now = clock.now()
    genuine = idp.response(now, sign="response", name_id="alice.evil.com")
    outer = idp.response(now, sign="none", name_id="alice")
    extensions = etree.Element(f"{{{SAMLP}}}Extensions")
    outer.find(f"{{{SAML}}}Issuer").addnext(extensions)
    extensions.append(genuine)
    assert_refused(wiki, outer, "signature")
    assert account_count(db) == 0


def test_wrong_audience_recipient_destination_issuer(clock, idp, wiki):
    now = clock.now()
    assert_refused(wiki, idp.response(now, audience="https://crm.example.com/saml"), "audience")
    assert_refused(wiki, idp.response(now, recipient="https://crm.example.com/saml/acs"), "recipient")
    assert_refused(wiki, idp.response(now, destination="https://crm.example.com/saml/acs"), "destination")
    assert_refused(wiki, idp.response(now, issuer="https://other-idp.example.com"), "issuer")
    assert_refused(wiki, idp.response(now, status="urn:oasis:names:tc:SAML:2.0:status:Requester"), "status")


def test_expired_and_not_yet_valid(clock, idp, wiki):
    now = clock.now()
    old = idp.response(now - timedelta(minutes=30))  # valid for 5 minutes, half an hour ago
    assert_refused(wiki, old, "expired")
    future = idp.response(
        now, not_before=now + timedelta(minutes=10), not_on_or_after=now + timedelta(minutes=20)
    )
    assert_refused(wiki, future, "not_yet_valid")


def test_replayed_assertion_is_refused(db, clock, idp, wiki):
    response = idp.response(clock.now())
    assert login(wiki, response).status_code == 200
    assert_refused(wiki, response, "replayed")
    with db.read() as conn:
        kept = conn.execute(sa.select(used_once.c.purpose, used_once.c.expires_at)).all()
    assert [p for p, _ in kept] == ["saml_assertion"]
    # kept until NotOnOrAfter (5 minutes) + the [jit] clock_skew (60 s), and no longer
    assert kept[0][1] == to_micros(clock.now() + timedelta(minutes=6))


def test_comment_inside_the_name_id_cannot_truncate_it(db, clock, idp, wiki, directory):
    now = clock.now()
    assertion = idp.key.sign(idp.assertion(now, name_id="alice.evil.com"))  # signed for the attacker
    name_id = assertion.find(f".//{{{SAML}}}NameID")
    name_id.text = "alice"
    comment = etree.Comment("")
    name_id.append(comment)
    comment.tail = ".evil.com"  # alice<!---->.evil.com: still verifies (comments are not signed)
    err = refused(wiki, idp.response(now, assertion=assertion, sign="none"))  # signed above
    assert err.status == 403 and err.reason == "not_entitled"  # read whole: the attacker's own user
    with db.read() as conn:
        assert conn.execute(sa.select(accounts.c.user_id)).all() == []


def test_oversized_and_malformed_input(clock, idp, wiki):
    huge = base64.b64encode(b"<x>" + b"a" * 200_000 + b"</x>").decode()
    err = refused(wiki, huge)
    assert (err.status, err.reason) == (413, "too_large")
    assert_refused(wiki, "not base64 at all!", "encoding")
    assert_refused(wiki, base64.b64encode(b"<unclosed").decode(), "xml")
    assert_refused(wiki, base64.b64encode(b"<a/>").decode(), "xml")


def test_dtd_and_external_entities_are_refused(clock, idp, wiki, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("alice")
    body = etree.tostring(idp.response(clock.now())).decode()
    xxe = f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>' + body.replace(
        ">alice<", ">&x;<", 1
    )
    assert_refused(wiki, base64.b64encode(xxe.encode()).decode(), "xml")
    laughs = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]>' + body
    assert_refused(wiki, base64.b64encode(laughs.encode()).decode(), "xml")


def test_refusals_are_audited_and_oidc_is_refused_for_a_saml_only_app(db, clock, idp, wiki):
    assert_refused(wiki, idp.response(clock.now(), audience="https://crm.example.com/saml"), "audience")
    with db.read() as conn:
        rows = conn.execute(sa.select(audit_log.c.action, audit_log.c.details)).all()
    assert rows[-1].action == "login.refused" and rows[-1].details["reason"] == "invalid_saml_response"
    with pytest.raises(JitError) as excinfo:
        asyncio.run(wiki.login("wiki", "a.b.c"))
    assert (excinfo.value.status, excinfo.value.reason) == (400, "oidc_not_configured")


def test_key_rollover_and_encryption_keys_in_metadata(db, clock, idp, hook, tmp_path, directory):
    """Metadata with an encryption-only key (ignored), the old signing key and the new one: a Response signed
    by either signing key is accepted, one signed with the encryption key is not."""
    new, encryption = SamlKey("new signing key"), SamlKey("encryption key")
    root = etree.fromstring(idp.metadata())
    descriptor = root.find("{urn:oasis:names:tc:SAML:2.0:metadata}IDPSSODescriptor")
    template = descriptor.find("{urn:oasis:names:tc:SAML:2.0:metadata}KeyDescriptor")
    for key, use in ((new, None), (encryption, "encryption")):
        extra = copy.deepcopy(template)
        del extra.attrib["use"]
        if use:
            extra.set("use", use)
        extra.find(f".//{{{DS}}}X509Certificate").text = key.cert_b64
        template.addnext(extra)
    path = tmp_path / "rollover.xml"
    path.write_bytes(etree.tostring(root))
    engine = make_engine(db, clock, str(path), hook)
    subjects = [c["subject"] for c in engine.apps["wiki"].summary()["saml"]["certificates"]]
    assert sorted(subjects) == ["CN=new signing key", "CN=test idp"]
    assert login(engine, idp.response(clock.now(), key=new)).status_code == 200
    assert login(engine, idp.response(clock.now())).status_code == 200
    assert_refused(engine, idp.response(clock.now(), key=encryption), "signature")


# --- configuration --------------------------------------------------------------------------------------


def test_inline_idp_and_config_errors(db, clock, idp, hook, metadata, tmp_path):
    inline = saml_config(metadata, hook.url).replace(
        f'idp_metadata = "{metadata}"',
        f'idp_entity_id = "{idp.entity_id}"\nidp_certificates = ["""{idp.key.cert_pem}"""]',
    )
    engine = engine_for(db, clock, tomllib.loads(inline))
    saml = engine.apps["wiki"].summary()["saml"]
    assert saml["idpEntityId"] == idp.entity_id and saml["entityId"] == SP_ENTITY_ID
    assert saml["acsUrl"] == ACS_URL and saml["certificates"][0]["subject"] == "CN=test idp"

    def error(text: str) -> str:
        with pytest.raises(ConfigError) as excinfo:
            JitEngine(Settings.load(environ={}, document=tomllib.loads(text)), db, clock)
        return str(excinfo.value)

    assert "cannot be read" in error(saml_config(str(tmp_path / "missing.xml"), hook.url))
    assert "must be an https:// URL" in error(saml_config("http://idp.example.com/metadata", hook.url))
    (tmp_path / "bad.xml").write_text(
        "<md:EntityDescriptor xmlns:md='urn:oasis:names:tc:SAML:2.0:metadata'/>"
    )
    assert "entityID" in error(saml_config(str(tmp_path / "bad.xml"), hook.url))
    both = saml_config(metadata, hook.url, saml_extra=f'idp_entity_id = "{idp.entity_id}"')
    assert "not both" in error(both)
    no_idp = saml_config(metadata, hook.url).replace(f'idp_metadata = "{metadata}"', "")
    assert "idp_metadata" in error(no_idp)
    bad_pem = inline.replace(idp.key.cert_pem, "not a certificate")
    assert "PEM" in error(bad_pem)
    neither = saml_config(metadata, hook.url).split("[applications.saml]")[0] + (
        f'[applications.connector]\ntype = "webhook"\nurl = "{hook.url}"\nsecret = "s"\n'
    )
    assert "issuer" in error(neither)


def test_an_attribute_named_email_needs_no_email_verified(db, clock, idp, hook, metadata, directory):
    """`require_email_verified` is an ID-token rule (its default follows a match on the `email` claim); a SAML
    attribute called `email` is the IdP's signed statement and has no such claim, so it still signs in."""
    engine = make_engine(db, clock, metadata, hook, claim="email", attribute="emails.value")
    assert engine.apps["wiki"].require_email_verified  # the default for an `email` match
    response = idp.response(clock.now(), name_id="opaque-2", attributes={"email": "alice@example.com"})
    assert login(engine, response).body["user"]["userName"] == "alice"


def test_metadata_from_a_url_is_fetched_once_at_start(db, clock, idp, hook, directory):
    """`idp_metadata` may be the IdP's metadata URL: fetched when the applications are built (a real local HTTP
    server here), then sign-ins verify against its certificate. A redirect is not followed and an error answer
    or an unreachable URL stops the start with a line naming the key."""
    from tests.jit_helpers import _QuietHandler, _serve

    fetched: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            if self.path == "/metadata":
                body, status = idp.metadata(), 200
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/metadata")
                self.end_headers()
                return
            else:
                body, status = b"gone", 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with _serve(Handler) as base:
        engine = make_engine(db, clock, f"{base}/metadata", hook)
        assert fetched == ["/metadata"]
        assert login(engine, idp.response(clock.now())).body["account"]["status"] == "created"
        assert fetched == ["/metadata"]  # a sign-in does not fetch it again
        for path, expected in (("/moved", "answered HTTP 302"), ("/missing", "answered HTTP 404")):
            with pytest.raises(ConfigError) as excinfo:
                make_engine(db, clock, f"{base}{path}", hook)
            assert "saml.idp_metadata" in str(excinfo.value) and expected in str(excinfo.value)
    with pytest.raises(ConfigError) as excinfo:  # the server is gone now
        make_engine(db, clock, f"{base}/metadata", hook)
    assert "cannot be fetched" in str(excinfo.value)
