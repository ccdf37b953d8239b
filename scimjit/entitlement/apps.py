"""The application registry: `[[applications]]` tables of the config file, as typed Application objects.

The tables are checked by the one configuration model (scimjit.config.ApplicationConfig) when the settings are
loaded, so a typo fails `scimjit apps list` and `scimjit serve` at start instead of failing a user's first
login. Here they become Applications: secrets named by `*_env` keys are read from the environment, and the
built-in connectors' settings are checked by type.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scimjit.config import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_SCOPES,
    MATCH_ATTRIBUTES,
    ApplicationConfig,
    ConfigError,
    Duration,
    Names,
    check_url,
    describe_error,
    is_loopback_host,
    validate_document,
)
from scimjit.config.conditions import Conditions
from scimjit.entitlement.saml_idp import SamlIdp, load_idp
from scimjit.redact import is_secret_key

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_SCOPES",
    "MATCH_ATTRIBUTES",
    "Application",
    "ConnectorConfig",
    "MatchRule",
    "build_applications",
    "check_url",
    "is_loopback_host",
    "load_applications",
]

OnFirstLogin = Literal["create", "link"]
OnUnentitled = Literal["disable", "delete", "keep"]


@dataclass(frozen=True, slots=True)
class MatchRule:
    claim: str  # e.g. "preferred_username"
    attribute: str  # canonical SCIM attribute: userName, externalId, emails.value or id


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    type: str
    settings: Mapping[str, Any]  # everything in [applications.connector] except `type`

    def redacted(self) -> dict[str, Any]:
        """The settings with secrets masked, for listings and logs."""
        return {k: ("***" if _is_secret_key(k) else v) for k, v in self.settings.items()}


@dataclass(frozen=True, slots=True)
class Application:
    name: str
    issuer: str  # empty: no OIDC issuer (a SAML-only application)
    audience: tuple[str, ...]
    match: MatchRule
    groups: tuple[str, ...]  # entitlement: group displayNames or ids; empty = every active user
    on_first_login: OnFirstLogin
    roles: Mapping[str, tuple[str, ...]]  # group displayName or id -> downstream roles
    on_unentitled: OnUnentitled
    grace_period: float
    connector: ConnectorConfig
    idle_after: float | None = None  # seconds without a login before the sweeper reclaims; None: never
    on_idle: Literal["disable", "delete"] = "disable"
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    clock_skew: float | None = None  # None: the engine-wide [jit] clock_skew
    async_create: bool = False  # transient connector failure on first login: 202 pending instead of 503
    description: str = ""
    require_email_verified: bool = False  # the token's email_verified must be true to match
    # The authorization code flow (http/jit/signin.py); configured when redirect_after_login is set.
    client_id: str = ""  # empty: the first audience
    client_secret: str | None = field(default=None, repr=False)  # None: a public client (PKCE only)
    redirect_after_login: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    conditions: Conditions | None = None  # login conditions (entitlement/conditions.py)
    saml: SamlIdp | None = None  # [applications.saml]: the IdP whose signed Responses the login hook takes
    # The group references the login needs to look at, lower-cased, for one indexed membership query.
    group_refs: frozenset[str] = field(default=frozenset(), compare=False)

    def roles_for(self, member_refs: set[str]) -> list[str]:
        """Downstream roles for a user who is a live member of the groups named by `member_refs` (lower-cased
        ids and displayNames)."""
        out: set[str] = set()
        for ref, roles in self.roles.items():
            if ref.lower() in member_refs:
                out.update(roles)
        return sorted(out)

    def entitled(self, member_refs: set[str]) -> bool:
        return not self.groups or any(g.lower() in member_refs for g in self.groups)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description without secrets (for `scimjit apps list` and the admin API)."""
        return {
            "name": self.name,
            "issuer": self.issuer,
            "audience": list(self.audience),
            "match": {"claim": self.match.claim, "attribute": self.match.attribute},
            "requireEmailVerified": self.require_email_verified,
            "groups": list(self.groups),
            "onFirstLogin": self.on_first_login,
            "roles": {k: list(v) for k, v in self.roles.items()},
            "onUnentitled": self.on_unentitled,
            "gracePeriod": self.grace_period,
            "idleAfter": self.idle_after,
            "onIdle": self.on_idle,
            "asyncCreate": self.async_create,
            "connector": {"type": self.connector.type, **self.connector.redacted()},
            "conditions": self.conditions.summary() if self.conditions else None,
            **({"saml": self.saml.summary()} if self.saml is not None else {}),
        }


def load_applications(raw: Mapping[str, Any]) -> dict[str, Application]:
    """Every application of a parsed config document, by name. Raises ConfigError on the first problem."""
    return build_applications(validate_document({"applications": raw.get("applications", [])}).applications)


def build_applications(tables: Iterable[ApplicationConfig]) -> dict[str, Application]:
    """The validated `[[applications]]` tables (Settings.applications) as Applications, by name."""
    return {t.name: _application(t) for t in tables}


class _WebhookSettings(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    url: str = ""
    secret: str = ""
    timeout: Duration = 10.0
    headers: dict[str, str] = Field(default_factory=dict)


class _ScimSettings(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    url: str = ""
    token: str = ""
    timeout: Duration = 10.0
    attributes: Names = ()
    create_groups: bool = True
    roles_as_groups: bool = True


# The settings of the connectors scimjit ships, checked by type; a plugin connector checks its own.
_BUILTIN_SETTINGS: dict[str, type[BaseModel]] = {"webhook": _WebhookSettings, "scim": _ScimSettings}


def _application(t: ApplicationConfig) -> Application:
    where = f"application {t.name!r}"
    connector = ConnectorConfig(type=t.connector.type, settings=_resolve_env(t.connector.settings, where))
    model = _BUILTIN_SETTINGS.get(connector.type)
    if model is not None:
        try:
            model.model_validate(dict(connector.settings))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{where}: connector.{key}: {describe_error(first)}") from None
    client_secret = t.client_secret
    if t.client_secret_env is not None:
        var = t.client_secret_env
        if not os.environ.get(var):
            raise ConfigError(
                f"{where}: client_secret_env names environment variable {var!r}, which is not set"
            )
        client_secret = os.environ[var]
    return Application(
        name=t.name,
        issuer=t.issuer or "",
        audience=t.audience,
        match=MatchRule(claim=t.match.claim, attribute=t.match.attribute),
        groups=t.groups,
        on_first_login=t.on_first_login,
        roles=dict(t.roles),
        on_unentitled=t.on_unentitled,
        grace_period=t.grace_period,
        connector=connector,
        idle_after=t.idle_after,
        on_idle=t.on_idle,
        algorithms=t.algorithms,
        clock_skew=t.clock_skew,
        async_create=t.async_create,
        description=t.description,
        require_email_verified=(
            t.match.claim == "email" if t.require_email_verified is None else t.require_email_verified
        ),
        client_id=t.client_id if t.client_id is not None else (t.audience[0] if t.audience else ""),
        client_secret=client_secret,
        redirect_after_login=t.redirect_after_login,
        scopes=t.scopes,
        conditions=t.conditions,
        saml=load_idp(t.saml, where) if t.saml is not None else None,
        group_refs=frozenset(r.lower() for r in (*t.groups, *t.roles)),
    )


def _is_secret_key(key: str) -> bool:
    """Connector settings to mask when listed; `*_env` names a variable, not a secret."""
    return not key.lower().endswith("_env") and (is_secret_key(key) or key.lower().endswith("key"))


def _resolve_env(settings: dict[str, Any], where: str) -> dict[str, Any]:
    """`secret_env = "VAR"` reads `secret` from the environment, so secrets need not sit in the file."""
    out = dict(settings)
    for key in [k for k in settings if k.endswith("_env")]:
        var = settings[key]
        if not isinstance(var, str) or var not in os.environ:
            raise ConfigError(
                f"{where}: connector.{key} names environment variable {var!r}, which is not set"
            )
        out[key[: -len("_env")]] = os.environ[var]
        del out[key]
    return out
