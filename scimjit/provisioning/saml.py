"""SAML 2.0 Response verification for the login hook (`POST /jit/v1/logins` with `saml_response`).

The XML signature is checked by **signxml** (`XMLVerifier`): a maintained, pure-Python implementation of XML
Signature on lxml and cryptography (no xmlsec1 binary to ship), SHA-1 refused by default, and, the reason it
was chosen, it returns the element the signature actually covers (`signed_xml`). That element is the only
one read afterwards: every field of the assertion comes from it, never from the document that was posted,
which is the standard defence against XML signature wrapping (a signed assertion moved aside and an unsigned
one put where a naive reader looks). On top of that the shape is strict: one Response root, exactly one
Assertion in it, the signature a direct child of the element it signs and referring to that element's own ID.

Then the checks of SAML core and the Web Browser SSO profile (saml-profiles §4.1.4.3), each refusal a
`401 invalid_saml_response` whose detail names the check:

- the signature is on the Response or on the Assertion, by a key of the IdP's certificates (metadata);
- Status is Success; the Response's Destination, when present, is the application's `acs_url`;
- Issuer (of the Assertion, and of the Response when present) is the IdP's entity id;
- a bearer SubjectConfirmation whose Recipient is `acs_url`, NotOnOrAfter in the future (and InResponseTo
  equal to the request's `in_response_to`; a response with none is accepted only if `allow_unsolicited`);
- Conditions NotBefore/NotOnOrAfter with `clock_skew` against the injectable clock, and every
  AudienceRestriction names the application's `entity_id`;
- the assertion's ID is claimed once in `used_once` (purpose `saml_assertion`) until it would expire
  anyway: a replay is refused.

The NameID and attribute values are read as the whole text of their element, and an element whose text is
split by a comment or holds markup is refused: `alice@example.com<!---->.evil.com` is the classic exploit of
readers that take the first text node (the comment is outside what exclusive canonicalization signs).
Input is bounded (`MAX_SAML_RESPONSE_BYTES`) and parsed by the hardened parser (no DTD, no entities).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.exceptions import InvalidSignature, SignXMLException

from scimjit.clock import Clock
from scimjit.config import JitSettings
from scimjit.entitlement.apps import Application
from scimjit.entitlement.saml_idp import SamlIdp, UnsafeXml, parse_xml
from scimjit.jiterrors import JitError
from scimjit.store import used_once
from scimjit.store.db import Database

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
REPLAY_PURPOSE = "saml_assertion"
NAME_ID = "NameID"  # the "claim" a match rule names to match on the assertion's subject

MAX_SAML_RESPONSE_BYTES = 128 * 1024  # decoded XML; real Responses are a few kB (one certificate inside)
MAX_SAML_RESPONSE_B64 = (MAX_SAML_RESPONSE_BYTES * 4) // 3 + 4  # ... and as it is posted (base64)

_SIGNATURE = SignatureConfiguration(location="./")  # the ds:Signature is a direct child of what it signs


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def refused(check: str, detail: str) -> JitError:
    return JitError(401, "invalid_saml_response", f"{check}: {detail}")


class SamlVerifier:
    """Checks SAML Responses for the applications with an `[applications.saml]` table."""

    def __init__(self, settings: JitSettings, clock: Clock, db: Database) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db

    async def verify(
        self, app: Application, saml_response: str, in_response_to: str | None
    ) -> dict[str, Any]:
        """The assertion's subject and attributes as a claims mapping (`NameID`, then each attribute by its
        Name: a string, or a list when it has several values), or JitError 401. The assertion id is spent."""
        idp = app.saml
        if idp is None:
            raise JitError(
                400, "saml_not_configured", f"{app.name!r} has no [applications.saml] table: send an id_token"
            )
        skew = _skew(idp, app, self.settings)
        now = self.clock.now()
        # signature checks and canonicalization are CPU work on bounded input: off the event loop
        assertion_id, keep_until, claims = await asyncio.to_thread(
            check_response, idp, saml_response, in_response_to, now, skew
        )
        if not await self.db.run(self._claim, idp, assertion_id, keep_until, now):
            raise refused("replayed", f"assertion {assertion_id!r} has been presented before")
        return claims

    def _claim(self, idp: SamlIdp, assertion_id: str, keep_until: datetime, now: datetime) -> bool:
        with self.db.write() as conn:
            return used_once.claim(
                conn, REPLAY_PURPOSE, f"{idp.idp_entity_id}\n{assertion_id}", keep_until, now
            )


def _skew(idp: SamlIdp, app: Application, settings: JitSettings) -> float:
    if idp.clock_skew is not None:
        return idp.clock_skew
    return settings.clock_skew if app.clock_skew is None else app.clock_skew


def check_response(
    idp: SamlIdp, saml_response: str, in_response_to: str | None, now: datetime, skew: float
) -> tuple[str, datetime, dict[str, Any]]:
    """Everything but the replay check: (assertion ID, when its replay-cache entry may go, claims)."""
    response = _parse(saml_response)
    response, assertion = _verified(idp, response)
    _check_response_fields(idp, response, in_response_to)
    assertion_id = assertion.get("ID")
    if not assertion_id:
        raise refused("assertion", "the Assertion has no ID")
    if assertion.get("Version") != "2.0":
        raise refused("assertion", "the Assertion is not SAML 2.0")
    issuer = _text(assertion.find(_q(SAML, "Issuer")), "Issuer")
    if issuer != idp.idp_entity_id:
        raise refused("issuer", f"the Assertion's Issuer {issuer!r} is not {idp.idp_entity_id!r}")
    lo, hi = now - timedelta(seconds=skew), now + timedelta(seconds=skew)
    confirmed_until = _subject_confirmation(idp, assertion, in_response_to, lo, hi)
    conditions_until = _conditions(idp, assertion, lo, hi)
    ends = [t for t in (confirmed_until, conditions_until) if t is not None]
    keep_until = min(ends) + timedelta(seconds=skew)
    return assertion_id, keep_until, _claims(assertion)


def _parse(saml_response: str) -> etree._Element:
    if len(saml_response) > MAX_SAML_RESPONSE_B64:
        raise JitError(413, "too_large", f"saml_response is larger than {MAX_SAML_RESPONSE_BYTES} bytes")
    try:
        data = base64.b64decode("".join(saml_response.split()), validate=True)
    except (binascii.Error, ValueError):
        raise refused("encoding", "saml_response is not base64") from None
    if len(data) > MAX_SAML_RESPONSE_BYTES:
        raise JitError(413, "too_large", f"saml_response is larger than {MAX_SAML_RESPONSE_BYTES} bytes")
    try:
        root = parse_xml(data)
    except UnsafeXml as exc:
        raise refused("xml", str(exc)) from None
    if root.tag != _q(SAMLP, "Response"):
        raise refused("xml", "the document is not a samlp:Response")
    return root


def _verified(idp: SamlIdp, root: etree._Element) -> tuple[etree._Element, etree._Element]:
    """(Response, Assertion), each as covered by the signature: a signed Response's Assertion is read from
    the verified Response; otherwise the Assertion must carry its own signature and is read from that."""
    if root.find(_q(SAMLP, "EncryptedAssertion")) is not None:
        raise refused("assertion", "encrypted assertions are not supported")
    if root.find(_q(DS, "Signature")) is not None:
        root = _signed(idp, root, "Response")
        assertions = root.findall(_q(SAML, "Assertion"))
        if len(assertions) != 1:
            raise refused("assertion", f"a Response must hold exactly one Assertion, not {len(assertions)}")
        return root, assertions[0]
    assertions = root.findall(_q(SAML, "Assertion"))
    if len(assertions) != 1:
        raise refused("assertion", f"a Response must hold exactly one Assertion, not {len(assertions)}")
    if assertions[0].find(_q(DS, "Signature")) is None:
        raise refused("signature", "neither the Response nor the Assertion is signed")
    return root, _signed(idp, assertions[0], "Assertion")


def _signed(idp: SamlIdp, element: etree._Element, kind: str) -> etree._Element:
    """The element as signxml verified it, after checking the signature refers to `element` itself."""
    own_id = element.get("ID")
    if not own_id:
        raise refused("signature", f"the signed {kind} has no ID")
    failure = "the signature does not verify with the IdP's certificate"
    for cert in idp.certificates:
        try:
            result = XMLVerifier().verify(
                element, x509_cert=cert, id_attribute="ID", expect_config=_SIGNATURE
            )
        except InvalidSignature:
            continue
        except (SignXMLException, etree.LxmlError, ValueError) as exc:
            failure = f"the signature cannot be checked ({type(exc).__name__}: {str(exc)[:200]})"
            break
        signed = result.signed_xml  # type: ignore[union-attr]
        if signed is None or signed.tag != _q(SAMLP if kind == "Response" else SAML, kind):
            raise refused("signature", f"the signature does not cover the {kind}")
        if signed.get("ID") != own_id:
            raise refused("signature", f"the signature covers another element than the {kind} it is in")
        return signed
    raise refused("signature", failure)


def _check_response_fields(idp: SamlIdp, response: etree._Element, in_response_to: str | None) -> None:
    if response.get("Version") != "2.0":
        raise refused("response", "the Response is not SAML 2.0")
    status = response.find(f"{_q(SAMLP, 'Status')}/{_q(SAMLP, 'StatusCode')}")
    if status is None or status.get("Value") != SUCCESS:
        value = None if status is None else status.get("Value")
        raise refused("status", f"the IdP did not answer Success ({value})")
    destination = response.get("Destination")
    if destination is not None and destination != idp.acs_url:
        raise refused("destination", f"Destination {destination!r} is not {idp.acs_url!r}")
    issuer_el = response.find(_q(SAML, "Issuer"))
    if issuer_el is not None and _text(issuer_el, "Issuer") != idp.idp_entity_id:
        raise refused("issuer", f"the Response's Issuer is not {idp.idp_entity_id!r}")
    answered = response.get("InResponseTo")
    if answered is not None and in_response_to is None:
        raise refused("in_response_to", "the Response answers a request: send its id as in_response_to")
    if answered is not None and answered != in_response_to:
        raise refused("in_response_to", "the Response answers another request than in_response_to")


def _subject_confirmation(
    idp: SamlIdp, assertion: etree._Element, in_response_to: str | None, lo: datetime, hi: datetime
) -> datetime:
    """NotOnOrAfter of the first bearer confirmation that holds for this application, or refused."""
    subject = assertion.find(_q(SAML, "Subject"))
    if subject is None:
        raise refused("subject", "the Assertion has no Subject")
    why = ("subject", "the Subject has no bearer SubjectConfirmation")
    for sc in subject.iterfind(_q(SAML, "SubjectConfirmation")):
        if sc.get("Method") != BEARER:
            continue
        data = sc.find(_q(SAML, "SubjectConfirmationData"))
        if data is None:
            why = ("subject", "the bearer SubjectConfirmation has no SubjectConfirmationData")
            continue
        recipient = data.get("Recipient")
        until = _instant(data.get("NotOnOrAfter"), "SubjectConfirmationData NotOnOrAfter")
        not_before = _instant(data.get("NotBefore"), "SubjectConfirmationData NotBefore")
        answered = data.get("InResponseTo")
        if recipient != idp.acs_url:
            why = ("recipient", f"Recipient {recipient!r} is not {idp.acs_url!r}")
        elif until is None:
            why = ("expired", "the bearer SubjectConfirmationData has no NotOnOrAfter")
        elif until <= lo:
            why = ("expired", "the bearer SubjectConfirmationData is past its NotOnOrAfter")
        elif not_before is not None and not_before > hi:
            why = ("not_yet_valid", "the bearer SubjectConfirmationData is before its NotBefore")
        elif in_response_to is not None and answered != in_response_to:
            why = ("in_response_to", "the assertion answers another request than in_response_to")
        elif in_response_to is None and answered is not None:
            why = ("in_response_to", "the assertion answers a request: send its id as in_response_to")
        elif in_response_to is None and not idp.allow_unsolicited:
            why = ("in_response_to", "unsolicited responses are not allowed: send in_response_to")
        else:
            return until
    raise refused(*why)


def _conditions(idp: SamlIdp, assertion: etree._Element, lo: datetime, hi: datetime) -> datetime | None:
    conditions = assertion.find(_q(SAML, "Conditions"))
    if conditions is None:
        raise refused("audience", "the Assertion has no Conditions (and so no AudienceRestriction)")
    not_before = _instant(conditions.get("NotBefore"), "Conditions NotBefore")
    until = _instant(conditions.get("NotOnOrAfter"), "Conditions NotOnOrAfter")
    if not_before is not None and not_before > hi:
        raise refused("not_yet_valid", "the Assertion is not valid yet (Conditions NotBefore)")
    if until is not None and until <= lo:
        raise refused("expired", "the Assertion has expired (Conditions NotOnOrAfter)")
    restrictions = conditions.findall(_q(SAML, "AudienceRestriction"))
    if not restrictions:
        raise refused("audience", "the Assertion has no AudienceRestriction")
    for restriction in restrictions:  # each one must be satisfied (SAML core §2.5.1.4)
        audiences = [_text(a, "Audience") for a in restriction.iterfind(_q(SAML, "Audience"))]
        if idp.entity_id not in audiences:
            raise refused("audience", f"the Assertion is for {audiences}, not {idp.entity_id!r}")
    return until


def _claims(assertion: etree._Element) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    name_id = assertion.find(f"{_q(SAML, 'Subject')}/{_q(SAML, 'NameID')}")
    if name_id is not None:
        claims[NAME_ID] = _text(name_id, "NameID")
    for attribute in assertion.iterfind(f"{_q(SAML, 'AttributeStatement')}/{_q(SAML, 'Attribute')}"):
        name = attribute.get("Name")
        if not name or name == NAME_ID:
            continue
        values = [_text(v, f"Attribute {name!r}") for v in attribute.iterfind(_q(SAML, "AttributeValue"))]
        if values:
            claims[name] = values[0] if len(values) == 1 else values
    return claims


def _text(element: etree._Element | None, what: str) -> str:
    """The whole text of a simple-valued element. A child node (comment, element, processing instruction)
    is refused: its text would be split, and which part a reader sees is the exploit."""
    if element is None:
        raise refused("assertion", f"{what} is missing")
    if len(element):
        raise refused("assertion", f"{what} contains markup or a comment; a value must be plain text")
    return (element.text or "").strip()


def _instant(value: str | None, what: str) -> datetime | None:
    """An xs:dateTime in UTC (`2026-12-02T01:30:00Z`, fractions allowed); one without a zone is UTC."""
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value.strip())
    except ValueError:
        raise refused("assertion", f"{what} is not an xs:dateTime") from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant
