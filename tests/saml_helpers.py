"""A SAML IdP made in the test: an RSA key and a self-signed certificate (cryptography), Responses built with
lxml and signed with signxml's XMLSigner, and its metadata document. Knobs for every field the verifier
checks, so each attack is one keyword away from a valid Response."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
NSMAP = {"samlp": SAMLP, "saml": SAML}

IDP_ENTITY_ID = "https://idp.example.com/saml"
SP_ENTITY_ID = "https://wiki.example.com/saml/metadata"
ACS_URL = "https://wiki.example.com/saml/acs"


def _instant(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SamlKey:
    """An RSA key with a self-signed certificate valid 2020 to 2050 (the tests' frozen clock is in 2030)."""

    def __init__(self, common_name: str = "test idp") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2050, 1, 1, tzinfo=UTC))
            .sign(self.key, hashes.SHA256())
        )

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def cert_b64(self) -> str:
        return base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    def sign(self, element: etree._Element) -> etree._Element:
        """`element` with an enveloped RSA-SHA256 signature over its own ID (exclusive c14n, as IdPs do)."""
        signer = XMLSigner(
            signature_algorithm="rsa-sha256", digest_algorithm="sha256", c14n_algorithm=EXC_C14N
        )
        signed = signer.sign(
            element, key=self.key_pem, cert=self.cert_pem, reference_uri=element.get("ID"), id_attribute="ID"
        )
        # SAML's schema puts ds:Signature right after the Issuer; signxml appends it. Move it (it is enveloped,
        # so its position does not change what it signs).
        sig = signed.find(f"{{{DS}}}Signature")
        issuer = signed.find(f"{{{SAML}}}Issuer")
        if sig is not None and issuer is not None:
            issuer.addnext(sig)
        return signed


class LocalSamlIdp:
    def __init__(self, entity_id: str = IDP_ENTITY_ID) -> None:
        self.entity_id = entity_id
        self.key = SamlKey()

    def metadata(self) -> bytes:
        root = etree.Element(f"{{{MD}}}EntityDescriptor", nsmap={"md": MD, "ds": DS}, entityID=self.entity_id)
        idp = etree.SubElement(
            root,
            f"{{{MD}}}IDPSSODescriptor",
            protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol",
        )
        kd = etree.SubElement(idp, f"{{{MD}}}KeyDescriptor", use="signing")
        info = etree.SubElement(kd, f"{{{DS}}}KeyInfo")
        data = etree.SubElement(info, f"{{{DS}}}X509Data")
        etree.SubElement(data, f"{{{DS}}}X509Certificate").text = self.key.cert_b64
        etree.SubElement(
            idp,
            f"{{{MD}}}SingleSignOnService",
            Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
            Location="https://idp.example.com/saml/sso",
        )
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def assertion(
        self,
        now: datetime,
        *,
        name_id: str = "alice",
        attributes: dict[str, Any] | None = None,
        audience: str = SP_ENTITY_ID,
        recipient: str = ACS_URL,
        issuer: str | None = None,
        in_response_to: str | None = "req-1",
        not_before: datetime | None = None,
        not_on_or_after: datetime | None = None,
        assertion_id: str | None = None,
    ) -> etree._Element:
        nb = not_before or now - timedelta(seconds=30)
        noa = not_on_or_after or now + timedelta(minutes=5)
        a = etree.Element(
            f"{{{SAML}}}Assertion",
            nsmap={"saml": SAML},
            ID=assertion_id or f"_a{uuid.uuid4().hex}",
            Version="2.0",
            IssueInstant=_instant(now),
        )
        etree.SubElement(a, f"{{{SAML}}}Issuer").text = issuer or self.entity_id
        subject = etree.SubElement(a, f"{{{SAML}}}Subject")
        nid = etree.SubElement(
            subject, f"{{{SAML}}}NameID", Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
        )
        nid.text = name_id
        sc = etree.SubElement(
            subject, f"{{{SAML}}}SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"
        )
        scd = etree.SubElement(
            sc, f"{{{SAML}}}SubjectConfirmationData", Recipient=recipient, NotOnOrAfter=_instant(noa)
        )
        if in_response_to is not None:
            scd.set("InResponseTo", in_response_to)
        cond = etree.SubElement(
            a, f"{{{SAML}}}Conditions", NotBefore=_instant(nb), NotOnOrAfter=_instant(noa)
        )
        ar = etree.SubElement(cond, f"{{{SAML}}}AudienceRestriction")
        etree.SubElement(ar, f"{{{SAML}}}Audience").text = audience
        authn = etree.SubElement(a, f"{{{SAML}}}AuthnStatement", AuthnInstant=_instant(now))
        ctx = etree.SubElement(authn, f"{{{SAML}}}AuthnContext")
        etree.SubElement(
            ctx, f"{{{SAML}}}AuthnContextClassRef"
        ).text = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
        if attributes:
            statement = etree.SubElement(a, f"{{{SAML}}}AttributeStatement")
            for name, value in attributes.items():
                attr = etree.SubElement(statement, f"{{{SAML}}}Attribute", Name=name)
                for v in value if isinstance(value, list) else [value]:
                    etree.SubElement(attr, f"{{{SAML}}}AttributeValue").text = v
        return a

    def response(
        self,
        now: datetime,
        *,
        assertion: etree._Element | None = None,
        sign: str = "assertion",  # "assertion", "response", "both" or "none"
        key: SamlKey | None = None,
        destination: str | None = ACS_URL,
        in_response_to: str | None = "req-1",
        status: str = "urn:oasis:names:tc:SAML:2.0:status:Success",
        **assertion_args: Any,
    ) -> etree._Element:
        key = key or self.key
        if assertion is None:
            assertion = self.assertion(now, in_response_to=in_response_to, **assertion_args)
        if sign in ("assertion", "both"):
            assertion = key.sign(assertion)
        r = etree.Element(
            f"{{{SAMLP}}}Response",
            nsmap=NSMAP,
            ID=f"_r{uuid.uuid4().hex}",
            Version="2.0",
            IssueInstant=_instant(now),
        )
        if destination is not None:
            r.set("Destination", destination)
        if in_response_to is not None:
            r.set("InResponseTo", in_response_to)
        etree.SubElement(r, f"{{{SAML}}}Issuer").text = self.entity_id
        st = etree.SubElement(r, f"{{{SAMLP}}}Status")
        etree.SubElement(st, f"{{{SAMLP}}}StatusCode", Value=status)
        r.append(assertion)
        if sign in ("response", "both"):
            r = key.sign(r)
        return r


def encode(element: etree._Element | bytes) -> str:
    """The SAMLResponse form field: the document, base64."""
    data = element if isinstance(element, bytes) else etree.tostring(element)
    return base64.b64encode(data).decode()


SAML_TOML = """
[[applications]]
name = "wiki"
match = {{ claim = "{claim}", attribute = "{attribute}" }}
groups = ["wiki-users"]
on_first_login = "create"
roles = {{ "wiki-admins" = "admin" }}

[applications.saml]
idp_metadata = "{metadata}"
entity_id = "https://wiki.example.com/saml/metadata"
acs_url = "https://wiki.example.com/saml/acs"
{saml_extra}

[applications.connector]
type = "webhook"
url = "{webhook}"
secret = "change-me"

[jit]
login_wait = "1s"
"""


def saml_config(
    metadata: str, webhook: str, *, claim: str = "NameID", attribute: str = "userName", saml_extra: str = ""
) -> str:
    return SAML_TOML.format(
        metadata=metadata, webhook=webhook, claim=claim, attribute=attribute, saml_extra=saml_extra
    )
