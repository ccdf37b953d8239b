"""The `[console]` table: the web console at /console (scimjit/http/console/), its OIDC client and who
administers it. Absent: the console is off (every /console path answers 404)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from scimjit.config.applications import ASYMMETRIC_ALGORITHMS, DEFAULT_SCOPES, MatchConfig, asymmetric_only
from scimjit.config.values import Duration, Names, StrictModel, Strings, https_url


class ConsoleConfig(StrictModel):
    """`[console]`: people sign in with the OIDC code flow (PKCE) against `issuer` as `client_id`; `match`
    maps their ID token to a SCIM user exactly as an application's rule does; live members of any
    `admin_groups` group see the admin pages."""

    issuer: str
    client_id: str
    client_secret: str | None = Field(default=None, repr=False)  # None: a public client (PKCE alone)
    match: MatchConfig
    admin_groups: Names = ()
    scopes: Strings = DEFAULT_SCOPES
    algorithms: Strings = ASYMMETRIC_ALGORITHMS
    session_lifetime: Duration = 8 * 3600.0  # a signed-in session lasts this long, then sign in again
    page_size: int = Field(default=50, ge=1, le=1000)  # rows per page on every console list

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return https_url(value.strip())

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected the console's OIDC client id")
        return value.strip()

    @field_validator("admin_groups")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(value):
            raise ValueError("expected group names or ids, not empty strings")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value or not all(s and " " not in s for s in value):
            raise ValueError('scopes must include "openid" and be single words')
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return asymmetric_only(value, "ID tokens")

    @model_validator(mode="after")
    def _lifetime(self) -> ConsoleConfig:
        if self.session_lifetime < 60:
            raise ValueError("session_lifetime must be at least 1m")
        return self
