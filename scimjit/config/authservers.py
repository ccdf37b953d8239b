"""The `[[authorization_servers]]` tables: OAuth 2.0 authorization servers whose access tokens SCIM clients
may present instead of a scimjit token (JWT access tokens, RFC 9068; opaque tokens, RFC 7662).

A token from such a server carries *its* scopes and client id, never scimjit's; `scopes` and `clients` say
which scimjit scopes they grant, and a token that maps to none is refused (403), so trusting an issuer never
grants anything by default.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from scimjit.config.applications import ASYMMETRIC_ALGORITHMS, asymmetric_only
from scimjit.config.values import Duration, Names, StrictModel, Strings, https_url, show

# The scimjit scopes a mapping may grant (store/tokens.py SCOPES; repeated here: config imports no store).
GRANTABLE_SCOPES = frozenset(
    {"scim:read", "scim:write", "admin", "login", "requests", "metrics", "schedules", "ssf"}
)


class AuthorizationServerConfig(StrictModel):
    issuer: str
    # RFC 9068 `aud` a JWT access token must contain; also checked against an introspection answer's `aud`
    # when it has one. Without it JWT access tokens of this issuer are refused (opaque ones still work).
    audience: str | None = None
    algorithms: Strings = ASYMMETRIC_ALGORITHMS
    # RFC 7662: where opaque tokens are checked; empty: discovered from the issuer's metadata, when
    # `client_id` is set (introspection needs client authentication).
    introspection_endpoint: str = ""
    client_id: str = ""
    client_secret: str = Field(default="", repr=False)
    # how long an introspection answer is reused (never past the token's `exp`)
    introspection_cache: Duration = 60.0
    scopes: dict[str, Names] = Field(default_factory=dict)  # token scope -> scimjit scope(s)
    clients: dict[str, Names] = Field(default_factory=dict)  # token client_id -> scimjit scope(s)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return https_url(value.strip()).rstrip("/")

    @field_validator("introspection_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return https_url(value.strip()) if value.strip() else ""

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return asymmetric_only(value, "access tokens")

    @field_validator("scopes", "clients")
    @classmethod
    def _grants(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for key, granted in value.items():
            unknown = [s for s in granted if s not in GRANTABLE_SCOPES]
            if not key or not granted or unknown:
                raise ValueError(
                    f"{show(key)} must map to scimjit scopes, one or more of "
                    f"{', '.join(sorted(GRANTABLE_SCOPES))}"
                    + (f" (not {', '.join(unknown)})" if unknown else "")
                )
        return value

    @model_validator(mode="after")
    def _usable(self) -> AuthorizationServerConfig:
        if not self.scopes and not self.clients:
            raise ValueError("set `scopes` and/or `clients`: which scimjit scopes this server's tokens grant")
        if self.audience is None and not self.client_id:
            raise ValueError(
                "set `audience` (JWT access tokens, RFC 9068) and/or `client_id` + `client_secret` "
                "(opaque tokens by introspection, RFC 7662)"
            )
        if bool(self.client_id) != bool(self.client_secret):
            raise ValueError("introspection needs both `client_id` and `client_secret`")
        if self.introspection_endpoint and not self.client_id:
            raise ValueError("`introspection_endpoint` needs `client_id` and `client_secret`")
        return self
