"""The `[[applications]]` tables: OIDC issuer and clients (or a SAML IdP, `[applications.saml]`), matching,
entitlement, the code flow keys and the connector table (whose settings stay open: a plugin connector defines
its own)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scimjit.config.conditions import Conditions
from scimjit.config.values import Duration, Names, StrictModel, Strings, https_url, show

# Asymmetric algorithms only: an ID token is checked against the issuer's *public* keys, and accepting an
# HMAC algorithm there is the classic key-confusion hole (the public key used as an HMAC secret).
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


def asymmetric_only(value: tuple[str, ...], what: str) -> tuple[str, ...]:
    """The one check of every `algorithms` list (applications, the console, authorization servers): a
    non-empty choice among ASYMMETRIC_ALGORITHMS, so a token is only ever checked with its issuer's public
    keys, never `none` and never HMAC (where a public key would become the shared secret)."""
    bad = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
    if bad or not value:
        raise ValueError(
            f"{bad or '[]'} not allowed; choose from {', '.join(ASYMMETRIC_ALGORITHMS)} "
            f"(never `none`, never HMAC: {what} are checked with the issuer's public keys)"
        )
    return value


# SCIM attribute a claim may be matched to (canonical spelling by lower-cased name).
MATCH_ATTRIBUTES = {
    "username": "userName",
    "externalid": "externalId",
    "emails.value": "emails.value",
    "id": "id",
}

DEFAULT_SCOPES = ("openid", "profile", "email")


class MatchConfig(StrictModel):
    claim: str  # e.g. "preferred_username"
    attribute: str  # canonical SCIM attribute: userName, externalId, emails.value or id

    @field_validator("claim")
    @classmethod
    def _claim(cls, value: str) -> str:
        if not value:
            raise ValueError("expected the name of an ID token claim, e.g. preferred_username")
        return value

    @field_validator("attribute")
    @classmethod
    def _attribute(cls, value: str) -> str:
        canonical = MATCH_ATTRIBUTES.get(value.lower())
        if canonical is None:
            raise ValueError(f"expected one of {', '.join(MATCH_ATTRIBUTES.values())}, got {show(value)}")
        return canonical


class SamlConfig(StrictModel):
    """`[applications.saml]`: the SAML IdP whose signed Responses the login hook accepts for this application
    (`POST /jit/v1/logins` with `saml_response`). The IdP is named by its metadata file, or inline by its
    entity id and signing certificate(s); `entity_id` is this application's SP entity id (the `Audience` an
    assertion must name) and `acs_url` its Assertion Consumer Service URL (`Recipient` and `Destination`)."""

    entity_id: str
    acs_url: str
    idp_metadata: str | None = None  # the IdP's SAML metadata (EntityDescriptor): a file path or an https URL
    idp_entity_id: str | None = None
    idp_certificates: Strings = ()  # PEM certificates whose keys may sign (several during a rollover)
    clock_skew: Duration | None = None  # None: the application's clock_skew, else the [jit] one
    # An IdP-initiated (unsolicited) Response carries no InResponseTo; refused unless this is true.
    allow_unsolicited: bool = False

    @field_validator("entity_id", "acs_url")
    @classmethod
    def _required(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a non-empty string")
        return value.strip()

    @model_validator(mode="after")
    def _idp(self) -> SamlConfig:
        if self.idp_metadata is not None:
            if self.idp_entity_id is not None or self.idp_certificates:
                raise ValueError("set idp_metadata, or idp_entity_id with idp_certificates, not both")
            if not self.idp_metadata.strip():
                raise ValueError("idp_metadata must be the path or https URL of the IdP's metadata")
        elif not self.idp_entity_id or not self.idp_certificates:
            raise ValueError("set idp_metadata, or idp_entity_id with idp_certificates (PEM)")
        return self


class ConnectorTable(BaseModel):
    """`[applications.connector]`: a `type` and that connector's own settings, which stay open here (a
    plugin defines its own); the built-in connectors' settings are checked by apps.py once `*_env` keys are
    resolved."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    type: str

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def __repr_args__(self) -> Any:  # a Settings in a log line must not show a connector's secret
        yield "type", self.type
        yield "keys", sorted(self.settings)


class ApplicationConfig(StrictModel):
    """One `[[applications]]` table, checked; apps.py turns it into an Application (secrets resolved)."""

    name: str
    issuer: str | None = None  # the OIDC issuer; may be left out only when `saml` is set
    audience: Names = ()
    match: MatchConfig
    # None: true when the match claim is `email` (an unverified address can be anyone's)
    require_email_verified: bool | None = None
    saml: SamlConfig | None = None
    groups: Strings = ()  # entitlement: group displayNames or ids; empty = every active user
    on_first_login: Literal["create", "link"] = "create"
    roles: dict[str, Names] = Field(default_factory=dict)  # group -> downstream role(s)
    on_unentitled: Literal["disable", "delete", "keep"] = "disable"
    grace_period: Duration = 0.0
    # idle reclaim (access/sweeper.py): an account whose last login is older than this is disabled or deleted;
    # None (the default) never reclaims
    idle_after: Duration | None = None
    on_idle: Literal["disable", "delete"] = "disable"
    connector: ConnectorTable
    algorithms: Strings = ASYMMETRIC_ALGORITHMS
    clock_skew: Duration | None = None  # None: the engine-wide [jit] clock_skew
    async_create: bool = False
    description: str = ""
    # the optional authorization code flow run by scimjit (GET /jit/v1/apps/{name}/login, http/jit/signin.py)
    client_id: str | None = None  # None: the first audience
    client_secret: str | None = Field(default=None, repr=False)
    client_secret_env: str | None = None
    redirect_after_login: str | None = None
    scopes: Strings = DEFAULT_SCOPES
    # login conditions (time windows, client networks): outside them a login is 403 condition_not_met
    conditions: Conditions | None = None

    @field_validator("name", "client_id", "client_secret")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a non-empty string")
        return value.strip() if value is not None else None

    @field_validator("idle_after")
    @classmethod
    def _idle_after(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError('expected a positive duration such as "30d" (leave it out to never reclaim)')
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        return None if value is None else https_url(value.strip())

    @field_validator("redirect_after_login")
    @classmethod
    def _redirect(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = https_url(value.strip())
        if urlsplit(value).fragment:
            raise ValueError("must not have a #fragment")
        return value

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(value):
            raise ValueError("expected the OIDC client id(s) whose ID tokens are accepted")
        return value

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for group, roles in value.items():
            if not roles or not all(roles):
                raise ValueError(f"roles.{group} must be a role name or a list of role names")
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return asymmetric_only(value, "ID tokens")

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value or not all(s and " " not in s for s in value):
            raise ValueError('scopes must include "openid" and be single words')
        return value

    @model_validator(mode="after")
    def _code_flow(self) -> ApplicationConfig:
        if self.issuer is None and self.saml is None:
            raise ValueError("set `issuer` and `audience` (OIDC), or an [applications.saml] table")
        if self.issuer is not None and not self.audience:
            raise ValueError("`audience`: expected the OIDC client id(s) whose ID tokens are accepted")
        if self.issuer is None and (self.audience or self.redirect_after_login or self.client_id):
            raise ValueError("`audience`, `client_id` and `redirect_after_login` need an OIDC `issuer`")
        if self.client_id is not None and self.client_id not in self.audience:
            raise ValueError(f"client_id {self.client_id!r} must be one of `audience` (its ID tokens' aud)")
        if self.client_secret is not None and self.client_secret_env is not None:
            raise ValueError("set client_secret or client_secret_env, not both")
        return self
