"""The SAML IdP an application trusts (`[applications.saml]`): entity id and signing certificates, from the
IdP's metadata (a file, or a URL fetched over https) or inline, read once when the applications are built so a
bad file or an unreachable URL stops the start instead of refusing every sign-in later.

Also the one hardened XML parser both this module and the Response verifier (provisioning/saml.py) use: no
DTD loading, no entity expansion, no network, no huge trees, and any document that declares a DTD at all
is refused (an internal DTD is where XXE and "billion laughs" payloads live; SAML never needs one).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from lxml import etree

from scimjit.config import ConfigError, SamlConfig
from scimjit.config.values import check_url

MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
MAX_METADATA_BYTES = 1024 * 1024
METADATA_FETCH_TIMEOUT = 10.0  # seconds; at start only, so a slow IdP delays the start, never a sign-in


class UnsafeXml(ValueError):
    """The document is not XML, or uses a feature refused here (a DTD, an entity)."""


def parse_xml(data: bytes) -> etree._Element:
    """Parse `data` with the hardened parser; raises UnsafeXml."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
    )
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML ({exc.msg})") from None
    if root is None:
        raise UnsafeXml("empty document")
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise UnsafeXml("a DTD is not allowed")
    if any(True for _ in root.iter(etree.Entity)):
        raise UnsafeXml("entities are not allowed")
    return root


@dataclass(frozen=True, slots=True)
class SamlIdp:
    """What the login hook checks a SAML Response against, for one application."""

    idp_entity_id: str  # the Issuer of its Responses and Assertions
    certificates: tuple[x509.Certificate, ...]  # any of these may have signed
    entity_id: str  # this application's SP entity id: the Audience
    acs_url: str  # the Recipient / Destination
    clock_skew: float | None  # None: the application's, else the [jit] clock_skew
    allow_unsolicited: bool

    def summary(self) -> dict[str, object]:
        """For `scimjit apps list` and the admin API: what is trusted, without the certificates' bytes."""
        return {
            "idpEntityId": self.idp_entity_id,
            "entityId": self.entity_id,
            "acsUrl": self.acs_url,
            "allowUnsolicited": self.allow_unsolicited,
            "certificates": [
                {"subject": c.subject.rfc4514_string(), "notAfter": c.not_valid_after_utc.isoformat()}
                for c in self.certificates
            ],
        }


def load_idp(config: SamlConfig, where: str) -> SamlIdp:
    """The SamlIdp of one `[applications.saml]` table; ConfigError (naming `where`) when it cannot be read."""
    if config.idp_metadata is not None:
        if config.idp_metadata.startswith(("https://", "http://")):
            data = _fetch_metadata(config.idp_metadata, where)
        else:
            data = _read_file(Path(config.idp_metadata), where)
        entity_id, pems = _read_metadata(data, where)
    else:
        assert config.idp_entity_id is not None
        entity_id, pems = config.idp_entity_id, list(config.idp_certificates)
    certificates = []
    for i, pem in enumerate(pems):
        try:
            certificates.append(x509.load_pem_x509_certificate(pem.encode()))
        except ValueError:
            raise ConfigError(f"{where}: saml certificate {i + 1} is not a PEM X.509 certificate") from None
    return SamlIdp(
        idp_entity_id=entity_id,
        certificates=tuple(certificates),
        entity_id=config.entity_id,
        acs_url=config.acs_url,
        clock_skew=config.clock_skew,
        allow_unsolicited=config.allow_unsolicited,
    )


def _read_file(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()[: MAX_METADATA_BYTES + 1]
    except OSError as exc:
        raise ConfigError(
            f"{where}: saml.idp_metadata {str(path)!r} cannot be read ({exc.strerror})"
        ) from None


def _fetch_metadata(url: str, where: str) -> bytes:
    """The IdP's metadata document from its URL: https (plain http on a loopback host only), no redirects
    followed (a redirect is where a metadata URL would be swapped for another host's), at most
    MAX_METADATA_BYTES read. Fetched once per start: the certificates an IdP rolls over to appear after a
    restart, so an IdP's rollover (which publishes the new certificate beside the old one first) needs one."""
    check_url(url, f"{where}: saml.idp_metadata")
    try:
        accept = {"Accept": "application/samlmetadata+xml, */*"}
        with (
            httpx.Client(timeout=METADATA_FETCH_TIMEOUT, follow_redirects=False) as client,
            client.stream("GET", url, headers=accept) as r,
        ):
            if r.status_code != 200:
                raise ConfigError(f"{where}: saml.idp_metadata {url} answered HTTP {r.status_code}")
            data = b""
            for chunk in r.iter_bytes():
                data += chunk
                if len(data) > MAX_METADATA_BYTES:
                    break
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"{where}: saml.idp_metadata {url} cannot be fetched ({type(exc).__name__})"
        ) from None
    return data


def _read_metadata(data: bytes, where: str) -> tuple[str, list[str]]:
    """entityID and the signing certificates (as PEM) of an IdP's metadata: the KeyDescriptors of its
    IDPSSODescriptor whose `use` is `signing` or unset (unset means both, SAML metadata §2.4.1.1)."""
    if len(data) > MAX_METADATA_BYTES:
        raise ConfigError(f"{where}: saml.idp_metadata is larger than {MAX_METADATA_BYTES} bytes")
    try:
        root = parse_xml(data)
    except UnsafeXml as exc:
        raise ConfigError(f"{where}: saml.idp_metadata: {exc}") from None
    if root.tag != f"{{{MD_NS}}}EntityDescriptor" or not root.get("entityID"):
        raise ConfigError(f"{where}: saml.idp_metadata is not an md:EntityDescriptor with an entityID")
    pems = []
    for key in root.iterfind(f"{{{MD_NS}}}IDPSSODescriptor/{{{MD_NS}}}KeyDescriptor"):
        if key.get("use", "signing") != "signing":
            continue
        for cert in key.iterfind(f".//{{{DS_NS}}}X509Certificate"):
            text = "".join(cert.itertext())
            try:
                der = base64.b64decode("".join(text.split()), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(
                    f"{where}: saml.idp_metadata has a certificate that is not base64"
                ) from None
            body = base64.encodebytes(der).decode()
            pems.append(f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n")
    if not pems:
        raise ConfigError(f"{where}: saml.idp_metadata names no signing certificate of an IDPSSODescriptor")
    return str(root.get("entityID")), pems
