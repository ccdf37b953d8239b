"""The application registry: `[[applications]]` tables of the config file, validated into typed objects.

Validation happens once, at load, with messages that name the application and the key, so a typo in the TOML
fails `scimjit apps list` and `scimjit serve` at start instead of failing a user's first login.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from scimjit.jit.settings import ConfigError, config_duration
from scimjit.redact import is_secret_key

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

# SCIM attribute a claim may be matched to (canonical spelling by lower-cased name).
MATCH_ATTRIBUTES = {
    "username": "userName",
    "externalid": "externalId",
    "emails.value": "emails.value",
    "id": "id",
}

OnFirstLogin = Literal["create", "link"]
OnUnentitled = Literal["disable", "delete", "keep"]

_KEYS = {
    "name",
    "issuer",
    "audience",
    "match",
    "groups",
    "on_first_login",
    "roles",
    "on_unentitled",
    "grace_period",
    "connector",
    "algorithms",
    "clock_skew",
    "async_create",
    "description",
    # the optional authorization code flow run by scimjit (GET /jit/v1/apps/{name}/login, http/oidc_flow.py)
    "client_id",
    "client_secret",
    "client_secret_env",
    "redirect_after_login",
    "scopes",
}

DEFAULT_SCOPES = ("openid", "profile", "email")


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
    issuer: str
    audience: tuple[str, ...]
    match: MatchRule
    groups: tuple[str, ...]  # entitlement: group displayNames or ids; empty = every active user
    on_first_login: OnFirstLogin
    roles: Mapping[str, tuple[str, ...]]  # group displayName or id -> downstream roles
    on_unentitled: OnUnentitled
    grace_period: float
    connector: ConnectorConfig
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    clock_skew: float | None = None  # None: the engine-wide [jit] clock_skew
    async_create: bool = False  # transient connector failure on first login: 202 pending instead of 503
    description: str = ""
    # The authorization code flow (oidc_flow.py); configured when redirect_after_login is set.
    client_id: str = ""  # empty: the first audience
    client_secret: str | None = field(default=None, repr=False)  # None: a public client (PKCE only)
    redirect_after_login: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
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
            "groups": list(self.groups),
            "onFirstLogin": self.on_first_login,
            "roles": {k: list(v) for k, v in self.roles.items()},
            "onUnentitled": self.on_unentitled,
            "gracePeriod": self.grace_period,
            "asyncCreate": self.async_create,
            "connector": {"type": self.connector.type, **self.connector.redacted()},
        }


def load_applications(raw: Mapping[str, Any]) -> dict[str, Application]:
    """Every application of the parsed config file, by name. Raises ConfigError on the first problem."""
    tables = raw.get("applications", [])
    if not isinstance(tables, list):
        raise ConfigError("`applications` must be an array of tables: write [[applications]]")
    apps: dict[str, Application] = {}
    for index, table in enumerate(tables):
        where = f"[[applications]] #{index + 1}"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table")
        if isinstance(table.get("name"), str):
            where = f"application {table['name']!r}"
        app = _application(table, where)
        if app.name in apps:
            raise ConfigError(f"{where}: the name is used twice")
        apps[app.name] = app
    return apps


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """HTTPS, or plain HTTP on a loopback host only (tests and local development)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return url
    raise ConfigError(
        f"{what} must be an https:// URL (plain http is allowed on 127.0.0.1, ::1, localhost only)"
    )


def _application(t: Mapping[str, Any], where: str) -> Application:
    unknown = set(t) - _KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KEYS))}"
        )
    name = _string(t, "name", where)
    issuer = check_url(_string(t, "issuer", where), f"{where}: issuer")

    audience_raw = t.get("audience")
    audience = (audience_raw,) if isinstance(audience_raw, str) else tuple(_strings(t, "audience", where))
    if not audience or not all(audience):
        raise ConfigError(f"{where}: `audience` lists the OIDC client id(s) whose ID tokens are accepted")

    match_raw = t.get("match")
    if not isinstance(match_raw, Mapping) or set(match_raw) != {"claim", "attribute"}:
        raise ConfigError(
            f'{where}: write match = {{ claim = "preferred_username", attribute = "userName" }}'
        )
    attribute = MATCH_ATTRIBUTES.get(str(match_raw["attribute"]).lower())
    if attribute is None:
        raise ConfigError(f"{where}: match.attribute must be one of {', '.join(MATCH_ATTRIBUTES.values())}")
    claim = match_raw["claim"]
    if not isinstance(claim, str) or not claim:
        raise ConfigError(f"{where}: match.claim must name an ID token claim, e.g. preferred_username")

    groups = tuple(_strings(t, "groups", where)) if "groups" in t else ()
    on_first_login = t.get("on_first_login", "create")
    if on_first_login not in ("create", "link"):
        raise ConfigError(f'{where}: on_first_login must be "create" or "link"')
    on_unentitled = t.get("on_unentitled", "disable")
    if on_unentitled not in ("disable", "delete", "keep"):
        raise ConfigError(f'{where}: on_unentitled must be "disable", "delete" or "keep"')

    roles: dict[str, tuple[str, ...]] = {}
    roles_raw = t.get("roles", {})
    if not isinstance(roles_raw, Mapping):
        raise ConfigError(f'{where}: write roles = {{ "group name" = "role" }}')
    for group, role in roles_raw.items():
        values = (role,) if isinstance(role, str) else tuple(role) if isinstance(role, list) else None
        if not values or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{where}: roles.{group} must be a role name or a list of role names")
        roles[str(group)] = values

    algorithms = tuple(_strings(t, "algorithms", where)) if "algorithms" in t else ASYMMETRIC_ALGORITHMS
    bad = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
    if bad or not algorithms:
        raise ConfigError(
            f"{where}: algorithms {bad or '[]'} not allowed; choose from {', '.join(ASYMMETRIC_ALGORITHMS)} "
            "(never `none`, never HMAC: ID tokens are checked with the issuer's public keys)"
        )

    connector_raw = t.get("connector")
    if not isinstance(connector_raw, Mapping) or not isinstance(connector_raw.get("type"), str):
        raise ConfigError(f'{where}: add an [applications.connector] table with a `type` (e.g. "webhook")')
    connector = ConnectorConfig(
        type=connector_raw["type"],
        settings=_resolve_env({k: v for k, v in connector_raw.items() if k != "type"}, where),
    )

    async_create = t.get("async_create", False)
    if not isinstance(async_create, bool):
        raise ConfigError(f"{where}: async_create must be true or false")
    refs = frozenset(r.lower() for r in (*groups, *roles))
    client_id, client_secret, redirect_after_login, scopes = _code_flow(t, where, audience)
    return Application(
        name=name,
        issuer=issuer,
        audience=audience,
        match=MatchRule(claim=claim, attribute=attribute),
        groups=groups,
        on_first_login=on_first_login,
        roles=roles,
        on_unentitled=on_unentitled,
        grace_period=config_duration(t, "grace_period", where, 0.0),
        connector=connector,
        algorithms=algorithms,
        clock_skew=config_duration(t, "clock_skew", where, None),
        async_create=async_create,
        description=str(t.get("description", "")),
        client_id=client_id,
        client_secret=client_secret,
        redirect_after_login=redirect_after_login,
        scopes=scopes,
        group_refs=refs,
    )


def _code_flow(
    t: Mapping[str, Any], where: str, audience: tuple[str, ...]
) -> tuple[str, str | None, str | None, tuple[str, ...]]:
    """client_id, client_secret, redirect_after_login, scopes: the optional authorization code flow keys."""
    client_id = _string(t, "client_id", where) if "client_id" in t else audience[0]
    if client_id not in audience:
        raise ConfigError(f"{where}: client_id {client_id!r} must be one of `audience` (its ID tokens' aud)")
    if "client_secret" in t and "client_secret_env" in t:
        raise ConfigError(f"{where}: set client_secret or client_secret_env, not both")
    client_secret: str | None = None
    if "client_secret" in t:
        client_secret = _string(t, "client_secret", where)
    elif "client_secret_env" in t:
        var = t["client_secret_env"]
        if not isinstance(var, str) or not os.environ.get(var):
            raise ConfigError(
                f"{where}: client_secret_env names environment variable {var!r}, which is not set"
            )
        client_secret = os.environ[var]
    redirect_after_login = None
    if "redirect_after_login" in t:
        redirect_after_login = check_url(
            _string(t, "redirect_after_login", where), f"{where}: redirect_after_login"
        )
        if urlsplit(redirect_after_login).fragment:
            raise ConfigError(f"{where}: redirect_after_login must not have a #fragment")
    scopes = tuple(_strings(t, "scopes", where)) if "scopes" in t else DEFAULT_SCOPES
    if "openid" not in scopes or not all(s and " " not in s for s in scopes):
        raise ConfigError(f'{where}: scopes must include "openid" and be single words')
    return client_id, client_secret, redirect_after_login, scopes


def _string(t: Mapping[str, Any], key: str, where: str) -> str:
    value = t.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: `{key}` is required (a non-empty string)")
    return value.strip()


def _strings(t: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = t.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of strings")
    return list(value)


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
