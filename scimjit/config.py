"""The one configuration model: environment variables (`SCIMJIT_*`) over a TOML file (`SCIMJIT_CONFIG`) over
defaults, validated key by key.

Every section the code reads has a typed model here: `[server]` (ServerConfig, the fields of Settings),
`[jit]` (JitConfig: the engine's knobs, JitSettings, plus time-bound access and `[[jit.policies]]`) and
`[[applications]]` (ApplicationConfig). The models are strict (a TOML `"10"` is not an integer, `"false"` is
not a boolean) and forbid unknown keys, so a typo stops startup with one line naming the file, the key and
what was expected (ConfigError) instead of being ignored. Environment variables are strings: they are parsed
per type here (booleans: 1/true/yes/on or 0/false/no/off, nothing else) and then validated the same way.

pydantic v2 does the checking because it reports every problem with its location inside the nested tables
(`applications.0.match.claim`), which is what the one-line message is built from.

Every setting is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

DEFAULT_DATABASE_URL = "sqlite:///./scimjit.db"
MAX_DURATION = 100 * 365.25 * 86400  # 100 years: anything longer is a typo (and 1e300 s overflows datetimes)


class ConfigError(ValueError):
    """The configuration is wrong; the message is one line that says where (file or variable, key) and how."""


# --- durations --------------------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_HINT = 'a duration such as "90s", "15m", "8h", "7d", "1w", "500ms" or a number of seconds'


def parse_duration(value: Any) -> float:
    """`"90s"`, `"15m"`, `"8h"`, `"7d"`, `"1w"`, `"500ms"` or a number of seconds, as seconds.

    Range-checked (non-negative, finite, at most 100 years) so that every caller gets a clear ValueError
    instead of an OverflowError far away; the one duration parser of the project."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected {_DURATION_HINT}, got {_show(value)}")
    seconds: float | None = None
    try:
        if isinstance(value, str):
            text = value.strip().lower()
            for suffix in sorted(_UNITS, key=len, reverse=True):
                number = text[: -len(suffix)].strip()
                if text.endswith(suffix) and number.replace(".", "", 1).isdigit():
                    seconds = float(number) * _UNITS[suffix]
                    break
            else:
                seconds = float(text)
        else:
            seconds = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"expected {_DURATION_HINT}, got {_show(value)}") from None
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 100 years, got {_show(value)}")
    if seconds < 0:
        raise ValueError(f"expected a duration that is not negative, got {_show(value)}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _names(value: Any) -> Any:
    """A TOML list as a tuple (strict tuple fields take tuples only); a lone string as a one-item tuple."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def _paths(value: Any) -> Any:
    if isinstance(value, list | tuple) and all(isinstance(v, str | Path) for v in value):
        return [Path(v) for v in value]
    return value


def _list(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]  # a list, or one string for a one-item list
Strings = Annotated[tuple[str, ...], BeforeValidator(_list)]  # a list only
Paths = Annotated[list[Path], BeforeValidator(_paths)]


def config_duration(t: Mapping[str, Any], key: str, where: str, default: Any) -> Any:
    """A duration from a mapping (`default` when absent), as ConfigError naming `where` and `key`."""
    if key not in t:
        return default
    try:
        return parse_duration(t[key])
    except ValueError as exc:
        raise ConfigError(f"{where} {key}: {exc}") from None


# --- URLs -------------------------------------------------------------------------------------------------


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


def _https(url: str) -> str:
    try:
        return check_url(url, "the URL")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- [server] ---------------------------------------------------------------------------------------------


class ServerConfig(BaseModel):
    """The `[server]` table; each key also reads `SCIMJIT_<KEY>` from the environment."""

    model_config = ConfigDict(strict=True, extra="forbid")

    database_url: str = DEFAULT_DATABASE_URL
    base_url: str = ""  # public URL of the server, for meta.location; empty: derived from each request
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    max_filter_length: int = Field(default=4096, ge=1)
    max_filter_depth: int = Field(default=32, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    default_page_size: int = Field(default=100, ge=1)
    max_bulk_operations: int = Field(default=1000, ge=0)
    max_bulk_payload_bytes: int = Field(default=1024 * 1024, ge=0)
    anonymous_discovery: bool = False
    token_cache_seconds: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    schemas_dirs: Paths = Field(default_factory=list)
    run_worker: bool = True
    run_sweeper: bool = True
    sweep_interval: Duration = 2.0  # documented under [jit]; [jit] sweep_interval wins over this
    audit_retention: Duration = 365 * 86400.0  # 0 keeps audit records forever
    # Per token and per process; 0 disables. High on purpose: IdPs do not throttle themselves (see docs).
    rate_limit_per_second: float = Field(default=1000.0, ge=0, allow_inf_nan=False)
    rate_limit_burst: int = Field(default=2000, ge=0)
    # Per client address, before authentication (floods of bogus tokens); 0 disables.
    client_rate_limit_per_second: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    client_rate_limit_burst: int = Field(default=200, ge=0)
    strict_attributes: bool = False  # unknown attributes / schema URNs in writes: 400 instead of ignored
    metrics_token_required: bool = False  # /metrics asks for a token with the `metrics` (or admin) scope
    request_log: bool = True  # one JSON log line per HTTP request
    log_level: str = "info"
    # HMAC key of the OIDC sign-in cookie (/jit/v1/apps/{name}/login); empty: a random key per process
    session_secret: str = Field(default="", repr=False)


# --- [jit] and [[jit.policies]] ---------------------------------------------------------------------------


class JitSettings(_Model):
    """The JIT engine's login and outbox knobs (the part of `[jit]` the engine itself reads)."""

    clock_skew: Duration = 60.0  # seconds of leeway for exp / nbf / iat
    jwks_min_refresh: Duration = 30.0  # floor between two JWKS fetches of one issuer (unknown-kid storms)
    jwks_max_age: Duration = 3600.0  # refetch keys this old even if every kid is known (rotation)
    http_timeout: Duration = 10.0  # connect+read timeout for discovery, JWKS and connector calls
    outbox_max_attempts: int = Field(default=12, ge=1)  # then the event is `dead`
    outbox_backoff_base: Duration = 2.0  # first retry after ~this, doubling each attempt
    outbox_backoff_max: Duration = 3600.0
    outbox_lease: Duration = 60.0  # a claimed event is another worker's again after this (crashed worker)
    worker_poll_interval: Duration = 1.0
    worker_batch_size: int = Field(default=32, ge=1)
    last_login_resolution: Duration = 60.0  # write last_login_at at most this often per account
    login_wait: Duration = 5.0  # a concurrent first login waits this long for the other one's account

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> JitSettings:
        """The `[jit]` table of a parsed config document (validated whole: unknown keys are errors)."""
        return validate_document({"jit": raw.get("jit", {})}).jit


class AutoApprove(_Model):
    max_duration: Duration  # requests up to this long are approved at once...
    eligible: Names = ()  # ...when the requester is in one of these groups (empty: any eligible)

    @field_validator("eligible")
    @classmethod
    def _refs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(value):
            raise ValueError("expected group names or ids, not empty strings")
        return value


class Policy(_Model):
    """One `[[jit.policies]]` table: a requestable group."""

    group: str
    eligible: Names = ()
    max_duration: Duration
    approvers: Names = ()
    approvals_required: int = Field(default=1, ge=1)
    auto_approve: AutoApprove | None = None
    pending_ttl: Duration = 86_400.0
    description: str = ""

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected the displayName or id of the requestable group")
        return value.strip()

    @field_validator("eligible", "approvers")
    @classmethod
    def _refs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(value):
            raise ValueError("expected group names or ids, not empty strings")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.max_duration < 1:
            raise ValueError('max_duration must be at least 1s (e.g. max_duration = "8h")')
        if self.auto_approve and self.auto_approve.max_duration > self.max_duration:
            raise ValueError("auto_approve.max_duration must not exceed max_duration")
        if not self.approvers and self.auto_approve is None:
            raise ValueError("name the approvers group(s), or auto_approve, or both")
        if self.pending_ttl < 1:
            raise ValueError("pending_ttl must be at least 1s")
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "eligible": list(self.eligible),
            "maxDuration": self.max_duration,
            "approvers": list(self.approvers),
            "approvalsRequired": self.approvals_required,
            "autoApprove": (
                {"maxDuration": self.auto_approve.max_duration, "eligible": list(self.auto_approve.eligible)}
                if self.auto_approve
                else None
            ),
            "pendingTTL": self.pending_ttl,
            "description": self.description,
        }


class JitConfig(JitSettings):
    """The whole `[jit]` table: the engine's knobs, the sweeper's, time-bound access and its policies."""

    sweep_interval: Duration | None = None  # None: the server setting (SCIMJIT_SWEEP_INTERVAL, default 2s)
    sweep_batch_size: int = Field(default=1000, ge=1, le=100_000)
    expiry_notice: Duration = 900.0  # access.expiring this long before a grant ends; 0: never
    notify_applications: Names = ()  # (a lone string was always accepted here)
    membership_ttl: dict[str, Duration] = Field(default_factory=dict)  # group ref -> seconds
    reconcile_interval: Duration = 3600.0  # scheduled reconcile pass with each connector; 0: none
    policies: tuple[Policy, ...] = ()

    @field_validator("policies", mode="before")
    @classmethod
    def _policies(cls, value: Any) -> Any:
        return _list(value)

    @field_validator("membership_ttl")
    @classmethod
    def _ttls(cls, value: dict[str, float]) -> dict[str, float]:
        for ref, seconds in value.items():
            if seconds < 1:
                raise ValueError(f"membership_ttl.{ref} must be at least 1s")
        return value

    @field_validator("policies")
    @classmethod
    def _one_policy_per_group(cls, value: tuple[Policy, ...]) -> tuple[Policy, ...]:
        seen: set[str] = set()
        for p in value:
            if p.group.lower() in seen:
                raise ValueError(f"group {p.group!r} has two policies")
            seen.add(p.group.lower())
        return value


# --- [[applications]] -------------------------------------------------------------------------------------

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

DEFAULT_SCOPES = ("openid", "profile", "email")


class MatchConfig(_Model):
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
            raise ValueError(f"expected one of {', '.join(MATCH_ATTRIBUTES.values())}, got {_show(value)}")
        return canonical


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


class ApplicationConfig(_Model):
    """One `[[applications]]` table, checked; apps.py turns it into an Application (secrets resolved)."""

    name: str
    issuer: str
    audience: Names
    match: MatchConfig
    groups: Strings = ()  # entitlement: group displayNames or ids; empty = every active user
    on_first_login: Literal["create", "link"] = "create"
    roles: dict[str, Names] = Field(default_factory=dict)  # group -> downstream role(s)
    on_unentitled: Literal["disable", "delete", "keep"] = "disable"
    grace_period: Duration = 0.0
    connector: ConnectorTable
    algorithms: Strings = ASYMMETRIC_ALGORITHMS
    clock_skew: Duration | None = None  # None: the engine-wide [jit] clock_skew
    async_create: bool = False
    description: str = ""
    # the optional authorization code flow run by scimjit (GET /jit/v1/apps/{name}/login, http/oidc_flow.py)
    client_id: str | None = None  # None: the first audience
    client_secret: str | None = Field(default=None, repr=False)
    client_secret_env: str | None = None
    redirect_after_login: str | None = None
    scopes: Strings = DEFAULT_SCOPES

    @field_validator("name", "client_id", "client_secret")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a non-empty string")
        return value.strip() if value is not None else None

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return _https(value.strip())

    @field_validator("redirect_after_login")
    @classmethod
    def _redirect(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _https(value.strip())
        if urlsplit(value).fragment:
            raise ValueError("must not have a #fragment")
        return value

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(value):
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
        bad = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not value:
            raise ValueError(
                f"{bad or '[]'} not allowed; choose from {', '.join(ASYMMETRIC_ALGORITHMS)} "
                "(never `none`, never HMAC: ID tokens are checked with the issuer's public keys)"
            )
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value or not all(s and " " not in s for s in value):
            raise ValueError('scopes must include "openid" and be single words')
        return value

    @model_validator(mode="after")
    def _code_flow(self) -> ApplicationConfig:
        if self.client_id is not None and self.client_id not in self.audience:
            raise ValueError(f"client_id {self.client_id!r} must be one of `audience` (its ID tokens' aud)")
        if self.client_secret is not None and self.client_secret_env is not None:
            raise ValueError("set client_secret or client_secret_env, not both")
        return self


# --- the file ---------------------------------------------------------------------------------------------


class ConfigFile(_Model):
    """The whole TOML document: nothing else is read, so any other top-level key is a mistake."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    jit: JitConfig = Field(default_factory=JitConfig)
    applications: tuple[ApplicationConfig, ...] = ()

    @field_validator("applications", mode="before")
    @classmethod
    def _applications(cls, value: Any) -> Any:
        return _list(value)

    @field_validator("applications")
    @classmethod
    def _unique(cls, value: tuple[ApplicationConfig, ...]) -> tuple[ApplicationConfig, ...]:
        seen: set[str] = set()
        for app in value:
            if app.name in seen:
                raise ValueError(f"application {app.name!r}: the name is used twice")
            seen.add(app.name)
        return value


def validate_document(document: Mapping[str, Any], source: str = "") -> ConfigFile:
    """The parsed TOML document, checked; ConfigError with one line (`source` first) on the first problem."""
    try:
        return ConfigFile.model_validate(dict(document))
    except ValidationError as exc:
        raise ConfigError(_message(exc, document, source)) from None


class Settings(ServerConfig):
    """The effective settings of a process: `[server]` keys (file, then environment, then keyword
    overrides) plus the validated `[jit]` and `[[applications]]` sections. Attributes may be reassigned
    (tests do), as with the dataclass this replaced."""

    jit: JitConfig = Field(default_factory=JitConfig)
    applications: tuple[ApplicationConfig, ...] = ()

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        document: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read `SCIMJIT_CONFIG` (or take an already parsed `document`) and the `SCIMJIT_*` variables of
        `environ` (default: os.environ). Raises ConfigError, one line, on the first wrong key or value."""
        env = os.environ if environ is None else environ
        source = ""
        if document is None:
            document = {}
            source = env.get("SCIMJIT_CONFIG", "")
            if source:
                document = _read_toml(source)
        file = validate_document(document, source)
        values: dict[str, Any] = file.server.model_dump(exclude_unset=True)
        if file.jit.sweep_interval is not None:
            values["sweep_interval"] = file.jit.sweep_interval
        origin: dict[str, str] = {}
        for name, info in ServerConfig.model_fields.items():
            var = f"SCIMJIT_{name.upper()}"
            if var in env:
                try:
                    values[name] = _from_env(env[var], info.annotation, info.metadata)
                except ValueError as exc:
                    raise ConfigError(f"{var}: {exc}") from None
                origin[name] = var
        values.update(overrides)
        try:
            return cls.model_validate({**values, "jit": file.jit, "applications": file.applications})
        except ValidationError as exc:
            first = exc.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else ""
            where = origin.get(key) or (f"{source}: [server] {key}" if source else f"[server] {key}")
            raise ConfigError(f"{where}: {describe_error(first)}") from None


def _read_toml(path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file named by SCIMJIT_CONFIG: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


# --- environment variables --------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_env(text: str, annotation: Any, metadata: list[Any]) -> Any:
    """One `SCIMJIT_*` value (a string) as its setting's type; ValueError says what was expected."""
    if any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata):
        return parse_duration(text)
    if annotation is bool:
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"expected one of 1, true, yes, on, 0, false, no, off, got {_show(text)}")
    if annotation is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {_show(text)}") from None
    if annotation is float:
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {_show(text)}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {_show(text)}")
        return number
    if annotation is str:
        return text
    return [Path(p) for p in text.split(os.pathsep) if p]  # schemas_dirs


# --- error messages ---------------------------------------------------------------------------------------

_EXPECTED = {
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "missing": "required",
}


def _show(value: Any) -> str:
    """A value as it would be written in TOML (so the message quotes it the way the user typed it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def describe_error(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _EXPECTED:
        text = _EXPECTED[kind]
        return text if kind == "missing" else f"{text}, got {_show(error['input'])}"
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected", "")
        return f"expected {expected.replace(chr(39), chr(34))}, got {_show(error['input'])}"
    if kind == "value_error":
        return str((error.get("ctx") or {}).get("error", error["msg"]))
    if kind.startswith(("greater_than", "less_than")):
        return f"{error['msg'].replace('Input should be', 'expected')}, got {_show(error['input'])}"
    return str(error["msg"])


def _message(exc: ValidationError, document: Mapping[str, Any], source: str) -> str:
    """`<source>: <section> <key>: <problem>` for the first error, plus how many more there are."""
    errors = exc.errors()
    first = errors[0]
    loc = list(first["loc"])
    # The `[[applications]]` / `[[jit.policies]]` items are named by their name / group when they have one.
    if loc[:1] == ["applications"] and len(loc) > 1 and isinstance(loc[1], int):
        where = _item(document.get("applications"), loc[1], "name", "[[applications]]")
        rest = loc[2:]
    elif loc[:2] == ["jit", "policies"] and len(loc) > 2 and isinstance(loc[2], int):
        jit = document.get("jit")
        where = _item(
            jit.get("policies") if isinstance(jit, Mapping) else None, loc[2], "group", "[[jit.policies]]"
        )
        rest = loc[3:]
    elif loc and loc[0] in ("server", "jit"):
        where, rest = f"[{loc[0]}]", loc[1:]
    else:
        where, rest = "", loc
    key = ".".join(str(p) for p in rest)
    problem = describe_error(first)
    if first["type"] == "extra_forbidden":
        problem += _known(loc)
    line = " ".join(part for part in (where, key) if part)
    line = f"{line}: {problem}" if line else problem
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return f"{source}: {line}" if source else line


def _item(items: Any, index: int, key: str, kind: str) -> str:
    if isinstance(items, list) and index < len(items) and isinstance(items[index], Mapping):
        label = items[index].get(key)
        if isinstance(label, str) and label:
            return f"{kind} {label!r}"
    return f"{kind} #{index + 1}"


def _known(loc: list[Any]) -> str:
    """`; known keys: …` for an unknown key, from the model at that location."""
    model: Any = ConfigFile
    for part in loc[:-1]:
        if isinstance(part, int) or not isinstance(model, type) or not issubclass(model, BaseModel):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return ""
        model = _inner_model(info.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return "; known keys: " + ", ".join(sorted(model.model_fields))
    return ""


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
